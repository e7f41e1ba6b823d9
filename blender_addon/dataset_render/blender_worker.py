"""A background Blender process of `seethrough dataset make`.

Run as ``python -m blender_addon.dataset_render.blender_worker``.

It speaks JSON lines: one request per line on stdin, one reply per line on stdout. Blender's own
messages go to stderr (file descriptor 1 is moved there at start), so they never corrupt a reply.

Requests and replies:
  {"op": "load", "paths": [...], "primitives": bool}
      -> {"op": "loaded", "assets": [asset records], "problems": [{"source", "reason"}]}
  {"op": "render", "id", "dir", "layout", "assets": [asset id per box], "look", "samples", "engine"}
      -> {"op": "rendered", "id", "files": {...}, "visibility": [...],
          "timings": {"target_s", "oscr_s", "masks_s"}}
      or {"op": "failed", "id", "error"}
End of input: the process exits.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from pathlib import Path
from typing import TextIO


def main() -> int:
    replies = _claim_stdout()
    import bpy  # after the move: Blender may print while it loads

    from seethrough_core.dataset_scenes import TargetLook
    from seethrough_core.layout import Layout

    from .asset_library import AssetLibrary, load_library
    from .sample_render import render_sample

    bpy.ops.wm.read_factory_settings(use_empty=True)
    library = AssetLibrary()
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        op = request.get("op")
        if op == "load":
            library = load_library(list(request["paths"]), bool(request.get("primitives")))
            _reply(replies, {"op": "loaded", "assets": [a.record() for a in library.assets],
                             "problems": library.problems})  # fmt: skip
        elif op == "render":
            try:
                rendered = render_sample(
                    Layout.from_dict(request["layout"]),
                    list(request["assets"]),
                    library,
                    TargetLook.from_dict(request["look"]),
                    Path(request["dir"]),
                    samples=int(request["samples"]),
                    engine=str(request["engine"]),
                )
                _reply(replies, {"op": "rendered", "id": request["id"], **rendered})
            except Exception as exc:  # reported to the main process, which names the sample; keep serving
                traceback.print_exc(file=sys.stderr)
                _reply(
                    replies, {"op": "failed", "id": request["id"], "error": f"{type(exc).__name__}: {exc}"}
                )
        else:
            _reply(replies, {"op": "failed", "id": request.get("id"), "error": f"unknown request {op!r}"})
    return 0


def _claim_stdout() -> TextIO:
    """A private copy of stdout for the replies; file descriptor 1 then points at stderr."""
    sys.stdout.flush()
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8", buffering=1)
    os.dup2(2, 1)
    return replies


def _reply(stream: TextIO, message: dict) -> None:
    stream.write(json.dumps(message) + "\n")
    stream.flush()


if __name__ == "__main__":
    sys.exit(main())
