"""Gradient checkpointing of the transformer blocks: each block's activations are recomputed in the
backward pass instead of kept, which is what lets FLUX train on one GPU. It wraps the same block
functions the server runs (``transformer.BlockRunners``), so training and inference share one forward."""

from __future__ import annotations

from functools import partial

from torch.utils.checkpoint import checkpoint

from ..transformer import EAGER_RUNNERS, BlockRunners


def checkpointed_runners(runners: BlockRunners = EAGER_RUNNERS) -> BlockRunners:
    """``runners`` with the full (uncached) double- and single-stream blocks checkpointed."""
    return BlockRunners(
        double=partial(checkpoint, runners.double, use_reentrant=False),
        single=partial(checkpoint, runners.single, use_reentrant=False),
        double_cached=runners.double_cached,  # the condition cache is an inference shortcut: never trained
        single_cached=runners.single_cached,
    )
