"""The Generate panel's settings as a plain object, read once when a button is pressed.

Everything that makes a job's spec takes this object, never the scene's properties: a job is made of
the settings as they were when the artist pressed the button, and Generate Frames makes every frame
of a shot with the settings of its press, whatever the panel says while the shot runs.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import bpy

from seethrough_core.record import GenerationRecord

from .props import MAX_UI_SEED


@dataclass(frozen=True)
class PanelSettings:
    seed: int  # the panel's seed, or the one drawn for this press when Random is on
    steps: int
    guidance: float
    preview_interval: int  # 1: a preview every step, 0: none
    upscale_to_render: bool
    base_megapixels: float
    upscale_strength: float
    edit_margin: int
    edit_strength: float
    reproject_limit: float

    @classmethod
    def of(cls, scene: bpy.types.Scene) -> PanelSettings:
        props = scene.seethrough
        return cls(
            seed=random.randint(0, MAX_UI_SEED) if props.random_seed else props.seed,
            steps=props.steps,
            guidance=props.guidance,
            preview_interval=1 if props.show_previews else 0,
            upscale_to_render=props.upscale_to_render,
            base_megapixels=props.base_megapixels,
            upscale_strength=props.upscale_strength,
            edit_margin=props.edit_margin,
            edit_strength=props.edit_strength,
            reproject_limit=props.reproject_limit,
        )

    def shot_settings(self) -> dict[str, Any]:
        """What a Generate Frames shot's frames are made with, as each frame's record keeps it: a rerun
        keeps a frame only when they are the same (EDIT_SETTINGS only for a frame that is an edit; the
        upscale's only when it is on)."""
        made = {
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "upscale to render size": self.upscale_to_render,
            "edit strength": self.edit_strength,
            "edit margin": self.edit_margin,
            "reproject limit": self.reproject_limit,
        }
        if self.upscale_to_render:
            made |= {"base size": self.base_megapixels, "upscale strength": self.upscale_strength}
        return made


EDIT_SETTINGS = ("edit strength", "edit margin", "reproject limit")  # of shot_settings: only edits use them


def use_record_settings(scene: bpy.types.Scene, record: GenerationRecord) -> str:
    """Set the Generate panel to make a picture as ``record``'s was made: its seed (Random off), steps and
    guidance; returns what was set, for the report."""
    props = scene.seethrough
    if 0 <= record.seed <= MAX_UI_SEED:
        props.seed, props.random_seed = record.seed, False
        seed = f"seed {record.seed}"
    else:
        seed = f"seed {record.seed} is beyond the seed field: Random Seed is left as it was"
    props.steps, props.guidance = record.steps, record.guidance
    return f"{seed}, {record.steps} steps, guidance {record.guidance:g}"
