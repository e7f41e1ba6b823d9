"""The add-on's renders made ahead (blender_addon/render_ahead.py): their order, a job's renders taken
back when it ends, and a render claimed through any folder it fills. The renders themselves are
recorded instead of run: what is checked is which render the queue starts, and when."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from conftest import BASE_LAYOUT

from blender_addon import render_ahead
from blender_addon.background_render import RenderTask
from seethrough_core.layout import Layout

pytestmark = pytest.mark.each_blender  # the add-on's own threads, under each Blender's Python


def task(folder: Path, *cuts: Path) -> RenderTask:
    return RenderTask([], folder, folder.with_suffix(".log"), Layout.from_dict(BASE_LAYOUT), "cycles", cuts)


def rendered_in_order(monkeypatch, fill) -> list[str]:
    """The folders a fresh queue renders, in order, after ``fill(queue)`` ran while a job held it."""
    done: list[str] = []
    monkeypatch.setattr(render_ahead, "run_render", lambda task, stop: done.append(task.out_dir.name))
    ahead = render_ahead.RenderAhead()
    with ahead.held():  # nothing starts until the job's own render is over
        fill(ahead)
    deadline = time.monotonic() + 30
    while ahead.busy and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the queue for its end
    assert not ahead.busy
    return done


def test_a_jobs_tile_views_go_before_the_next_frames_renders(tmp_path, monkeypatch):
    def fill(ahead):
        ahead.queue([task(tmp_path / "frame2"), task(tmp_path / "frame3")])
        ahead.queue([task(tmp_path / "tile"), task(tmp_path / "shared")], first=True)

    assert rendered_in_order(monkeypatch, fill) == ["tile", "shared", "frame2", "frame3"]


def test_an_ended_jobs_renders_are_taken_back_and_the_others_go_on(tmp_path, monkeypatch):
    def fill(ahead):
        ahead.queue([task(tmp_path / name) for name in ("frame2", "tile", "shared", "frame3")])
        ahead.forget([tmp_path / "tile", tmp_path / "shared"])

    assert rendered_in_order(monkeypatch, fill) == ["frame2", "frame3"]


def test_a_view_cut_from_a_queued_render_claims_that_render(tmp_path, monkeypatch):
    """A job about to render a tile's view itself takes back the shared render that would cut it."""
    crop = tmp_path / "views" / "tile_r00_c01"

    def fill(ahead):
        ahead.queue([task(tmp_path / "views" / "shared", crop), task(tmp_path / "frame2")])
        ahead.claim(crop, threading.Event())

    assert rendered_in_order(monkeypatch, fill) == ["frame2"]


def test_forgetting_a_render_in_progress_stops_it(tmp_path, monkeypatch):
    started, stopped = threading.Event(), threading.Event()

    def render(task, stop):
        started.set()
        if stop.wait(30):
            stopped.set()

    monkeypatch.setattr(render_ahead, "run_render", render)
    ahead = render_ahead.RenderAhead()
    ahead.queue([task(tmp_path / "tile")])
    assert started.wait(30)
    ahead.forget([tmp_path / "tile"])
    assert stopped.wait(30)
