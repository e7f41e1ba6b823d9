"""The statistics of a made dataset (paper appendix B's plots): numbers only; `seethrough dataset stats`
draws them.

Per scene: its lowest visibility ratio, its camera's elevation and its number of objects; per object:
its yaw as the camera sees it and the largest side of its 2D box (share of the image side); and how
many drawn scenes each filter rejected. Camera angles come from the layout, so any dataset in this
format can be measured.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from .dataset_format import DatasetSample
from .dataset_scenes import REJECT_REASONS, yaw_to_camera
from .geometry import CameraModel


@dataclass(frozen=True)
class Histogram:
    name: str  # also the plot's file stem
    title: str
    labels: list[str]  # one per bar
    counts: list[int]


@dataclass(frozen=True)
class DatasetStats:
    samples: int
    objects: int
    values: dict[str, list[float]]  # the raw numbers behind the histograms
    histograms: list[Histogram] = field(default_factory=list)
    rejections: dict[str, int] = field(default_factory=dict)
    drawn: int = 0  # scenes drawn in all: kept + rejected

    def table(self) -> str:
        """A plain-text table: count, mean, min and max of each quantity, then the filters' rejections."""
        lines = [f"{'quantity':<24} {'count':>7} {'mean':>9} {'min':>9} {'max':>9}"]
        for name, values in self.values.items():
            if values:
                mean = sum(values) / len(values)
                lines.append(
                    f"{name:<24} {len(values):>7} {mean:>9.3f} {min(values):>9.3f} {max(values):>9.3f}"
                )
            else:
                lines.append(f"{name:<24} {0:>7} {'-':>9} {'-':>9} {'-':>9}")
        lines.append("")
        lines.append(f"{'scenes drawn':<24} {self.drawn:>7}")
        lines.append(f"{'kept':<24} {self.samples:>7}   {_share(self.samples, self.drawn)}")
        for reason, count in self.rejections.items():
            lines.append(f"{'rejected: ' + reason:<24} {count:>7}   {_share(count, self.drawn)}")
        return "\n".join(lines) + "\n"


def dataset_stats(samples: Sequence[DatasetSample]) -> DatasetStats:
    min_visibility, elevation, yaw, box_size, objects = [], [], [], [], []
    rejections: Counter = Counter({reason: 0 for reason in REJECT_REASONS})
    for sample in samples:
        layout = sample.parsed_layout()
        min_visibility.append(min(sample.visibility))
        objects.append(len(layout.boxes))
        forward = CameraModel(layout.camera, layout.width, layout.height).forward
        elevation.append(math.degrees(math.asin(max(-1.0, min(1.0, -forward[2])))))
        azimuth = math.degrees(math.atan2(-forward[1], -forward[0]))
        yaw.extend(yaw_to_camera(box, azimuth) for box in layout.boxes)
        side = max(layout.width, layout.height)
        for x0, y0, x1, y1 in sample.scene.get("boxes_2d", []):
            box_size.append(max(x1 - x0, y1 - y0) / side)
        rejections.update(sample.scene.get("rejections", {}))
    most = max(objects, default=1)
    histograms = [
        Histogram(
            "min_visibility", "lowest visibility ratio per scene", *_bins(min_visibility, 0.0, 1.0, 10)
        ),
        Histogram("yaw", "object yaw seen from the camera (deg, 0: facing it)", *_bins(yaw, -180, 180, 12)),
        Histogram("box_size", "largest side of each 2D box (share of the image)", *_bins(box_size, 0, 1, 10)),
        Histogram("elevation", "camera elevation (deg)", *_bins(elevation, 0.0, 90.0, 9)),
        Histogram(
            "objects",
            "objects per scene",
            [str(n) for n in range(1, most + 1)],
            [objects.count(n) for n in range(1, most + 1)],
        ),  # fmt: skip
        Histogram(
            "rejections",
            "scenes drawn: kept and rejected by reason",
            ["kept", *rejections],
            [len(samples), *rejections.values()],
        ),  # fmt: skip
    ]
    return DatasetStats(
        samples=len(samples),
        objects=sum(objects),
        values={
            "min_visibility": min_visibility,
            "yaw_to_camera_deg": yaw,
            "box_size": box_size,
            "elevation_deg": elevation,
            "objects_per_scene": [float(n) for n in objects],
        },
        histograms=histograms,
        rejections=dict(rejections),
        drawn=len(samples) + sum(rejections.values()),
    )


def _bins(values: list[float], lo: float, hi: float, bins: int) -> tuple[list[str], list[int]]:
    """Equal bins over [lo, hi] (the last one closed), labelled by their lower edge."""
    width = (hi - lo) / bins
    counts = [0] * bins
    for value in values:
        counts[min(max(int((value - lo) // width), 0), bins - 1)] += 1
    labels = [f"{lo + i * width:g}" for i in range(bins)]
    return labels, counts


def _share(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:5.1f}%" if whole else "    -"
