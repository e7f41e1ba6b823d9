"""What was generated and how: one record, stored beside every image.

The batch command writes it as a JSON sidecar and into the PNG's metadata; the Blender add-on
stores it on the image datablock. One definition, so every finished image can be reproduced.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .layout import Layout

RECORD_FORMAT = "seethrough.generation"
RECORD_VERSION = 1
PNG_KEY = "seethrough"  # iTXt key holding the whole record as JSON


@dataclass
class GenerationRecord:
    prompt: str  # the exact prompt the text encoders saw
    scene_prompt: str
    descriptions: list[str]
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    model: dict[str, Any]
    lora: dict[str, Any] | None
    is_noise: bool  # True when a random-weight model (seethrough serve --tiny) made it
    call_ids: list[list[int]]
    timings: dict[str, float]
    layout: dict[str, Any]
    source: dict[str, Any] = field(default_factory=dict)  # input file, camera, frame, server
    oscr_jpeg_quality: int | None = None  # the JPEG round trip the server gave the OSCR image (None: none)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    @classmethod
    def from_result(
        cls, result: Any, layout: Layout, source: dict[str, Any] | None = None
    ) -> GenerationRecord:
        """A record of a protocol `Result` for a layout."""
        height, width = result.image.shape[:2]
        return cls(
            prompt=result.prompt,
            scene_prompt=layout.scene_prompt,
            descriptions=layout.descriptions,
            seed=result.seed,
            steps=result.steps,
            guidance=result.guidance,
            width=width,
            height=height,
            model=dict(result.model),
            lora=dict(result.lora) if result.lora is not None else None,
            is_noise=result.is_noise,
            call_ids=[list(ids) for ids in result.call_ids],
            timings={**result.timings, **{f"model_{k}": v for k, v in result.model_timings.items()}},
            layout=layout.to_dict(),
            source=dict(source or {}),
            oscr_jpeg_quality=result.oscr_jpeg_quality,
        )

    def to_dict(self) -> dict[str, Any]:
        return {"format": RECORD_FORMAT, "version": RECORD_VERSION, **asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1, ensure_ascii=False) + "\n"

    def png_text(self) -> dict[str, str]:
        """PNG text chunks: the whole record, plus the fields image viewers show."""
        comment = f"seed {self.seed}, {self.steps} steps, guidance {self.guidance}"
        if self.is_noise:
            comment += " (random tiny model: noise)"
        return {
            # ASCII-escaped: Blender rewrites PNG text as Latin-1 when it saves an image again.
            PNG_KEY: json.dumps(self.to_dict(), ensure_ascii=True),
            "Description": self.prompt,
            "Software": "SeeThrough Studio",
            "Comment": comment,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GenerationRecord:
        if data.get("format") != RECORD_FORMAT:
            raise ValueError(f"not a SeeThrough generation record (format {data.get('format')!r})")
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)
