"""Size templates for Add Box: typical real-world sizes of everyday objects, in metres.

The data lives once, in the repository's ``assets/size_templates.json``; ``seethrough build-addon``
copies it into the extension as ``assets/size_templates.json`` beside this module. So the file is
found next to the installed add-on first, then at the repository root (running from a checkout).
No bpy here: the build and plain tests read it too.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

FORMAT = "seethrough.size_templates"
FILENAME = "size_templates.json"
_HERE = Path(__file__).resolve().parent
SEARCH_PATHS = (_HERE / "assets" / FILENAME, _HERE.parent / "assets" / FILENAME)


@dataclass(frozen=True)
class SizeTemplate:
    id: str
    label: str
    description: str  # the default description of a box made from it
    size: tuple[float, float, float]  # width (local X), depth (local Y, front to back), height (Z)


class TemplateError(ValueError):
    """The templates file is missing or malformed (a packaging bug, named with its path)."""


def templates_path() -> Path:
    for path in SEARCH_PATHS:
        if path.is_file():
            return path
    raise TemplateError(f"{FILENAME} not found; looked in: {', '.join(str(p) for p in SEARCH_PATHS)}")


@functools.cache
def load_templates(path: Path | None = None) -> tuple[SizeTemplate, ...]:
    path = path or templates_path()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TemplateError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise TemplateError(f"{path}: expected a {FORMAT!r} file")
    templates = []
    for i, raw in enumerate(data.get("templates", [])):
        try:
            size = tuple(float(v) for v in raw["size"])
            template = SizeTemplate(str(raw["id"]), str(raw["label"]), str(raw["description"]), size)
        except (KeyError, TypeError, ValueError) as exc:
            raise TemplateError(f"{path}: templates[{i}] is malformed ({exc})") from None
        if len(size) != 3 or not all(math.isfinite(v) and v > 0 for v in size):
            raise TemplateError(f"{path}: templates[{i}].size must be 3 positive numbers")
        templates.append(template)
    if not templates:
        raise TemplateError(f"{path}: no templates")
    ids = [t.id for t in templates]
    if len(set(ids)) != len(ids):
        raise TemplateError(f"{path}: template ids must be unique")
    return tuple(templates)


def get_template(template_id: str) -> SizeTemplate:
    for template in load_templates():
        if template.id == template_id:
            return template
    raise TemplateError(f"unknown size template {template_id!r}")
