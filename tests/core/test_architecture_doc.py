"""docs/architecture.md names every module of the three rooms and the command line, in its room."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOMS = ("seethrough_core", "blender_addon", "inference_server", "seethrough")


def room_sections(text: str) -> dict[str, str]:
    """Each room's part of the module map: from its header line to the next room's."""
    starts = {room: re.search(rf"^{room}/ ", text, re.M) for room in ROOMS}
    missing = [room for room, match in starts.items() if match is None]
    assert not missing, f"docs/architecture.md has no section for {missing}"
    ordered = sorted((match.start(), room) for room, match in starts.items())
    ends = [start for start, _ in ordered[1:]] + [text.index("```", ordered[-1][0])]
    return {room: text[start:end] for (start, room), end in zip(ordered, ends, strict=True)}


def test_every_module_is_in_the_architecture_map():
    sections = room_sections((ROOT / "docs" / "architecture.md").read_text(encoding="utf-8"))
    unlisted = []
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            if path.name == "__init__.py" or "__pycache__" in path.parts:
                continue
            folder = path.parent.relative_to(ROOT / room).as_posix()
            section = sections[room]
            if path.name not in section or (folder != "." and f"{folder}/" not in section):
                unlisted.append(path.relative_to(ROOT).as_posix())
    assert not unlisted, (
        "add these modules to docs/architecture.md, under their room, with a line saying what each is "
        f"for: {unlisted}"
    )
