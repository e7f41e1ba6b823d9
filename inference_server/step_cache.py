"""Step cache (First-Block-Cache style) for the three-stream transformer: skip most of a step's blocks
when the first block says the step would barely change anything.

At every denoising step the first double-stream block runs as usual. Its image residual (output minus
input) is compared with the one of the last step that ran all blocks: when the mean absolute change,
relative to that residual's mean magnitude, is below ``threshold``, the remaining 56 blocks are not run
and the image stream gets the residual those blocks added at that last computed step. Otherwise all
blocks run and both residuals are kept. Threshold 0 never skips (the result equals no cache bit for
bit); about 0.1 skips a third to a half of the steps of a 28-step image (docs/performance.md).

The decision is a Python ``if`` between block calls, so compiled blocks (``compile.py``) stay whole
graphs; it reads one number back from the device per step. The condition stream (text | image |
condition) needs no special case: a skipped step skips its condition rows too, and the condition cache
(``ConditionCache``) is filled by the first step, which always runs every block.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class StepCache:
    """One request's step-cache state (``threshold``: the relative change below which a step reuses)."""

    threshold: float
    first_residual: torch.Tensor | None = None  # the first block's image residual at the last computed step
    rest_residual: torch.Tensor | None = None  # what the other blocks added to the image stream then
    computed: int = 0  # steps that ran every block
    reused: int = 0  # steps that ran only the first block

    def relative_change(self, first_residual: torch.Tensor) -> float:
        """mean |residual - kept residual| / mean |kept residual| (inf before any step was computed)."""
        if self.first_residual is None:
            return float("inf")
        kept = self.first_residual.float()
        change = (first_residual.float() - kept).abs().mean() / kept.abs().mean().clamp_min(1e-12)
        return float(change)  # one device-to-host read per step

    def reuse(self, first_residual: torch.Tensor) -> bool:
        """True when this step may skip the remaining blocks (counted); a threshold of 0 never does."""
        if self.threshold <= 0 or self.rest_residual is None:
            return False
        if self.relative_change(first_residual) < self.threshold:
            self.reused += 1
            return True
        return False

    def remember(self, first_residual: torch.Tensor, rest_residual: torch.Tensor) -> None:
        """Keep a computed step's residuals (counted)."""
        self.first_residual = first_residual
        self.rest_residual = rest_residual
        self.computed += 1
