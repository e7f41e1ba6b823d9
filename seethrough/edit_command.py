"""`seethrough edit NEW_LAYOUT --from PREVIOUS.png --out DIR`: regenerate only what a layout change touches.

Reads the previous picture and its generation record (layout, seed, steps, guidance) from the PNG, plans
the edit (seethrough_core.edit_plan: the region of the change, the settings), renders the new layout's
OSCR image, and asks the server for an edit of the previous picture inside that region (docs/edit.md).
After a camera move, each kept pixel is sampled once from the picture that generated it, found through
the previous picture's chain of edits (seethrough_core.edit_chain).
The result is written as DIR/NAME.png with its record (whose `parent` names the previous PNG by sha256
and holds its record), NAME.json, and the region as NAME_region.png (and, for a camera move, the
previous picture reprojected into the new camera as NAME_reprojected.png); a result already there is
kept and the new one is NAME_2.png (NAME_3.png ...) unless --overwrite.
"""

from __future__ import annotations

import argparse
import sys
import threading
from contextlib import ExitStack
from pathlib import Path

from seethrough_core.client import SeeThroughClient
from seethrough_core.edit_plan import (
    EditPlanError,
    PreviousPicture,
    PreviousPictureError,
    base_picture_of,
    plan_edit,
)
from seethrough_core.endpoint import EndpointError
from seethrough_core.errors import LayoutError, SeeThroughError
from seethrough_core.frame_reuse import frame_reuse
from seethrough_core.generate_and_save import (
    BASE_SUFFIX,
    Destination,
    base_path_for,
    generate_and_save,
    safe_name,
    unused_image_path,
)
from seethrough_core.generation_settings import SettingError
from seethrough_core.in_view import boxes_in_view
from seethrough_core.keys import KeyFileError
from seethrough_core.limits import DEFAULT_EDIT_MARGIN_PX, DEFAULT_EDIT_STRENGTH, DEFAULT_REPROJECT_LIMIT
from seethrough_core.protocol import GenerateRequest
from seethrough_core.server_away import ServerWait, send_until_done
from seethrough_core.server_process import LocalServerError
from seethrough_core.upscale_plan import base_layout, plan_upscale
from seethrough_core.upscale_run import Upscale, UpscaleRunner

from .frame_options import add_frame_arguments, check_frame_arguments
from .options import (
    ClientOptionError,
    add_client_arguments,
    add_engine_argument,
    add_retry_argument,
    add_size_arguments,
    client_options,
    server_endpoints,
    size_from_args,
)
from .previous_picture import read_previous

BASE_REMEDY = "put it back beside the frame, or generate the frame anew (seethrough batch)"


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "layout",
        help="the new layout: a .json file, a .blend authored with the add-on (its active camera at its "
        "current frame), or a result PNG saved by SeeThrough (the layout in its record)",
    )
    p.add_argument(
        "--from",
        dest="previous",
        required=True,
        type=Path,
        metavar="PREVIOUS.png",
        help="the picture to change: a PNG saved by SeeThrough (it carries its generation record)",
    )
    p.add_argument("--out", required=True, type=Path, help="output folder (required)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace DIR/NAME.png if it exists (default: keep it and write NAME_2.png, NAME_3.png ...)",
    )
    add_client_arguments(p)
    add_retry_argument(p, "the edit fails (a finished picture is kept)")
    p.add_argument(
        "--strength",
        type=float,
        default=DEFAULT_EDIT_STRENGTH,
        help="in (0, 1]: 1 regenerates the region from noise, lower keeps more of the previous picture "
        f"(default {DEFAULT_EDIT_STRENGTH:g})",
    )
    p.add_argument(
        "--margin",
        type=int,
        default=DEFAULT_EDIT_MARGIN_PX,
        metavar="PX",
        help=f"grow the region around the changed boxes by PX pixels (default {DEFAULT_EDIT_MARGIN_PX})",
    )
    p.add_argument(
        "--reproject-limit",
        type=float,
        default=DEFAULT_REPROJECT_LIMIT,
        metavar="SHARE",
        help="a camera move keeps the previous picture, reprojected, unless more than SHARE of it would "
        f"regenerate (0..1; 0: off; default {DEFAULT_REPROJECT_LIMIT})",
    )
    add_frame_arguments(p)
    p.add_argument(
        "--seed", type=int, help="the seed (default: the previous picture's seed; another seed varies it)"
    )
    add_engine_argument(p)
    add_size_arguments(p)


def run_edit(args: argparse.Namespace) -> int:
    # Blender is loaded only now: `seethrough --help` and argument errors stay instant.
    from blender_addon.render import render_or_reuse
    from blender_addon.render_process import read_layout

    layout_path = Path(args.layout)
    previous_path = Path(args.previous)
    try:
        check_frame_arguments(args)
        frame = size_from_args(args).apply(read_layout(layout_path))
        frame_plan = plan_upscale(frame.width, frame.height, seed=0, base_megapixels=args.base_megapixels)
        two_stages = frame_plan.two_stages
        # a frame made in two stages is edited at its base, then upscaled again (docs/upscale.md)
        layout = base_layout(frame, frame_plan) if two_stages else frame
        if two_stages:
            previous_path = base_picture_of(previous_path, remedy=BASE_REMEDY)
        previous = read_previous(previous_path)
        edited_frame = _edited_frame(Path(args.previous), previous_path)
        plan = plan_edit(
            previous,
            layout,
            margin_px=args.margin,
            strength=args.strength,
            seed=args.seed,
            reproject_limit=args.reproject_limit,
            chain=previous.chain(),
        )
        client_choice = client_options(args)
    except SettingError as exc:
        print(f"error: --{exc.field}: {exc.message}", file=sys.stderr)
        return 2
    except (
        PreviousPictureError,
        EditPlanError,
        LayoutError,
        EndpointError,
        KeyFileError,
        ClientOptionError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{layout_path.name} from {previous.label}: {plan.summary()}", file=sys.stderr, flush=True)

    stem = safe_name(layout_path.stem)
    conditions = f"{stem}{BASE_SUFFIX}" if two_stages else stem
    rendered = render_or_reuse(layout, args.out / "conditions" / conditions, engine=args.engine, quiet=True)
    view = boxes_in_view(rendered.token_grids)  # a box with a pixel in view has a grid cell
    note = view.note(layout.descriptions, layout_path.name)
    if note is not None:
        print(note, file=sys.stderr, flush=True)
    try:
        settings = view.settings(plan.settings)  # only the boxes the frame shows (in_view.py)
    except SeeThroughError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    request = GenerateRequest.for_settings(
        settings,
        rendered.oscr_path.read_bytes(),
        view.token_grids(rendered.token_grids),
        metadata={"input": str(layout_path), "edit_of": str(previous_path)},
        edit=plan.edit,
    )
    intended = args.out / f"{stem}.png"
    # the frame's name is chosen first: a two-stage frame's base is named after it (NAME_2_base.png)
    final_path = intended if args.overwrite else unused_image_path(intended)
    image_path = base_path_for(final_path) if two_stages else final_path
    plan = plan.saved_as(str(image_path))
    destination = Destination(
        image_path,
        {"input": str(layout_path), "camera": layout.camera.name},
        sidecar=True,
        parent=plan.parent,
        region=plan.region_mask,
        reprojected=plan.reprojected,
        out_of_view=view.left_out,
    )
    with ExitStack() as stack:
        try:
            (endpoint,) = stack.enter_context(server_endpoints(client_choice, args.out / "logs"))
            client = stack.enter_context(
                SeeThroughClient(endpoint, client_choice.timeout_s, keys=client_choice.keys)
            )
            client.info()  # a wrong address is said at once; a server that answered once is waited for
            wait = _server_wait(args.retry_for, client_choice.timeout_s)
            back = None if wait is None else lambda reason: wait(client, reason, threading.Event().wait)
            saved = send_until_done(
                lambda: generate_and_save(client, request, layout, destination),
                on_lost=lambda _: _note(f"server {endpoint} lost the edit (restarted?); sending it again"),
                server_back=back,
            )
        except (LocalServerError, SeeThroughError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\nstopped: nothing was written", file=sys.stderr)
            return 130
        if saved is not None and two_stages:
            try:
                saved = upscale_base(
                    saved, frame, args, client, final_path, edited_frame, previous, plan.region_mask, wait
                )
            except SeeThroughError as exc:
                print(f"error: {exc} (the edited base is kept at {saved.image_path})", file=sys.stderr)
                return 1
            except KeyboardInterrupt:
                print(f"\nstopped: the edited base is kept at {saved.image_path}", file=sys.stderr)
                return 130
    if saved is None:
        print("error: the job was cancelled", file=sys.stderr)
        return 1
    kept = "" if final_path == intended else f" ({intended.name} is kept; --overwrite replaces it)"
    print(f"wrote {saved.image_path}{kept}", file=sys.stderr)
    print(saved.image_path)
    return 0


def _edited_frame(path: Path, base_path: Path) -> PreviousPicture | None:
    """The frame the edit starts from, when it is not its own base: the tiles the edit does not reach keep
    its pixels (None: it cannot be read, so every tile is refined)."""
    if path == base_path:
        return None
    try:
        return read_previous(path)
    except PreviousPictureError:
        return None


def _note(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _server_wait(retry_s: float, timeout_s: float) -> ServerWait | None:
    """How the edit waits for a server that went away (None: --retry-for 0, it fails at once)."""
    return ServerWait(retry_s, timeout_s, _note, "sending it the job again") if retry_s > 0 else None


def upscale_base(
    saved, frame, args, client, out_path: Path, edited_frame=None, old_base=None, region=None, wait=None
):
    """The edited base made into the frame again (seethrough_core.upscale_run), on the same server; only
    the tiles the edit reaches when ``edited_frame`` (the frame edited, from ``old_base``) lends the rest.
    ``wait``: how a server that went away is waited for (server_away.ServerWait)."""
    from blender_addon.render import TileViews

    plan = plan_upscale(
        frame.width,
        frame.height,
        seed=saved.record.seed,
        base_megapixels=args.base_megapixels,
        strength=args.upscale_strength,
    )
    image = read_previous(saved.image_path).image
    steps, guidance = saved.record.steps, saved.record.guidance
    reuse = None
    if edited_frame is not None and old_base is not None:
        reuse = frame_reuse(
            edited_frame, old_base.image, image,
            plan=plan, frame_layout=frame, steps=steps, guidance=guidance, region=region,
        )  # fmt: skip
    upscale = Upscale(
        plan, frame, image, saved.record, out_path, steps, guidance,
        {**saved.record.source, "base": str(saved.image_path)}, reuse,
    )  # fmt: skip

    views = TileViews(args.engine)
    what = f"in {len(plan.tiles)} tiles" if reuse is None else f"({reuse.summary(plan)})"
    print(f"upscaling to {frame.width}x{frame.height} {what} ...", file=sys.stderr, flush=True)
    return UpscaleRunner(
        upscale, [client], views.view, render_views=views.shared, on_note=_note, server_back=wait
    ).run()
