"""Joint attention over [text | image | condition] with SeeThrough3D's mask.

Who attends to whom (the same in every block and every step of one generation):
- text and image query rows attend to every key;
- condition query rows attend to every condition key, and a condition token inside box k's token
  mask also attends to box k's ``call_ids`` text tokens (the union where boxes overlap);
- condition rows never attend to image tokens nor to any other text token.

Three processors compute it. ``split`` (the default) is exact without a dense mask: text+image rows
run one unmasked SDPA over all keys (so the flash/cuDNN kernels apply to 80-90% of the query rows),
and condition rows run one SDPA over only the text keys some box can see plus the condition keys,
with a small additive mask [cond_len, visible + cond_len]. ``dense`` builds the full
[total x total] additive mask once per request and runs one masked SDPA. ``dense-rebuild`` is the
reference implementation's approach, kept as a benchmark baseline: it rebuilds that dense mask in every
block call of every step. A processor's ``prepare`` runs once per request; the returned callable is
shared by all blocks and steps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F  # noqa: N812 - the usual alias

# (query, key, value), each [batch, seq, heads, head_dim], in [text | image | condition] order
# -> attention output [batch, seq, heads * head_dim]
JointAttention = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttentionLayout:
    """The token layout of one request and which text tokens each box owns."""

    text_len: int
    image_len: int
    cond_len: int
    call_ids: Sequence[Sequence[int]]  # per box, positions in the text sequence
    box_token_masks: torch.Tensor  # bool [boxes, cond_len]: condition tokens inside each box

    def __post_init__(self) -> None:
        masks = self.box_token_masks
        if masks.dtype != torch.bool or masks.ndim != 2 or masks.shape[1] != self.cond_len:
            raise ValueError(
                f"box_token_masks must be bool [boxes, {self.cond_len}], got {masks.dtype} {masks.shape}"
            )
        if masks.shape[0] != len(self.call_ids):
            raise ValueError(f"{masks.shape[0]} box masks but {len(self.call_ids)} call_ids lists")
        for ids in self.call_ids:
            if any(not 0 <= index < self.text_len for index in ids):
                raise ValueError(f"call_ids {list(ids)} fall outside the {self.text_len} text tokens")

    @property
    def main_len(self) -> int:
        """Text plus image tokens: the rows that see everything."""
        return self.text_len + self.image_len

    @property
    def total_len(self) -> int:
        return self.text_len + self.image_len + self.cond_len


def condition_text_permissions(layout: AttentionLayout) -> torch.Tensor:
    """Bool [cond_len, text_len]: may condition token i attend to text token j?"""
    boxes = len(layout.call_ids)
    box_text = torch.zeros(boxes, layout.text_len, dtype=torch.float32)
    for box, ids in enumerate(layout.call_ids):
        box_text[box, list(ids)] = 1.0
    token_boxes = layout.box_token_masks.cpu().to(torch.float32)  # [boxes, cond_len]
    return (token_boxes.T @ box_text) > 0


def full_attention_permissions(layout: AttentionLayout) -> torch.Tensor:
    """Bool [total_len, total_len] of the whole mask (row = query, column = key)."""
    allowed = torch.ones(layout.total_len, layout.total_len, dtype=torch.bool)
    cond = slice(layout.main_len, layout.total_len)
    allowed[cond, :] = False
    allowed[cond, cond] = True
    allowed[cond, : layout.text_len] = condition_text_permissions(layout)
    return allowed


# The visible text keys of the condition rows are padded to a multiple of this (with keys nobody may
# see): a compiled graph is then reused for prompts with different box-description lengths, and the
# mask's last dimension (visible + 1024) stays 16-aligned, as the memory-efficient kernel wants it.
VISIBLE_TEXT_BUCKET = 64


def permissions_to_bias(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool permissions -> additive mask (0 where allowed, -inf elsewhere), the form SDPA's masked kernels
    consume; converting once per request saves SDPA a conversion in every call."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(~allowed, float("-inf"))


class AttentionProcessor(Protocol):
    name: str

    def prepare(
        self, layout: AttentionLayout, device: torch.device, dtype: torch.dtype
    ) -> JointAttention: ...


def _sdpa(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """SDPA on [batch, seq, heads, dim] tensors, returning the same layout."""
    out = F.scaled_dot_product_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_mask=mask
    )
    return out.transpose(1, 2)


def plain_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Unmasked attention of text+image query rows over any keys: [batch, seq, heads * head_dim].

    What the cached-condition steps run: there only text and image rows are computed, and those see
    every key, the cached condition keys included.
    """
    return _sdpa(query, key, value).flatten(2, 3)


class _DenseAttend:
    def __init__(self, bias: torch.Tensor) -> None:
        self.bias = bias  # additive [total_len, total_len]: 0 where allowed, -inf elsewhere

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return _sdpa(query, key, value, self.bias).flatten(2, 3)


class DenseMaskAttention:
    """Straightforward formulation: one SDPA call with the full additive mask, built once per request."""

    name = "dense"

    def prepare(self, layout: AttentionLayout, device: torch.device, dtype: torch.dtype) -> JointAttention:
        return _DenseAttend(permissions_to_bias(full_attention_permissions(layout).to(device), dtype))


class _RebuildingDenseAttend:
    def __init__(self, layout: AttentionLayout, device: torch.device, dtype: torch.dtype) -> None:
        self.layout = layout
        self.box_token_masks = layout.box_token_masks.to(device)
        self.device = device
        self.dtype = dtype

    def _bias(self) -> torch.Tensor:
        """The dense additive mask, rebuilt the way the reference builds it in every block call: a float32
        [total x total] "blocked" matrix, per box a masked assignment on the device (boolean indexing, which
        waits for the GPU), then scaled to a huge negative number and cast to the compute dtype."""
        layout, main = self.layout, self.layout.main_len
        blocked = torch.ones(layout.total_len, layout.total_len, device=self.device)
        blocked[:main] = 0  # text and image rows see every key
        blocked[main:, main:] = 0  # condition rows see every condition key ...
        for box, ids in enumerate(layout.call_ids):  # ... and the text of the boxes they lie in
            columns = torch.tensor(list(ids), dtype=torch.long, device=self.device)
            subset = blocked[main:, columns]
            subset[self.box_token_masks[box]] = 0
            blocked[main:, columns] = subset
        return (blocked * -1e20).to(self.dtype)

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return _sdpa(query, key, value, self._bias()).flatten(2, 3)


class DenseRebuildAttention:
    """Benchmark baseline: the reference's approach, the dense mask rebuilt in every block of every step."""

    name = "dense-rebuild"

    def prepare(self, layout: AttentionLayout, device: torch.device, dtype: torch.dtype) -> JointAttention:
        return _RebuildingDenseAttend(layout, device, dtype)


class _SplitAttend:
    def __init__(self, main_len: int, text_keys: torch.Tensor | None, cond_mask: torch.Tensor | None) -> None:
        self.main_len = main_len
        self.text_keys = text_keys  # long [U]: text positions some box can see (padded), or None
        self.cond_mask = cond_mask  # additive [cond_len, U + cond_len], or None when nothing is masked

    def __call__(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        main = _sdpa(query[:, : self.main_len], key, value)
        cond_key = key[:, self.main_len :]
        cond_value = value[:, self.main_len :]
        if self.text_keys is not None:
            cond_key = torch.cat([key.index_select(1, self.text_keys), cond_key], dim=1)
            cond_value = torch.cat([value.index_select(1, self.text_keys), cond_value], dim=1)
        cond = _sdpa(query[:, self.main_len :], cond_key, cond_value, self.cond_mask)
        return torch.cat([main, cond], dim=1).flatten(2, 3)


class SplitConditionAttention:
    """Exact and fast: unmasked SDPA for text+image rows, a small masked SDPA for condition rows."""

    name = "split"

    def prepare(self, layout: AttentionLayout, device: torch.device, dtype: torch.dtype) -> JointAttention:
        permissions = condition_text_permissions(layout)  # [cond_len, text_len]
        visible = permissions.any(dim=0).nonzero().flatten()
        if visible.numel() == 0:
            return _SplitAttend(layout.main_len, None, None)  # condition rows see only condition keys
        padding = -visible.numel() % VISIBLE_TEXT_BUCKET
        allowed_text = permissions[:, visible]
        if padding:  # extra copies of text key 0 that no condition row may see
            visible = torch.cat([visible, visible.new_zeros(padding)])
            allowed_text = torch.cat([allowed_text, allowed_text.new_zeros(layout.cond_len, padding)], dim=1)
        cond_self = torch.ones(layout.cond_len, layout.cond_len, dtype=torch.bool)
        cond_mask = permissions_to_bias(torch.cat([allowed_text, cond_self], dim=1).to(device), dtype)
        return _SplitAttend(layout.main_len, visible.to(device), cond_mask)


ATTENTION_PROCESSORS: dict[str, type[AttentionProcessor]] = {
    SplitConditionAttention.name: SplitConditionAttention,
    DenseMaskAttention.name: DenseMaskAttention,
    DenseRebuildAttention.name: DenseRebuildAttention,
}
DEFAULT_ATTENTION = SplitConditionAttention.name
