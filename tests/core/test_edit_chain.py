"""Edits made one after another by hand sample a kept pixel once, from the picture that generated it
(edit_chain.py), found through each saved picture's record and the region beside it.

A chain of `seethrough edit`s is played through the core's plan on real saved PNG files (their records,
regions and parent links as the command writes them): camera moves, and a box moved on the way. Each
edit's region is "generated" as fresh texture (no model is needed to test where kept pixels come from).
The last picture's pixels kept from the first are the first picture warped once into the last camera;
planned from the previous picture alone, as before, they drift from it and lose detail. A broken link
ends the walk: the picture it leads from counts as generated in full.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from reprojection_support import RESAMPLE_TOLERANCE
from shot_support import CAR, detail, record_of, shot_layout, texture

from seethrough.previous_picture import read_previous
from seethrough_core.edit_chain import remember_sources
from seethrough_core.edit_plan import plan_edit
from seethrough_core.generate_and_save import Destination, region_path_for, save_image
from seethrough_core.layout import Layout
from seethrough_core.png import read_png_rgb
from seethrough_core.reprojection import reproject

SIZE = (256, 256)  # the smallest sides an edit's settings take
MARGIN = 4
DOLLY = 0.15  # m a frame: the floor moves by its plane's homography, the far background by the rotation's


def layouts() -> list[Layout]:
    """The first picture and seven edits: the camera pans and dollies, but at the fourth edit only the car
    moves."""
    moved_car = (replace(CAR, center=(1.6, 9.0, 0.75)),)
    cameras = [shot_layout(k, DOLLY, SIZE) for k in range(7)]
    moved = [replace(layout, boxes=moved_car) for layout in cameras[3:]]
    return [*cameras[:4], *moved]  # frames 0-3 with the car where it was, then the car moved


def edit_by_hand(folder: Path, with_chain: bool) -> tuple[list[Path], list]:
    """The first picture generated, then each layout an edit of the picture before it, saved as
    `seethrough edit` saves it (PNG with its record, region beside it). The saved paths and plans."""
    folder.mkdir()
    shot = layouts()
    paths = [folder / "picture_0.png"]
    save_image(texture(0, SIZE), record_of(shot[0]), Destination(paths[0], {}))
    plans = [None]
    for k in range(1, len(shot)):
        previous = read_previous(paths[-1])
        chain = previous.chain() if with_chain else None
        plan = plan_edit(previous, shot[k], margin_px=MARGIN, reproject_limit=0.9, chain=chain)
        path = folder / f"picture_{k}.png"
        plan = plan.saved_as(str(path))
        region = plan.change.region
        image = np.where(region[..., None], texture(k, SIZE), plan.edit.image)  # the "model" fills the region
        record = replace(record_of(shot[k]), parent=plan.parent)
        save_image(image, record, Destination(path, {}, parent=plan.parent, region=plan.region_mask))
        paths.append(path)
        plans.append(plan)
    return paths, plans


@pytest.fixture(scope="module")
def chains(tmp_path_factory) -> dict[bool, tuple[list[Path], list]]:
    root = tmp_path_factory.mktemp("edits")
    return {chain: edit_by_hand(root / f"chain_{chain}", chain) for chain in (True, False)}


def test_kept_pixels_are_the_first_picture_warped_once(chains):
    paths, plans = chains[True]
    shot = layouts()
    assert [p.parent["kind"] for p in plans[1:]] == ["reprojected"] * 3 + ["edit"] + ["reprojected"] * 3
    last, sources = read_png_rgb(paths[-1]), plans[-1].sources
    direct = reproject(read_png_rgb(paths[0]), shot[0], shot[-1], 0)  # one warp, first to last camera
    from_first = (sources.index == sources.labels.index(str(paths[0]))) & direct.seen
    assert from_first.mean() > 0.3  # most of the picture is still the first one's
    error = np.abs(last.astype(int) - direct.image.astype(int))[from_first]
    assert error.max() <= RESAMPLE_TOLERANCE
    # the record names the pictures the pixels come from, this one by its path, with their shares
    shares = plans[-1].parent["sources"]
    assert set(shares) == set(sources.labels) and str(paths[-1]) in shares
    assert shares[str(paths[0])] == pytest.approx(from_first.mean(), abs=0.02)
    assert abs(sum(shares.values()) - 1) < 1e-3

    before, _ = chains[False]  # planned from the previous picture alone: resampled at every move
    resampled = read_png_rgb(before[-1])
    drift = np.abs(resampled.astype(int) - direct.image.astype(int))[from_first]
    assert drift.mean() > 5 * max(error.mean(), 0.2)
    assert detail(last, from_first) > 0.95 * detail(direct.image, from_first)
    assert detail(resampled, from_first) < 0.8 * detail(direct.image, from_first)


def test_the_walk_finds_pictures_moved_together_and_a_broken_link_ends_it(tmp_path):
    paths, plans = edit_by_hand(tmp_path / "edits", with_chain=True)
    moved = tmp_path / "moved"
    paths[0].parent.rename(moved)  # the links name the old folder: each picture is found beside, by name

    def sources(k: int):
        return read_previous(moved / paths[k].name).chain().sources()

    last = sources(-1)
    assert last.labels == tuple(str(moved / Path(label).name) for label in plans[-1].sources.labels)
    assert np.array_equal(last.index, plans[-1].sources.index)
    assert np.allclose(last.xy, plans[-1].sources.xy, atol=1e-9)

    def names(k: int) -> set[str]:
        return {Path(label).name for label in sources(k).labels}

    # picture 2 changed since picture 3 was made from it: picture 3 counts as generated in full
    save_image(texture(99, SIZE), record_of(layouts()[2]), Destination(moved / "picture_2.png", {}))
    assert names(3) == {"picture_3.png"}
    assert "picture_3.png" in names(7) <= {f"picture_{k}.png" for k in range(3, 8)}
    # the car's edit (picture 4) without its region: it counts as generated in full
    region_path_for(moved / "picture_4.png").unlink()
    assert names(4) == {"picture_4.png"}
    assert "picture_4.png" in names(7) <= {f"picture_{k}.png" for k in range(4, 8)}
    # a missing picture ends it too
    (moved / "picture_6.png").unlink()
    assert names(7) == {"picture_7.png"}


def test_sources_planned_in_this_process_are_found_without_replaying_the_chain(tmp_path):
    """The add-on remembers each edit's sources (remember_sources): the next edit of that picture finds
    them even with the pictures before it gone; a picture changed since is walked again."""
    paths, plans = edit_by_hand(tmp_path / "edits", with_chain=True)
    last = plans[-1]
    remember_sources(last.sources, last.parent["sha256"])
    for path in paths[:-1]:
        path.unlink()  # a replay could no longer reach them
    assert read_previous(paths[-1]).chain().sources() is last.sources
    other = replace(record_of(layouts()[-1]), parent={**last.parent, "sha256": "0" * 64})
    save_image(read_png_rgb(paths[-1]), other, Destination(paths[-1], {}))  # another picture there now
    assert read_previous(paths[-1]).chain().sources().labels == (str(paths[-1]),)
