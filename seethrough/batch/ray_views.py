"""`seethrough batch --ray`: the upscale tiles' views rendered on the cluster, ahead of need.

A frame made in two stages renders views for its tiles (upscale_run.view_renders: the first missing
tile's view alone, then one view the other tiles' views are cut from). Rendered on the driver, those
Cycles renders would set the pace of a farm of fast GPUs. Here each is a render_shot task, started as
soon as the frame's base is ready, so the cluster's CPUs render the views while the actors still
generate bases and tiles; at most ``ahead`` renders wait unclaimed, which bounds the object store.
The driver writes each render into the view's folder when the upscale asks for it, and cuts the tiles'
views from a shared one itself (a crop and the tiles' masks: no render).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.exceptions import RayError, RayTaskError

from blender_addon.render import render_views
from seethrough_core.errors import SeeThroughError
from seethrough_core.layout import Layout
from seethrough_core.png import write_bytes_atomic
from seethrough_core.rendered_layout import REPORT_NAME, render_key, reusable
from seethrough_core.upscale_plan import UpscalePlan, ViewCondition, ViewCrop
from seethrough_core.upscale_run import view_renders

from .ray_actors import RENDER_RETRIES, RenderedShot, render_shot

POLL_S = 0.25  # how often a driver waiting for a render looks whether the batch is stopping


def write_rendered(folder: Path, files: dict[str, bytes]) -> None:
    """A rendered-layout folder from a Ray render's files; the report last, as it completes the folder."""
    for name in sorted(files, key=lambda name: name == REPORT_NAME):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes_atomic(path, files[name])


def await_render(ref: Any, stopping: Callable[[], bool]) -> RenderedShot:
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
    key: str  # the layout rendered (render_key): a folder asked for another layout renders again
    ref: Any


class RayTileViews:
    """UpscaleRunner's ``render_view`` (``view``) and ``render_views`` (``shared``), rendered by Ray.

    ``ahead()`` names each frame's views as its base becomes ready, in the order the frames will be
    upscaled; their renders start while fewer than ``ahead`` are unclaimed."""

    def __init__(self, engine: str, ahead: int, stopping: Callable[[], bool] = lambda: False) -> None:
        self.engine = engine
        self.limit = max(1, ahead)
        self.stopping = stopping
        self.started = 0  # render tasks started for views (for the summary and the tests)
        self._lock = threading.Lock()
        self._frames: deque[tuple[UpscalePlan, Layout, Path]] = deque()  # named, renders not started
        self._renders: dict[Path, _Render] = {}  # view folder -> its render, started, not claimed

    def ahead(self, plan: UpscalePlan, frame_layout: Layout, tiles_dir: Path) -> None:
        """A frame whose upscale will come: start its views' renders when there is room."""
        with self._lock:
            self._frames.append((plan, frame_layout, tiles_dir))
        self._top_up()

    def view(self, layout: Layout, folder: Path) -> ViewCondition:
        """A tile's view: its folder as ``shared`` cut it (or an interrupted run left it), else rendered."""
        found = reusable(folder, layout, self.engine)
        if found is None:
            self._claim(layout, folder)
            found = reusable(folder, layout, self.engine)
        if found is None:
            raise SeeThroughError(f"the view rendered for {folder} is incomplete")
        return found.view_condition()

    def shared(self, whole: Layout, folder: Path, crops: list[ViewCrop]) -> bool:
        """The tiles' views cut from one view rendered on the cluster (the cuts are the driver's)."""
        if reusable(folder, whole, self.engine) is None:
            self._claim(whole, folder)
        render_views(whole, folder, crops, engine=self.engine, quiet=True)  # reuses it: no render here
        return True

    def cancel(self) -> None:
        """Give up the renders nobody claimed (the batch ended or stopped)."""
        with self._lock:
            self._frames.clear()
            renders, self._renders = list(self._renders.values()), {}
        for render in renders:
            ray.cancel(render.ref)

    def _claim(self, layout: Layout, folder: Path) -> None:
        """Write the view's render into ``folder``: the one started ahead, or one started now."""
        key = render_key(layout, self.engine)
        with self._lock:
            render = self._renders.pop(folder, None)
        if render is not None and render.key != key:
            ray.cancel(render.ref)
            render = None
        if render is None:
            with self._lock:
                render = self._start(layout)
        self._top_up()
        write_rendered(folder, await_render(render.ref, self.stopping).files)

    def _start(self, layout: Layout) -> _Render:
        """(The caller holds the lock.)"""
        self.started += 1
        return _Render(render_key(layout, self.engine), render_shot.remote(layout, self.engine))

    def _top_up(self) -> None:
        """Start the next named frames' views while fewer than ``limit`` renders wait unclaimed."""
        while True:
            with self._lock:
                if not self._frames or len(self._renders) >= self.limit:
                    return
                plan, frame_layout, tiles_dir = self._frames.popleft()
                renders = view_renders(plan, frame_layout, tiles_dir)
                wanted = [renders.first, renders.shared[:2] if renders.shared else None]
                for layout, folder in (item for item in wanted if item is not None):
                    if folder not in self._renders and reusable(folder, layout, self.engine) is None:
                        self._renders[folder] = self._start(layout)
