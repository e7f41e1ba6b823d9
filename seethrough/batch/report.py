"""The end of a batch: a contact sheet per input and a summary table."""

from __future__ import annotations

import io
from collections import defaultdict
from pathlib import Path

from PIL import Image, ImageDraw

from seethrough_core.png import write_bytes_atomic

from .runner import BatchSummary

THUMB = 256
COLUMNS = 4


def contact_sheets(
    summary: BatchSummary, names: dict[Path, str], out_dir: Path
) -> tuple[list[Path], list[str]]:
    """One sheet per input with every finished image (new or from earlier runs), labelled.

    Returns the sheets written and, for each one that could not be (a full disk), why: a sheet is
    never worth losing the summary over."""
    images: dict[Path, list] = defaultdict(list)
    for outcome in summary.outcomes:
        if outcome.status in ("done", "skipped") and outcome.image_path and outcome.image_path.is_file():
            images[outcome.input_path].append(outcome)
    written: list[Path] = []
    problems: list[str] = []
    for input_path, outcomes in images.items():
        path = out_dir / names[input_path] / "contact_sheet.png"
        try:
            buffer = io.BytesIO()
            _sheet(outcomes).save(buffer, format="PNG")
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, buffer.getvalue())
        except OSError as exc:  # Pillow's errors for unreadable images are OSErrors too
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        written.append(path)
    return written, problems


def _sheet(outcomes: list) -> Image.Image:
    outcomes = sorted(outcomes, key=lambda o: o.label)
    rows = (len(outcomes) + COLUMNS - 1) // COLUMNS
    cols = min(COLUMNS, len(outcomes))
    sheet = Image.new("RGB", (cols * THUMB, rows * (THUMB + 20)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for i, outcome in enumerate(outcomes):
        with Image.open(outcome.image_path) as image:
            thumb = image.convert("RGB")
            thumb.thumbnail((THUMB, THUMB))
        x, y = (i % COLUMNS) * THUMB, (i // COLUMNS) * (THUMB + 20)
        sheet.paste(thumb, (x + (THUMB - thumb.width) // 2, y))
        caption = "/".join(outcome.label.split("/")[1:])  # camera/frame_seed.png
        draw.text((x + 4, y + THUMB + 4), caption, fill=(220, 220, 220))
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
    if summary.interrupted:
        lines.append("interrupted: rerun the same command to finish; completed images are kept")
    return "\n".join(lines)
