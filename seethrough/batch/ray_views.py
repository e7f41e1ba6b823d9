"""`seethrough batch --ray`: the upscale tiles' views rendered on the cluster, ahead of need.

A frame made in two stages renders views for its tiles (upscale_run.view_renders: the first missing
tile's view alone, then one view the other tiles' views are cut from). Rendered on the driver, those
Cycles renders would set the pace of a farm of fast GPUs. Here each is a render task (render_shot,
render_tile_views), started as soon as the frame's base is ready, so the cluster's CPUs render the
views while the actors still generate bases and tiles; at most ``ahead`` renders wait unclaimed,
which bounds the object store. The tiles' views are cut from the shared render, and their masks made,
in the render task as well: the driver only writes the files into the views' folders when the upscale
asks for them, so a large frame's dozens of tiles cost it no Blender and no mask work.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from blender_addon.render import TileViews
from seethrough_core.errors import SeeThroughError
from seethrough_core.layout import Layout
from seethrough_core.png import write_bytes_atomic
from seethrough_core.rendered_layout import REPORT_NAME, render_key, reusable
from seethrough_core.upscale_plan import Tile, UpscalePlan, ViewCondition, ViewCrop
from seethrough_core.upscale_run import shared_view_rendered, view_renders

from .ray_actors import RENDER_RETRIES, RenderedShot, render_shot, render_tile_views

POLL_S = 0.25  # how often a driver waiting for a render looks whether the batch is stopping


def write_rendered(folder: Path, files: dict[str, bytes]) -> None:
    """A rendered-layout folder from a Ray render's files; the report last, as it completes the folder."""
    for name in sorted(files, key=lambda name: name == REPORT_NAME):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, files[name])


def await_render(ref: Any, stopping: Callable[[], bool]) -> Any:
    """A render task's result; SeeThroughError when it failed, was lost, or the batch is stopping."""
    while not ray.wait([ref], timeout=POLL_S)[0]:
        if stopping():
            ray.cancel(ref)
            raise SeeThroughError("the batch is stopping")
    try:
        return ray.get(ref)
    except RayTaskError as exc:
        raise SeeThroughError(str(exc.cause)) from None
    except RayError as exc:
        lines = str(exc).strip().splitlines()
        raise SeeThroughError(
            f"its Ray worker was lost {RENDER_RETRIES} times: {lines[0] if lines else type(exc).__name__}"
        ) from None


@dataclass(frozen=True)
class _Render:
    key: str  # what was rendered (render keys): a folder asked for something else renders again
    ref: Any  # render_shot's RenderedShot, or render_tile_views' files of each folder


def _key(layout: Layout, engine: str, crops: list[ViewCrop] | None = None) -> str:
    """A view render's identity: its layout, and the tile views cut from it (with their places)."""
    cuts = [(render_key(crop.layout, engine), crop.x, crop.y) for crop in crops or []]
    return json.dumps([render_key(layout, engine), cuts])


class RayTileViews(TileViews):
    """UpscaleRunner's ``render_view`` (``view``) and ``render_views`` (``shared``), rendered by Ray:
    TileViews with its renders replaced by tasks, which return the views' conditions too.

    ``ahead()`` names each frame's views as its base becomes ready, in the order the frames will be
    upscaled; their renders start while fewer than ``ahead`` are unclaimed."""

    def __init__(self, engine: str, ahead: int, stopping: Callable[[], bool] = lambda: False) -> None:
        super().__init__(engine)
        self.limit = max(1, ahead)
        self.stopping = stopping
        self.started = 0  # render tasks started for views (for the summary and the tests)
        self._lock = threading.Lock()
        # frames named, their renders not started: plan, layout, tiles folder, the tiles (None: all)
        self._frames: deque[tuple[UpscalePlan, Layout, Path, tuple[Tile, ...] | None]] = deque()
        self._renders: dict[Path, _Render] = {}  # view folder -> its render, started, not claimed

    def ahead(
        self, plan: UpscalePlan, frame_layout: Layout, tiles_dir: Path, tiles: tuple[Tile, ...] | None = None
    ) -> None:
        """A frame whose upscale will come: start the views' renders of its ``tiles`` (default: all) when
        there is room."""
        with self._lock:
            self._frames.append((plan, frame_layout, tiles_dir, tiles))
        self._top_up()

    def shared(self, whole: Layout, folder: Path, crops: list[ViewCrop]) -> bool:
        """The tiles' views cut from one view rendered on the cluster, written into their folders."""
        if not shared_view_rendered(whole, folder, crops, self.engine):
            whole_files, cut = self._claim(whole, folder, crops)
            write_rendered(folder, whole_files)
            for crop, rendered in zip(crops, cut, strict=True):
                write_rendered(crop.folder, rendered.files)
            self._keep(crops, [rendered.condition for rendered in cut])
        return True

    def _render(self, layout: Layout, folder: Path) -> ViewCondition:
        rendered: RenderedShot = self._claim(layout, folder)
        write_rendered(folder, rendered.files)
        return rendered.condition

    def cancel(self) -> None:
        """Give up the renders nobody claimed (the batch ended or stopped)."""
        with self._lock:
            self._frames.clear()
            renders, self._renders = list(self._renders.values()), {}
        for render in renders:
            ray.cancel(render.ref)

    def _claim(self, layout: Layout, folder: Path, crops: list[ViewCrop] | None = None) -> Any:
        """The render for ``folder``: the one started ahead, or one started now; waits for it."""
        key = _key(layout, self.engine, crops)
        with self._lock:
            render = self._renders.pop(folder, None)
        if render is not None and render.key != key:
            ray.cancel(render.ref)
            render = None
        if render is None:
            with self._lock:
                render = self._start(layout, crops)
        self._top_up()
        return await_render(render.ref, self.stopping)

    def _start(self, layout: Layout, crops: list[ViewCrop] | None) -> _Render:
        """(The caller holds the lock.)"""
        self.started += 1
        if crops is None:
            ref = render_shot.remote(layout, self.engine, as_view=True)
        else:
            ref = render_tile_views.remote(layout, crops, self.engine)
        return _Render(_key(layout, self.engine, crops), ref)

    def _top_up(self) -> None:
        """Start the next named frames' views while fewer than ``limit`` renders wait unclaimed."""
        while True:
            with self._lock:
                if not self._frames or len(self._renders) >= self.limit:
                    return
                plan, frame_layout, tiles_dir, tiles = self._frames.popleft()
                renders = view_renders(plan, frame_layout, tiles_dir, tiles)
                if renders.first is not None:
                    layout, folder = renders.first
                    if folder not in self._renders and reusable(folder, layout, self.engine) is None:
                        self._renders[folder] = self._start(layout, None)
                if renders.shared is not None:
                    whole, folder, crops = renders.shared
                    if folder not in self._renders and not shared_view_rendered(
                        whole, folder, crops, self.engine
                    ):
                        self._renders[folder] = self._start(whole, crops)
