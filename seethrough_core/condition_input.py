"""The condition of one generation: its OSCR image and its boxes' masks on the token grid.

The pipeline's entry (``SeeThroughPipeline.generate``) takes it beside the settings and the optional
edit; the protocol's `generate` request gives it (`GenerateRequest.condition`), pooling full-size masks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ConditionInput:
    oscr_image: np.ndarray  # uint8 H x W x 3, the OSCR render
    token_grids: np.ndarray  # bool N x 32 x 32, one per box in the order of the descriptions
    # Pass the OSCR image through JPEG at the profile's quality first, as the checkpoint's training
    # renders were saved; False: the pixels as sent (e.g. an image already saved that way).
    jpeg_round_trip: bool = True
