"""`seethrough dataset stats`: the dataset's statistics as PNG bar charts (Pillow) and a text table.

DIR/stats/<name>.png    one chart per histogram (dataset_stats.Histogram.name)
DIR/stats/stats.png     all charts on one sheet
DIR/stats/stats.txt     the table (also printed)
DIR/stats/stats.json    the numbers behind them
"""

from __future__ import annotations

import io
import json
from dataclasses import asdict
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from seethrough_core.dataset_stats import DatasetStats, Histogram
from seethrough_core.png import write_bytes_atomic

STATS_DIR = "stats"
CHART_SIZE = (480, 300)
SHEET_COLUMNS = 3
BACKGROUND = (24, 24, 24)  # as the batch contact sheets
FOREGROUND = (220, 220, 220)
BAR = (90, 150, 230)
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 44, 12, 30, 40


def write_stats(stats: DatasetStats, root: Path) -> list[Path]:
    """Write every chart, the sheet, the table and the numbers under ``root/stats``; returns the PNGs."""
    out = root / STATS_DIR
    out.mkdir(parents=True, exist_ok=True)
    charts = [bar_chart(histogram) for histogram in stats.histograms]
    written = []
    for histogram, chart in zip(stats.histograms, charts, strict=True):
        written.append(_save_png(chart, out / f"{histogram.name}.png"))
    written.append(_save_png(sheet(charts), out / "stats.png"))
    write_bytes_atomic(out / "stats.txt", stats.table().encode())
    write_bytes_atomic(out / "stats.json", (json.dumps(asdict(stats), indent=1) + "\n").encode())
    return written


def bar_chart(histogram: Histogram) -> Image.Image:
    width, height = CHART_SIZE
    image = Image.new("RGB", CHART_SIZE, BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(11)
    draw.text((8, 8), histogram.title, fill=FOREGROUND, font=font)
    plot_w = width - MARGIN_LEFT - MARGIN_RIGHT
    plot_h = height - MARGIN_TOP - MARGIN_BOTTOM - 12  # room for the tallest bar's count
    bottom = height - MARGIN_BOTTOM
    top_count = max(histogram.counts, default=0) or 1
    draw.line(
        [(MARGIN_LEFT, MARGIN_TOP), (MARGIN_LEFT, bottom), (width - MARGIN_RIGHT, bottom)], fill=FOREGROUND
    )
    draw.text((4, bottom - plot_h - 6), str(top_count), fill=FOREGROUND, font=font)
    draw.text((4, bottom - 6), "0", fill=FOREGROUND, font=font)
    bars = max(len(histogram.counts), 1)
    slot = plot_w / bars
    # Long labels (rejection reasons) alternate between two rows so neighbours do not overlap.
    stagger = any(len(label) * 6 > slot for label in histogram.labels)
    for i, (label, count) in enumerate(zip(histogram.labels, histogram.counts, strict=True)):
        x0 = MARGIN_LEFT + i * slot + slot * 0.1
        x1 = MARGIN_LEFT + (i + 1) * slot - slot * 0.1
        y0 = bottom - plot_h * count / top_count
        if count:
            draw.rectangle([x0, y0, x1, bottom - 1], fill=BAR)
            draw.text(((x0 + x1) / 2, y0 - 2), str(count), fill=FOREGROUND, font=font, anchor="md")
        row = bottom + 4 + (12 * (i % 2) if stagger else 0)
        draw.text(((x0 + x1) / 2, row), label, fill=FOREGROUND, font=font, anchor="ma")
    return image


def sheet(charts: list[Image.Image]) -> Image.Image:
    width, height = CHART_SIZE
    rows = (len(charts) + SHEET_COLUMNS - 1) // SHEET_COLUMNS
    out = Image.new("RGB", (SHEET_COLUMNS * width, rows * height), BACKGROUND)
    for i, chart in enumerate(charts):
        out.paste(chart, ((i % SHEET_COLUMNS) * width, (i // SHEET_COLUMNS) * height))
    return out


def _save_png(image: Image.Image, path: Path) -> Path:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
    return path
