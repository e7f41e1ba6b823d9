"""`seethrough dataset make`: draw and filter scenes here, render the kept ones in background workers,
append each finished sample to metadata.jsonl (this process is its only writer).

Scene number i has the seed ``seed + i`` and the sample id ``%06d`` of i, so a rerun skips the ids
already in metadata.jsonl, draws the others exactly as before and never renders a sample twice; the
folder an interrupted sample left behind is emptied and redone.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from seethrough_core.dataset_format import (
    METADATA_NAME,
    SAMPLES_DIR,
    DatasetError,
    DatasetSample,
    append_sample,
    read_samples,
    sample_dir,
)
from seethrough_core.dataset_scenes import AssetSpec, Scene, SceneFilterError, make_scene, scene_seed
from seethrough_core.errors import SeeThroughError
from seethrough_core.png import write_bytes_atomic
from seethrough_core.prompt import compose_prompt

from ..progress import ProgressLine
from .make_settings import MakeSettings
from .worker_pool import JobResult, WorkerError, WorkerPool

SETTINGS_NAME = "dataset.json"  # what made the dataset: a rerun must match it
LOGS_DIR = "logs"


class DatasetMakeError(SeeThroughError):
    """The dataset cannot be made as asked; the message says why and what to do."""


@dataclass
class MakeSummary:
    made: int = 0
    skipped: int = 0  # already in metadata.jsonl
    failed: dict[str, str] = field(default_factory=dict)  # sample id -> error
    rejections: Counter = field(default_factory=Counter)
    timings: Counter = field(default_factory=Counter)  # seconds per part, over the samples made
    interrupted: bool = False


def make_dataset(settings: MakeSettings, stream=sys.stderr) -> MakeSummary:
    """Make the dataset folder ``settings.out``. Raises DatasetMakeError."""
    out = settings.out
    out.mkdir(parents=True, exist_ok=True)
    for path in settings.missing:
        print(f"skipped {path}: not found", file=stream)
    _check_same_dataset(out, settings, None)  # before anything starts, even when nothing is left to do
    done = _finished_ids(out)
    todo = [i for i in range(settings.scenes) if sample_id(i) not in done]
    summary = MakeSummary(skipped=settings.scenes - len(todo))
    if not todo:
        print(f"all {settings.scenes} samples are already in {out / METADATA_NAME}", file=stream)
        return summary
    pool = WorkerPool(min(settings.workers, len(todo)), out / LOGS_DIR)
    try:
        assets = _load_assets(pool, settings, stream)
        _check_same_dataset(out, settings, assets)
        pool.start()
        _run(pool, settings, assets, todo, summary, stream)
        pool.close()
    except KeyboardInterrupt:
        summary.interrupted = True
        pool.kill()
    except BaseException:
        pool.kill()
        raise
    return summary


def sample_id(index: int) -> str:
    return f"{index:06d}"


def _finished_ids(out: Path) -> set[str]:
    if not (out / METADATA_NAME).is_file():
        return set()
    try:
        return {sample.id for sample in read_samples(out)}
    except DatasetError as exc:
        raise DatasetMakeError(f"cannot continue the dataset in {out}: {exc}") from None


def _load_assets(pool: WorkerPool, settings: MakeSettings, stream) -> list[AssetSpec]:
    """Every worker loads the library; the catalogue (the same in each) gives the scenes' assets."""
    request = {
        "op": "load",
        "paths": [str(p) for p in settings.asset_paths],
        "primitives": settings.primitives,
    }
    try:
        replies = pool.broadcast(request)
    except WorkerError as exc:
        raise DatasetMakeError(f"a Blender worker failed to start: {exc}") from None
    first = replies[0]
    for problem in first["problems"]:
        print(f"skipped {problem['source']}: {problem['reason']}", file=stream)
    if any([a["id"] for a in reply["assets"]] != [a["id"] for a in first["assets"]] for reply in replies):
        raise DatasetMakeError(
            "the workers loaded different assets; see the logs in " + str(pool.workers[0].log_path.parent)
        )
    if not first["assets"]:
        raise DatasetMakeError(
            "no usable asset: every given file was skipped (reasons above); give .blend/.glb/.gltf/.obj/"
            ".fbx/.usd files with mesh objects, or --primitives"
        )
    print(
        f"{len(first['assets'])} asset(s): " + ", ".join(a["description"] for a in first["assets"]),
        file=stream,
    )
    return [AssetSpec(a["id"], a["description"], tuple(a["size"])) for a in first["assets"]]


def _check_same_dataset(out: Path, settings: MakeSettings, assets: list[AssetSpec] | None) -> None:
    """A folder holds one dataset: a rerun with other settings or assets would mix two. Without
    ``assets`` only the settings are compared; with them, the record is written on the first run."""
    made_with: dict = settings.fingerprint()
    if assets is not None:
        made_with["assets"] = [[a.id, a.description, list(a.size)] for a in assets]
    made_with = json.loads(json.dumps(made_with))  # tuples as lists, as read back
    path = out / SETTINGS_NAME
    if path.is_file():
        earlier = json.loads(path.read_text(encoding="utf-8"))
        changed = [key for key in made_with if earlier.get(key) != made_with[key]]
        if changed:
            raise DatasetMakeError(
                f"{out} holds a dataset made with other {', '.join(changed)} ({path}); continue it with the "
                "same options and assets, or make the new dataset in another folder"
            )
        return
    if assets is not None:
        write_bytes_atomic(path, (json.dumps(made_with, indent=1) + "\n").encode())


def _run(
    pool: WorkerPool,
    settings: MakeSettings,
    assets: list[AssetSpec],
    todo: list[int],
    summary: MakeSummary,
    stream,
) -> None:
    progress = ProgressLine(len(todo), stream)
    pending: dict[str, Scene] = {}
    upcoming = iter(todo)
    exhausted = False
    try:
        while True:
            # Keep every worker busy with one job in hand and one queued.
            while not exhausted and len(pending) < 2 * pool.alive():
                index = next(upcoming, None)
                if index is None:
                    exhausted = True
                    break
                seed = scene_seed(settings.seed, index)
                try:
                    scene = make_scene(assets, seed, settings.scene)
                except SceneFilterError as exc:
                    raise DatasetMakeError(f"scene {sample_id(index)}: {exc}") from None
                summary.rejections.update(scene.rejections)
                pending[sample_id(index)] = scene
                pool.submit(_job(settings, sample_id(index), scene))
                progress.status("main", f"drew {sample_id(index)} ({scene.tries} tries)")
            if not pending:
                return
            if not pool.alive():
                raise DatasetMakeError(f"every worker stopped; see the logs in {settings.out / LOGS_DIR}")
            result = pool.results.get()
            scene = pending.pop(result.job["id"])
            _finish(settings, result, scene, summary, progress)
    finally:
        progress.close()


def _job(settings: MakeSettings, sid: str, scene: Scene) -> dict:
    return {
        "op": "render",
        "id": sid,
        "dir": str(sample_dir(settings.out, sid)),
        "layout": scene.layout.to_dict(),
        "assets": scene.asset_ids,
        "look": scene.record()["look"],
        "samples": settings.samples,
        "engine": settings.engine,
    }


def _finish(settings: MakeSettings, result: JobResult, scene: Scene, summary: MakeSummary, progress) -> None:
    sid, reply = result.job["id"], result.reply
    if reply.get("op") != "rendered":
        summary.failed[sid] = reply.get("error", "unknown error")
        progress.advance(f"{sid} FAILED: {summary.failed[sid]}")
        return
    folder = f"{SAMPLES_DIR}/{sid}"
    files = reply["files"]
    layout = scene.layout
    prompt = compose_prompt(layout.scene_prompt, layout.descriptions)
    record = scene.record()
    record["timings"] = reply["timings"]
    sample = DatasetSample(
        id=sid,
        target=f"{folder}/{files['target']}",
        oscr=f"{folder}/{files['oscr']}",
        amodal_masks=[f"{folder}/{name}" for name in files["amodal_masks"]],
        visible_masks=[f"{folder}/{name}" for name in files["visible_masks"]],
        masks_json=f"{folder}/{files['masks_json']}",
        layout=layout.to_dict(),
        prompt=prompt.text,
        descriptions=list(prompt.descriptions),
        spans=[list(span) for span in prompt.spans],
        visibility=list(reply["visibility"]),
        width=layout.width,
        height=layout.height,
        seed=scene.seed,
        scene=record,
    )
    append_sample(settings.out, sample)
    summary.made += 1
    summary.timings.update(reply["timings"])
    lowest = min(sample.visibility)
    progress.advance(f"{sid}: {len(layout.boxes)} object(s), lowest visibility {lowest:.2f}, {prompt.text}")
