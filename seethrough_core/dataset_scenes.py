"""Seeded synthetic scenes for the training dataset, filtered with the exact masks before anything renders.

A scene: 1..N assets standing on the floor with random yaw, placed next to each other (their footprints
never intersect), and a camera on the upper hemisphere looking at the scene centre from the side of one
object towards another, so that objects hide each other in view. Whether a scene is kept is decided
from the exact masks (masks.compute_masks): the image is rendered only for kept scenes.

Everything is drawn from ``random.Random(scene_seed)``: the same seed and asset catalogue give the same
scene, whatever the order or the process that makes it.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .layout import Box, Camera, Layout
from .limits import MAX_LIGHT_SEED
from .masks import MaskSet, _mask_bounds, compute_masks

# Asset files the dataset maker reads (with Blender's own importers), besides built-in primitives.
ASSET_SUFFIXES = (".blend", ".glb", ".gltf", ".obj", ".fbx", ".usd", ".usda", ".usdc", ".usdz")

# Why a sampled scene was not kept; the names appear in progress lines, errors and `dataset stats`.
REJECT_PLACEMENT = "no_placement"  # the objects could not be set down without touching
REJECT_FRAME = "cut_by_frame"  # an object reaches the image border (or is outside the frame)
REJECT_SMALL = "box_too_small"  # an object's 2D box is smaller than the lower size bound
REJECT_LARGE = "box_too_large"  # ... or larger than the upper bound
REJECT_HIDDEN = "too_hidden"  # an object's visibility ratio is below --min-visibility
REJECT_NO_OCCLUSION = "no_occlusion"  # no object's visibility ratio is below --max-min-visibility
REJECT_REASONS = (
    REJECT_PLACEMENT,
    REJECT_FRAME,
    REJECT_SMALL,
    REJECT_LARGE,
    REJECT_HIDDEN,
    REJECT_NO_OCCLUSION,
)

# The scenes are first checked on a small copy of the image (cheap), then exactly at full size.
COARSE_SIDE = 256
COARSE_VISIBILITY_SLACK = 0.03  # the coarse pass lets borderline scenes through to the exact one
COARSE_SIZE_SLACK = 0.02
GAP_M = 0.02  # the least distance between two objects' footprints
PLACEMENT_ATTEMPTS = 50  # positions tried per object before the scene counts as `no_placement`
OCCLUDER_AZIMUTH_JITTER_DEG = 25.0


@dataclass(frozen=True)
class AssetSpec:
    """One asset as the scene sampler sees it: a description and the size of the box fitted to it."""

    id: str
    description: str
    size: tuple[float, float, float]  # width, depth, height in metres (after any size template)


@dataclass(frozen=True)
class SceneSettings:
    """How scenes are drawn and filtered. The defaults are documented in docs/dataset.md."""

    objects: tuple[int, int] = (1, 4)
    resolution: int = 1024
    # Kept: every object's visibility ratio > min_visibility and (two objects or more) at least one
    # below max_min_visibility.
    min_visibility: float = 0.3
    max_min_visibility: float = 0.8
    # The largest side of each object's 2D box (of its amodal mask), as a share of the image side.
    box_size: tuple[float, float] = (0.1, 0.9)
    # The camera: the reference's is 6 m from the scene centre, 30 degrees up, 50 mm on a 36 mm sensor.
    elevation_deg: tuple[float, float] = (10.0, 50.0)
    distance_m: tuple[float, float] = (5.0, 8.0)
    lens_mm: tuple[float, float] = (40.0, 60.0)
    scene_prompt: str = ""
    max_tries: int = 200  # scenes drawn for one sample before the filter counts as impossible

    def __post_init__(self) -> None:
        lo, hi = self.objects
        if not 1 <= lo <= hi:
            raise ValueError(f"objects {lo}-{hi}: give a range 1 <= low <= high")
        if not 0.0 <= self.min_visibility < self.max_min_visibility <= 1.0:
            raise ValueError(
                f"--min-visibility {self.min_visibility} must be below --max-min-visibility "
                f"{self.max_min_visibility}, both within 0..1"
            )
        for name in ("box_size", "elevation_deg", "distance_m", "lens_mm"):
            low, high = getattr(self, name)
            if not 0.0 <= low <= high:
                raise ValueError(f"{name} {low}-{high}: give a range 0 <= low <= high")
        if self.elevation_deg[1] >= 90.0:
            raise ValueError("the camera elevation must stay below 90 degrees")


@dataclass(frozen=True)
class TargetLook:
    """The randomised look of the target render: a sun, a uniform sky and the floor's material."""

    sun_elevation_deg: float
    sun_azimuth_deg: float
    sun_strength: float
    sun_angle_deg: float  # the sun's angular size: the softness of its shadows
    sky_color: tuple[float, float, float]
    sky_strength: float
    floor_color: tuple[float, float, float]
    floor_roughness: float

    @classmethod
    def from_dict(cls, data: dict) -> TargetLook:
        """From its JSON form (colours come back as lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


@dataclass(frozen=True)
class SceneCheck:
    """What the exact masks say about a scene."""

    reason: str | None  # None: kept
    visibility: list[float]
    boxes_2d: list[tuple[int, int, int, int]]  # x0, y0, x1, y1 (exclusive) of each amodal mask, px

    @property
    def kept(self) -> bool:
        return self.reason is None


@dataclass(frozen=True)
class Scene:
    """A kept scene: the layout to render and how it was drawn."""

    seed: int
    layout: Layout
    asset_ids: list[str]  # per box
    look: TargetLook
    check: SceneCheck
    tries: int
    rejections: dict[str, int] = field(default_factory=dict)

    def record(self) -> dict:
        """The `scene` field of the dataset sample: what the stats and a reader need to know."""
        camera = self.layout.camera
        target = scene_target(self.layout.boxes)
        elevation = 90.0 - camera.rotation_euler_deg[0]
        azimuth = (camera.rotation_euler_deg[2] - 90.0) % 360.0
        return {
            "assets": list(self.asset_ids),
            "camera": {
                "elevation_deg": round(elevation, 4),
                "azimuth_deg": round(azimuth, 4),
                "distance_m": round(float(np.linalg.norm(np.subtract(camera.location, target))), 4),
                "lens_mm": camera.lens_mm,
            },
            "yaw_to_camera_deg": [round(yaw_to_camera(box, azimuth), 3) for box in self.layout.boxes],
            "boxes_2d": [list(b) for b in self.check.boxes_2d],
            "look": asdict(self.look),
            "tries": self.tries,
            "rejections": dict(self.rejections),
        }


class SceneFilterError(ValueError):
    """No scene passed the filters in ``max_tries`` draws: the settings (or assets) cannot work."""

    def __init__(self, seed: int, tries: int, rejections: Counter) -> None:
        self.rejections = dict(rejections)
        reason, count = rejections.most_common(1)[0] if rejections else ("nothing", 0)
        super().__init__(
            f"no scene passed the filters in {tries} tries (scene seed {seed}); most were rejected as "
            f"{reason} ({count} of {tries}: {REASON_HELP.get(reason, reason)}). "
            f"All reasons: {', '.join(f'{k} {v}' for k, v in rejections.most_common())}"
        )


REASON_HELP = {
    REJECT_PLACEMENT: "the objects could not be placed apart; use fewer or smaller objects",
    REJECT_FRAME: "objects reach the image border; raise --distance or lower --lens",
    REJECT_SMALL: "objects look too small; lower --distance, raise --lens or lower --box-size's low end",
    REJECT_LARGE: "objects look too large; raise --distance, lower --lens or raise --box-size's high end",
    REJECT_HIDDEN: "some object is hidden too much; lower --min-visibility",
    REJECT_NO_OCCLUSION: "no object is hidden enough; raise --max-min-visibility",
}


def scene_seed(seed: int, index: int) -> int:
    """The seed of the dataset's scene number ``index``: one per index, so a rerun redraws the same."""
    return (seed + index) % (MAX_LIGHT_SEED + 1)


def make_scene(assets: list[AssetSpec], seed: int, settings: SceneSettings) -> Scene:
    """Draw scenes from ``seed`` until one passes the filters. Raises SceneFilterError."""
    if not assets:
        raise ValueError("no assets to make scenes from")
    rng = random.Random(seed)
    rejections: Counter = Counter()
    for tries in range(1, settings.max_tries + 1):
        drawn = draw_scene(assets, rng, settings)
        if drawn is None:
            rejections[REJECT_PLACEMENT] += 1
            continue
        layout, asset_ids = drawn
        look = draw_look(rng)
        coarse = check_scene(_resized(layout, min(COARSE_SIDE, settings.resolution)), settings, slack=True)
        if not coarse.kept:
            rejections[coarse.reason] += 1
            continue
        exact = check_scene(layout, settings)
        if not exact.kept:
            rejections[exact.reason] += 1
            continue
        return Scene(seed, layout, asset_ids, look, exact, tries, dict(rejections))
    raise SceneFilterError(seed, settings.max_tries, rejections)


def draw_scene(
    assets: list[AssetSpec], rng: random.Random, settings: SceneSettings
) -> tuple[Layout, list[str]] | None:
    """One unfiltered scene; None when the objects could not be placed apart."""
    count = rng.randint(*settings.objects)
    chosen = [rng.choice(assets) for _ in range(count)]
    boxes = place_on_floor(chosen, rng)
    if boxes is None:
        return None
    camera = draw_camera(boxes, rng, settings)
    layout = Layout(
        scene_prompt=settings.scene_prompt,
        resolution=(settings.resolution, settings.resolution),
        camera=camera,
        boxes=tuple(boxes),
        light_seed=rng.randrange(MAX_LIGHT_SEED + 1),
    )
    return layout, [asset.id for asset in chosen]


def place_on_floor(assets: list[AssetSpec], rng: random.Random) -> list[Box] | None:
    """Boxes resting on the floor with random yaw, each next to an earlier one (footprints apart by at
    least GAP_M), centred on the origin."""
    boxes: list[Box] = []
    for asset in assets:
        width, depth, height = asset.size
        for _ in range(PLACEMENT_ATTEMPTS):
            yaw = rng.uniform(0.0, 360.0)
            if boxes:
                anchor = rng.choice(boxes)
                reach = footprint_radius(asset.size) + footprint_radius(anchor.size)
                distance = rng.uniform(0.45, 1.05) * reach
                angle = rng.uniform(0.0, 2.0 * math.pi)
                x = anchor.center[0] + distance * math.cos(angle)
                y = anchor.center[1] + distance * math.sin(angle)
            else:
                x = y = 0.0
            box = Box(
                asset.description, (x, y, height / 2.0), (width, depth, height), (0.0, 0.0, yaw), asset.id
            )
            if not any(footprints_touch(box, other) for other in boxes):
                boxes.append(box)
                break
        else:
            return None
    mx = sum(b.center[0] for b in boxes) / len(boxes)
    my = sum(b.center[1] for b in boxes) / len(boxes)
    return [replace(b, center=(b.center[0] - mx, b.center[1] - my, b.center[2])) for b in boxes]


def footprint_radius(size: tuple[float, float, float]) -> float:
    return math.hypot(size[0], size[1]) / 2.0


def footprint(box: Box, grow: float = 0.0) -> np.ndarray:
    """The four floor corners of a box's footprint (4 x 2), grown by ``grow`` metres on every side."""
    half_w, half_d = box.size[0] / 2.0 + grow, box.size[1] / 2.0 + grow
    yaw = math.radians(box.rotation_euler_deg[2])
    c, s = math.cos(yaw), math.sin(yaw)
    local = np.array([[-half_w, -half_d], [half_w, -half_d], [half_w, half_d], [-half_w, half_d]])
    return local @ np.array([[c, s], [-s, c]]) + np.array(box.center[:2])


def footprints_touch(a: Box, b: Box, gap: float = GAP_M) -> bool:
    """Whether two footprints come closer than ``gap`` (separating axis test on the grown rectangles)."""
    pa, pb = footprint(a, gap / 2.0), footprint(b, gap / 2.0)
    for poly in (pa, pb):
        for i in range(2):
            edge = poly[i + 1] - poly[i]
            axis = np.array([-edge[1], edge[0]])
            ra, rb = pa @ axis, pb @ axis
            if ra.max() < rb.min() or rb.max() < ra.min():
                return False
    return True


def scene_target(boxes: tuple[Box, ...] | list[Box]) -> tuple[float, float, float]:
    """Where the camera looks: the middle of the objects, at their mean half height."""
    n = len(boxes)
    return (
        sum(b.center[0] for b in boxes) / n,
        sum(b.center[1] for b in boxes) / n,
        sum(b.center[2] for b in boxes) / n,
    )


def draw_camera(boxes: list[Box], rng: random.Random, settings: SceneSettings) -> Camera:
    """A camera on the upper hemisphere around the scene centre, looking at it. With two objects or more
    it stands behind one of them as seen from another (within OCCLUDER_AZIMUTH_JITTER_DEG), so the first
    hides part of the second."""
    if len(boxes) >= 2:
        front, back = rng.sample(boxes, 2)
        azimuth = math.degrees(math.atan2(front.center[1] - back.center[1], front.center[0] - back.center[0]))
        azimuth += rng.uniform(-OCCLUDER_AZIMUTH_JITTER_DEG, OCCLUDER_AZIMUTH_JITTER_DEG)
    else:
        azimuth = rng.uniform(0.0, 360.0)
    elevation = rng.uniform(*settings.elevation_deg)
    distance = rng.uniform(*settings.distance_m)
    lens = rng.uniform(*settings.lens_mm)
    return look_at_camera(scene_target(boxes), azimuth, elevation, distance, lens)


def look_at_camera(
    target: tuple[float, float, float], azimuth_deg: float, elevation_deg: float, distance: float, lens: float
) -> Camera:
    """A camera ``distance`` from ``target`` in direction (azimuth, elevation), looking at it, upright."""
    az, el = math.radians(azimuth_deg), math.radians(elevation_deg)
    location = (
        target[0] + distance * math.cos(el) * math.cos(az),
        target[1] + distance * math.cos(el) * math.sin(az),
        target[2] + distance * math.sin(el),
    )
    # Blender cameras look along local -Z: pitch up from straight down, then turn to face the target.
    rotation = (90.0 - elevation_deg, 0.0, (azimuth_deg + 90.0) % 360.0)
    return Camera(location=location, rotation_euler_deg=rotation, lens_mm=lens)


def yaw_to_camera(box: Box, camera_azimuth_deg: float) -> float:
    """The object's yaw as the camera sees it, in (-180, 180]: 0 faces the camera (its front, +Y)."""
    front = box.rotation_euler_deg[2] + 90.0
    return -((camera_azimuth_deg - front + 180.0) % 360.0 - 180.0)


def draw_look(rng: random.Random) -> TargetLook:
    def grey_tint(lo: float, hi: float, saturation: float) -> tuple[float, float, float]:
        value = rng.uniform(lo, hi)
        return tuple(round(value * (1.0 - saturation * rng.random()), 4) for _ in range(3))  # type: ignore

    return TargetLook(
        sun_elevation_deg=rng.uniform(20.0, 75.0),
        sun_azimuth_deg=rng.uniform(0.0, 360.0),
        sun_strength=rng.uniform(1.5, 5.0),
        sun_angle_deg=rng.uniform(0.5, 15.0),
        sky_color=grey_tint(0.5, 1.0, 0.3),
        sky_strength=rng.uniform(0.3, 1.2),
        floor_color=grey_tint(0.05, 0.8, 0.6),
        floor_roughness=rng.uniform(0.3, 1.0),
    )


def check_scene(layout: Layout, settings: SceneSettings, *, slack: bool = False) -> SceneCheck:
    """Judge a scene by its exact masks; ``slack`` loosens every bound a little (the coarse pass)."""
    return judge_masks(compute_masks(layout), layout, settings, slack=slack)


def judge_masks(
    masks: MaskSet, layout: Layout, settings: SceneSettings, *, slack: bool = False
) -> SceneCheck:
    visibility_slack = COARSE_VISIBILITY_SLACK if slack else 0.0
    size_slack = COARSE_SIZE_SLACK if slack else 0.0
    side = max(layout.width, layout.height)
    visibility, boxes_2d = [], []
    reason = None
    for i in range(masks.count):
        silhouette = int(masks.silhouette[i].sum())
        visibility.append(int(masks.visible[i].sum()) / silhouette if silhouette else 0.0)
        bounds = box_2d(masks.amodal[i])
        boxes_2d.append(bounds or (0, 0, 0, 0))
        if reason is not None:
            continue
        if (
            bounds is None
            or bounds[0] == 0
            or bounds[1] == 0
            or bounds[2] == layout.width
            or (bounds[3] == layout.height)
        ):
            reason = REJECT_FRAME
            continue
        largest = max(bounds[2] - bounds[0], bounds[3] - bounds[1]) / side
        if largest < settings.box_size[0] - size_slack:
            reason = REJECT_SMALL
        elif largest > settings.box_size[1] + size_slack:
            reason = REJECT_LARGE
    if reason is None and min(visibility) <= settings.min_visibility - visibility_slack:
        reason = REJECT_HIDDEN
    if (
        reason is None
        and len(visibility) >= 2
        and min(visibility) >= settings.max_min_visibility + visibility_slack
    ):
        reason = REJECT_NO_OCCLUSION
    return SceneCheck(reason, [round(v, 6) for v in visibility], boxes_2d)


def box_2d(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """x0, y0, x1, y1 (exclusive) of a mask's pixels; None when it is empty."""
    bounds = _mask_bounds(mask)  # rows then columns
    return None if bounds is None else (bounds[2], bounds[0], bounds[3], bounds[1])


def _resized(layout: Layout, side: int) -> Layout:
    return replace(layout, resolution=(side, side))
