"""Every limit and default of a generation request, in one table.

The layout schema, the wire protocol, the server, the pipeline, the add-on's properties and the
command line all read these; none of them writes a limit or a default of its own.
"""

from __future__ import annotations

from .token_grid import GRID_SIZE

# The layout
MAX_BOXES = 16
MIN_SIDE = 256  # output width and height, px
MAX_SIDE = 2048
SIDE_MULTIPLE = 16  # FLUX works on 16 px patches
MAX_DESCRIPTION_CHARS = 300
MAX_BOX_SIDE_M = 1000.0
MAX_LIGHT_SEED = 2**31 - 1


def side_problem(side: int) -> str | None:
    """What is wrong with an output side (integer px), or None: the rule layouts and requests share."""
    if not MIN_SIDE <= side <= MAX_SIDE:
        return f"{side} px is outside {MIN_SIDE}..{MAX_SIDE}"
    if side % SIDE_MULTIPLE:
        lower = side // SIDE_MULTIPLE * SIDE_MULTIPLE
        return (
            f"{side} px is not a multiple of {SIDE_MULTIPLE} (FLUX works on 16 px patches); "
            f"use {lower} or {lower + SIDE_MULTIPLE}"
        )
    return None


# The frame an artist renders, and the upscale that reaches it from a base picture (docs/upscale.md)
MIN_FRAME_SIDE = 16
MAX_FRAME_SIDE = 8192
MEGAPIXEL = 1024 * 1024  # as the model counts: 1.0 megapixel is its native 1024 x 1024
DEFAULT_BASE_MEGAPIXELS = 1.0  # the model's sweet spot (the LoRA was trained at 512 and 1024 px)
MIN_BASE_MEGAPIXELS = 0.0625  # 256 x 256
MAX_BASE_MEGAPIXELS = 4.0  # 2048 x 2048
DEFAULT_UPSCALE_STRENGTH = 0.35  # how far each tile's img2img starts from noise: low keeps the base
UPSCALE_OVERLAP_FRACTION = 0.125  # the least overlap of neighbouring tiles, as a share of the tile side


def frame_side_problem(side: int) -> str | None:
    """What is wrong with a final frame side (integer px), or None: any size, up to the upscale's limit."""
    if not MIN_FRAME_SIDE <= side <= MAX_FRAME_SIDE:
        return f"{side} px is outside {MIN_FRAME_SIDE}..{MAX_FRAME_SIDE}"
    return None


# A generation
MAX_SCENE_PROMPT_CHARS = 2000  # the composed prompt must also fit the model's 512 T5 tokens
MAX_STEPS = 100
MAX_GUIDANCE = 30.0
MAX_SEED = 2**32 - 1
MAX_PREVIEW_INTERVAL = MAX_STEPS

# The reference implementation's generation defaults
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 3.5
DEFAULT_SIDE = 1024
# Step cache (docs/performance.md): a step reuses the previous step's work of all blocks but the first
# when the first block's output changed by less than this fraction. 0 computes every step (exact).
MAX_STEP_CACHE = 1.0
# The draft preset: a quick look at a layout (the add-on's Draft button, `--draft`)
DRAFT_SIDE = 512  # the longer side of a draft, px
DRAFT_STEP_CACHE = 0.1  # the step cache's threshold in a draft

# `seethrough batch` against its servers
DEFAULT_SERVER_RETRY_S = 300.0  # how long a server that went away is tried again (--retry-for)
JOB_RESUBMITS = 3  # how often one job is sent again to servers that lost it (restarted) before it fails
RETRY_FIRST_S = 1.0  # the first wait before asking a server that went away again; doubles each time
RETRY_LONGEST_S = 30.0

# Regional regeneration (an edit of a previous result; docs/edit.md)
DEFAULT_EDIT_STRENGTH = 1.0  # 1: the region starts from pure noise; lower keeps more of the previous image
DEFAULT_EDIT_MARGIN_PX = 24  # the region of a layout change grows by this much around the changed boxes
MAX_EDIT_MARGIN_PX = 512
EDIT_FEATHER_PX = 4  # the composite fades the new pixels in over this many pixels inside the mask
# An edit of a frame made in two stages: the refined tiles fade into the previous frame around what the
# edit changed over this share of a tile's side (32 frame pixels with the default 1024 px tiles;
# frame_reuse.py).
REUSE_FEATHER_TILE_SHARE = 1 / 32
DEFAULT_REPROJECT_LIMIT = 0.5  # a camera move regenerating more of the picture than this is a new picture
# An edit after a camera move (and a resumed --consistent shot) reads back up to this many saved pictures
# to find where its pixels were generated (edit_chain.py); older pixels come from the oldest of them.
RESUME_SOURCES_FRAMES = 24
# Pixel sources of pictures planned in this process (the add-on's edits) kept for the next edit of one,
# which then replays no chain: about 20 MB each at 1024 px.
KNOWN_SOURCES_KEPT = 4

# Messages on the wire. A largest legal request (2048 px OSCR image and 16 full-size 2048 px masks) is
# about 80 MB.
MAX_FRAMES = 8
MAX_HEADER_BYTES = 1 << 20
MAX_MESSAGE_BYTES = 96 << 20
MAX_ID_CHARS = 128
# What jobs waiting in a server's queue may hold (their images and masks, PNG/JPEG files still
# encoded): per client, about one maximum message; in all, a few. Beyond it: `queue_full`.
MAX_QUEUED_BYTES_PER_CLIENT = MAX_MESSAGE_BYTES
MAX_QUEUED_BYTES = 4 * MAX_MESSAGE_BYTES
MIN_IMAGE_SIDE = GRID_SIZE  # OSCR images and full-size masks: at least one pixel per token cell
MAX_IMAGE_SIDE = 4096

# Training (`seethrough train`): the reference recipe's values
TRAIN_RANK = 128
TRAIN_LEARNING_RATE = 1e-4
TRAIN_WARMUP_STEPS = 500
TRAIN_STEPS = 25_000  # stage 1 at 512 px; stage 2 is 5,000 more at 1024 px
TRAIN_BATCH = 2
TRAIN_RESOLUTIONS = (512, 1024)
TRAIN_CAPTION_DROPOUT = 0.1
TRAIN_GUIDANCE = 1.0  # FLUX.1-dev's guidance embedding during training
TRAIN_WEIGHT_DECAY = 1e-4
TRAIN_MAX_GRAD_NORM = 1.0
TRAIN_AMODAL_WEIGHT = 2.0  # --loss amodal-balanced: extra weight of a fully hidden object's visible pixels
TRAIN_CHECKPOINT_EVERY = 1000
