"""An edit of the shown result as a job carries it (no bpy: the job's thread plans and sends it).

Regenerate Changed is planned on the job's thread: after a camera move, reprojecting the shown result
and walking back through the pictures it was edited from take seconds at 1024 px, and Blender's main
thread does not wait for them. The main thread checks the request first (nothing changed, a setting
out of range), so what can be refused at once still is.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from seethrough_core.edit_input import EditInput
from seethrough_core.edit_plan import EditPlan, PreviousPicture, changed_layout, edit_settings, plan_edit
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.layout import Layout


@dataclass(frozen=True)
class ResultEdit:
    """A generation made from an earlier result (edit_plan.EditPlan, plus the result's name)."""

    kind: str  # "edit", "reprojected", "variation" or "regeneration", as in the record's parent
    parent_image: str  # the earlier result's image, for the history
    edit: EditInput | None  # None: regenerated whole (the camera or size changed)
    parent: dict[str, Any]  # the new record's `parent`
    region: np.ndarray | None  # the edit's mask, saved beside the image
    summary: str  # what changed, for the history and the panel
    reprojected: np.ndarray | None = None  # a camera move: the picture the edit started from, saved beside

    @classmethod
    def of(cls, plan: EditPlan, parent_image: str) -> ResultEdit:
        kind = str(plan.parent["kind"])
        summary = plan.summary()
        if kind == "variation":
            summary = f"new noise in {plan.parent['box']}" + (
                f"; {summary}" if plan.change.boxes else f" ({plan.change.region.mean():.1%} of the picture)"
            )
        return cls(kind, parent_image, plan.edit, plan.parent, plan.region_mask, summary, plan.reprojected)


@dataclass(frozen=True)
class EditRequest:
    """Regenerate Changed before its plan: the picture edited, the scene's layout and the edit settings."""

    previous: PreviousPicture
    parent_image: str  # the shown result's image, for the history
    layout: Layout
    margin_px: int
    strength: float
    preview_interval: int
    reproject_limit: float
    draft: bool = False  # a frame of Draft Frames: the draft speed options (GenerationSettings.draft)

    def check(self) -> GenerationSettings:
        """The generation settings, after the quick checks (main thread): EditPlanError when nothing
        changed, SettingError for a setting out of its rules."""
        changed_layout(self.previous, self.layout, self.margin_px)
        settings = edit_settings(self.previous, self.layout, preview_interval=self.preview_interval)
        return settings.draft() if self.draft else settings

    def plan(self) -> EditPlan:
        """The plan (the job's thread): the region to regenerate, after a camera move the reprojection,
        each kept pixel sampled from the picture of the chain that generated it."""
        plan = plan_edit(
            self.previous,
            self.layout,
            margin_px=self.margin_px,
            strength=self.strength,
            preview_interval=self.preview_interval,
            reproject_limit=self.reproject_limit,
            chain=self.previous.chain(),
        )
        return replace(plan, settings=plan.settings.draft()) if self.draft else plan
