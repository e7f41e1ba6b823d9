"""The end of a batch: a contact sheet per input and a summary table."""

from __future__ import annotations

import io
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from seethrough_core.generate_and_save import sidecar_path_for
from seethrough_core.png import write_bytes_atomic
from seethrough_core.rendered_layout import OSCR_NAME

from .plan import condition_dir_beside
from .runner import BatchSummary, Outcome

THUMB = 256  # the longer side of each picture on a sheet
PAIRS_PER_ROW = 2  # each cell is the OSCR image and the result beside it
GAP = 4
CAPTION_H = 30
NOISE_LABEL = "noise (tiny model)"
LISTED = 10  # the summary names at most this many images kept though made with other options
BACKGROUND, TEXT, WARNING = (24, 24, 24), (220, 220, 220), (255, 170, 60)


@dataclass(frozen=True)
class SheetEntry:
    """One result on a contact sheet: its picture, the OSCR image it was made from, and its caption."""

    image_path: Path
    oscr_path: Path | None  # None: the condition folder is gone
    caption: str  # camera, frame and seed
    is_noise: bool  # made by the tiny random-weight model

    @classmethod
    def of(cls, outcome: Outcome) -> SheetEntry:
        image_path = outcome.image_path
        try:
            record = json.loads(sidecar_path_for(image_path).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            record = {}
        source = record.get("source", {})
        camera, frame = source.get("camera", ""), source.get("frame")
        oscr = condition_dir_beside(image_path, frame) / OSCR_NAME if isinstance(frame, int) else None
        parts = [str(camera)] if camera else []
        parts += [f"frame {frame}"] if frame is not None else []
        parts += [f"seed {record['seed']}"] if "seed" in record else [image_path.name]
        return cls(
            image_path,
            oscr if oscr is not None and oscr.is_file() else None,
            "  ".join(parts),
            bool(record.get("is_noise")),
        )


def contact_sheets(
    summary: BatchSummary, names: dict[Path, str], out_dir: Path
) -> tuple[list[Path], list[str]]:
    """One sheet per input with every finished image (new or from earlier runs): each result beside
    the OSCR image it was made from, captioned with camera, frame and seed, and marked when it is the
    tiny model's noise. Pictures keep their aspect ratio.

    Returns the sheets written and, for each one that could not be (a full disk), why: a sheet is
    never worth losing the summary over."""
    entries: dict[Path, list[SheetEntry]] = defaultdict(list)
    for outcome in sorted(summary.outcomes, key=lambda o: o.label):
        if outcome.status in ("done", "skipped") and outcome.image_path and outcome.image_path.is_file():
            entries[outcome.input_path].append(SheetEntry.of(outcome))
    written: list[Path] = []
    problems: list[str] = []
    for input_path, items in entries.items():
        path = out_dir / names[input_path] / "contact_sheet.png"
        try:
            buffer = io.BytesIO()
            draw_sheet(items).save(buffer, format="PNG")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, buffer.getvalue())
        except OSError as exc:  # Pillow's errors for unreadable images are OSErrors too
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        written.append(path)
    return written, problems


def tile_size(entries: list[SheetEntry]) -> tuple[int, int]:
    """The size every picture is fitted into: the largest image's shape, its longer side THUMB."""
    sizes = []
    for entry in entries:
        with Image.open(entry.image_path) as image:
            sizes.append(image.size)
    width, height = max(w for w, _ in sizes), max(h for _, h in sizes)
    scale = THUMB / max(width, height)
    return max(1, round(width * scale)), max(1, round(height * scale))


def draw_sheet(entries: list[SheetEntry]) -> Image.Image:
    tile_w, tile_h = tile_size(entries)
    cell_w, cell_h = 2 * tile_w + 3 * GAP, tile_h + CAPTION_H + GAP
    columns = min(PAIRS_PER_ROW, len(entries))
    rows = (len(entries) + PAIRS_PER_ROW - 1) // PAIRS_PER_ROW
    sheet = Image.new("RGB", (columns * cell_w, rows * cell_h), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    for i, entry in enumerate(entries):
        x, y = (i % PAIRS_PER_ROW) * cell_w, (i // PAIRS_PER_ROW) * cell_h
        for offset, picture in ((GAP, entry.oscr_path), (2 * GAP + tile_w, entry.image_path)):
            if picture is None:
                draw.text((x + offset + 4, y + tile_h // 2), "(no OSCR image)", fill=TEXT)
                continue
            with Image.open(picture) as image:
                thumb = image.convert("RGB")
                thumb.thumbnail((tile_w, tile_h))
            sheet.paste(thumb, (x + offset + (tile_w - thumb.width) // 2, y + (tile_h - thumb.height) // 2))
        draw.text((x + GAP, y + tile_h + 3), f"OSCR | {entry.caption}", fill=TEXT)
        if entry.is_noise:
            draw.text((x + GAP, y + tile_h + 16), NOISE_LABEL, fill=WARNING)
    return sheet


def summary_table(summary: BatchSummary, inputs: list[Path]) -> str:
    per_input: dict[Path, dict[str, int]] = {p: {"done": 0, "skipped": 0, "failed": 0} for p in inputs}
    seconds: dict[Path, float] = defaultdict(float)
    for outcome in summary.outcomes:
        per_input.setdefault(outcome.input_path, {"done": 0, "skipped": 0, "failed": 0})[outcome.status] += 1
        seconds[outcome.input_path] += outcome.generate_s
    width = max([len(str(p)) for p in per_input] + [5])
    lines = [f"{'input':<{width}}  {'done':>5} {'skipped':>7} {'failed':>6} {'generate s':>10}"]
    for path, counts in per_input.items():
        lines.append(
            f"{str(path):<{width}}  {counts['done']:>5} {counts['skipped']:>7} {counts['failed']:>6} "
            f"{seconds[path]:>10.1f}"
        )
    lines.append(
        f"{'total':<{width}}  {summary.count('done'):>5} {summary.count('skipped'):>7} "
        f"{summary.count('failed'):>6} {summary.generate_s:>10.1f}"
    )
    lines.append(f"wall time {summary.wall_s:.1f} s (rendering {summary.render_s:.1f} s on the main thread)")
    failures = [o for o in summary.outcomes if o.status == "failed"]
    if failures:
        lines.append("failed:")
        lines.extend(f"  {o.label}: {o.reason}" for o in failures)
    otherwise = [o for o in summary.outcomes if o.status == "skipped" and o.reason]
    if otherwise:  # a rerun with other options keeps what it finds complete: say so, not silently
        again = "--overwrite makes them again"
        lines.append(f"kept from before, made with other options ({len(otherwise)}; {again}):")
        lines.extend(f"  {o.label}: {o.reason}" for o in otherwise[:LISTED])
        if len(otherwise) > LISTED:
            lines.append(f"  ... and {len(otherwise) - LISTED} more")
    if summary.interrupted:
        lines.append("interrupted: rerun the same command to finish; completed images are kept")
    return "\n".join(lines)
