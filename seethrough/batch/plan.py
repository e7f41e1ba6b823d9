"""What a batch produces and where: shots, tasks, output paths, and which are already done."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from seethrough_core.generate_and_save import base_path_for, safe_name, sidecar_path_for
from seethrough_core.layout import Layout
from seethrough_core.record import GenerationRecord, has_matching_sidecar, matching_sidecar_record

DRAFT_FOLDER = "draft"  # `--draft` writes under OUT/draft/: a final run into OUT keeps nothing of a draft's


def output_names(inputs: list[Path]) -> dict[Path, str]:
    """The output folder name of each input: its stem, with its parent folder when stems collide."""
    stems = Counter(safe_name(p.stem) for p in inputs)
    names: dict[Path, str] = {}
    for path in inputs:
        stem = safe_name(path.stem)
        names[path] = stem if stems[stem] == 1 else f"{safe_name(path.parent.name)}__{stem}_{path.suffix[1:]}"
    return names


def condition_dir_beside(image_path: Path, frame: int) -> Path:
    """The OSCR render and masks an image of ``frame`` was generated from: beside it, conditions/FFFF/."""
    return image_path.parent / "conditions" / f"{frame:04d}"


@dataclass(frozen=True)
class Shot:
    """One camera at one frame of one input: one OSCR render, any number of seeds."""

    input_path: Path
    output_name: str  # folder name of the input under the output folder
    camera: str
    frame: int
    layout: Layout

    def folder(self, out_dir: Path) -> Path:
        return out_dir / self.output_name / safe_name(self.camera)

    def condition_dir(self, out_dir: Path) -> Path:
        return condition_dir_beside(self.folder(out_dir) / "image.png", self.frame)


@dataclass(frozen=True)
class Task:
    """One image to generate."""

    shot: Shot
    seed: int
    image_path: Path
    sidecar_path: Path

    @classmethod
    def of(cls, shot: Shot, seed: int, out_dir: Path) -> Task:
        stem = f"{shot.frame:04d}_{seed}"
        folder = shot.folder(out_dir)
        image_path = folder / f"{stem}.png"
        return cls(shot, seed, image_path, sidecar_path_for(image_path))

    def is_complete(self) -> bool:
        """Done when the PNG and its sidecar hold the same record (each is written atomically, the
        sidecar last): a PNG whose sidecar belongs to an earlier image is not done."""
        return self.complete_record() is not None

    def complete_record(self) -> GenerationRecord | None:
        """The record of the image when it is complete (is_complete), else None."""
        return matching_sidecar_record(self.image_path, self.sidecar_path)

    @property
    def base_path(self) -> Path:
        """Where the base picture of a frame made in two stages is kept (docs/upscale.md)."""
        return base_path_for(self.image_path)

    def base_is_complete(self) -> bool:
        return has_matching_sidecar(self.base_path, sidecar_path_for(self.base_path))

    @property
    def label(self) -> str:
        return f"{self.shot.output_name}/{safe_name(self.shot.camera)}/{self.image_path.name}"
