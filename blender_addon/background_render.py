"""OSCR renders in a separate Blender process, so the artist's Blender never freezes on them.

A Cycles OSCR render runs on the CPU for seconds to minutes; in Blender's own process it would
block the UI all that time. Instead the main thread writes the layout to a file and captures a
command line (render_task), and a worker thread runs it (run_render): Blender in the background
with factory settings, loading this add-on's modules straight from its folder, rendering with the
same code as `seethrough render` (render_process.child_main). Cancelling kills the process; a killed
render leaves no masks.json, so the cache never takes it for complete. No bpy here: the caller
passes Blender's executable.
"""

from __future__ import annotations

import atexit
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import seethrough_core
from seethrough_core.errors import SeeThroughError
from seethrough_core.layout import Layout
from seethrough_core.rendered_layout import RenderedLayout, is_complete, read_rendered, reusable
from seethrough_core.upscale_plan import ViewCondition, ViewCrop

ADDON_DIR = Path(__file__).resolve().parent
CHILD_PACKAGE = "seethrough_render_child"  # the add-on's name inside the render process
_POLL_S = 0.1
_LAST_LINE_CHARS = 500

# The child imports this add-on from its folder under a private name (an installed extension's
# package, bl_ext.<repo>.seethrough, does not exist in a factory-settings Blender), and finds the
# core where this Blender found it (the extension's own site-packages, or the environment's).
_BOOTSTRAP = """\
import importlib, importlib.util, sys
sys.path[:0] = {paths!r}
spec = importlib.util.spec_from_file_location(
    {package!r}, {init!r}, submodule_search_locations=[{addon_dir!r}])
module = importlib.util.module_from_spec(spec)
sys.modules[{package!r}] = module
spec.loader.exec_module(module)
sys.exit(importlib.import_module({package!r} + ".render_process").child_main())
"""


class RenderFailedError(SeeThroughError):
    """The background render ended without a complete OSCR image and masks."""


@dataclass(frozen=True)
class RenderTask:
    """One background render, prepared on the main thread."""

    argv: list[str]
    out_dir: Path  # the cache folder the render fills
    log_path: Path  # the child's output: Blender's messages, our progress lines, any error
    layout: Layout  # what it renders, with which engine: how a finished folder is known as its render
    engine: str
    cuts: tuple[Path, ...] = ()  # the tiles' view folders cut from the render (render_views)

    @property
    def fills(self) -> tuple[Path, ...]:
        """Every folder the render completes."""
        return (self.out_dir, *self.cuts)


def render_task(
    layout: Layout, out_dir: Path, engine: str, blender_binary: str, crops: Sequence[ViewCrop] = ()
) -> RenderTask:
    """Write the layout next to out_dir and build the command that renders it there (and, with
    ``crops``, cuts tiles' views from it: render.render_views).

    blender_binary is bpy.app.binary_path; empty when Blender runs as the bpy Python module
    (tests, the command line), where this Python interpreter, which imports bpy, renders instead.
    """
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    layout_path = out_dir.parent / f"{out_dir.name}.layout.json"
    layout_path.write_text(layout.to_json(), encoding="utf-8")
    code = _BOOTSTRAP.format(
        paths=[str(Path(seethrough_core.__file__).resolve().parent.parent)],
        package=CHILD_PACKAGE,
        init=str(ADDON_DIR / "__init__.py"),
        addon_dir=str(ADDON_DIR),
    )
    arguments = ["--", str(layout_path), str(out_dir), engine]
    if crops:
        crops_path = out_dir.parent / f"{out_dir.name}.crops.json"
        crops_path.write_text(json.dumps([crop.to_dict() for crop in crops]), encoding="utf-8")
        arguments.append(str(crops_path))
    if blender_binary:
        launcher = [blender_binary, "--background", "--factory-startup", "--python-exit-code", "1"]
        argv = [*launcher, "--python-expr", code, *arguments]
    else:
        argv = [sys.executable, "-c", code, *arguments]
    log_path = out_dir.parent / f"{out_dir.name}.log"
    return RenderTask(argv, out_dir, log_path, layout, engine, tuple(crop.folder for crop in crops))


def run_render(
    task: RenderTask, cancel: threading.Event, on_tick: Callable[[float], None] | None = None
) -> RenderedLayout | None:
    """Run the render to its end (worker thread); None if `cancel` was set (the process is killed).

    on_tick(elapsed seconds) is called about once a second while it renders.
    Raises RenderFailedError with the end of the child's log when it fails.
    """
    started = time.monotonic()
    task.log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(task.log_path, "wb") as log:
        process = subprocess.Popen(task.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    _RUNNING.add(process)
    try:
        next_tick = started + 1.0
        while process.poll() is None:
            if cancel.wait(_POLL_S):
                _stop(process)
                return None
            if on_tick is not None and time.monotonic() >= next_tick:
                next_tick += 1.0
                on_tick(time.monotonic() - started)
    finally:
        _RUNNING.discard(process)
    seconds = time.monotonic() - started
    if process.returncode != 0 or not is_complete(task.out_dir):
        raise RenderFailedError(
            f"the OSCR render failed (exit code {process.returncode}): {_last_line(task.log_path)} "
            f"(the whole story is in {task.log_path})"
        )
    return read_rendered(task.out_dir, seconds, cached=False)


def render_view(
    layout: Layout,
    out_dir: Path,
    engine: str,
    blender_binary: str,
    cancel: threading.Event,
    on_tick: Callable[[float], None] | None = None,
) -> ViewCondition | None:
    """An upscale tile's view rendered in the background process (worker thread), as the tile's
    condition; None if `cancel` was set. The amodal masks (which boxes reach the tile) are the render's
    own, recomputed here: the same pure function, so nothing has to decode the mask PNGs."""
    found = reusable(out_dir, layout, engine)  # cut from a shared render (render_views), or kept
    if found is not None:
        return found.view_condition()
    oscr = run_render(render_task(layout, out_dir, engine, blender_binary), cancel, on_tick)
    return None if oscr is None else oscr.view_condition()


def render_views(
    whole: Layout,
    whole_dir: Path,
    crops: Sequence[ViewCrop],
    engine: str,
    blender_binary: str,
    cancel: threading.Event,
    on_tick: Callable[[float], None] | None = None,
) -> bool:
    """Tiles' views cut from one render of ``whole`` (render.render_views) in the background process
    (worker thread); False if `cancel` was set."""
    task = render_task(whole, Path(whole_dir), engine, blender_binary, crops)
    return run_render(task, cancel, on_tick) is not None


def _last_line(path: Path) -> str:
    """The child's last words: the error line of a traceback, or our own `error: ...` line."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as exc:
        return f"(its log cannot be read: {exc})"
    lines = [line.strip() for line in lines if line.strip()]
    return lines[-1][-_LAST_LINE_CHARS:] if lines else "(it printed nothing)"


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


# Renders still running when Blender quits are stopped with it, not left using every CPU core.
_RUNNING: set[subprocess.Popen] = set()


@atexit.register
def _stop_all() -> None:
    for process in list(_RUNNING):
        _stop(process)
