"""The SeeThrough3D attention mask: the fast split processor, the dense one and the dense-rebuild baseline
against a plain softmax computed here from the rules, with overlapping boxes."""

import math

import pytest
import torch

from inference_server import attention as attention_module
from inference_server.attention import (
    VISIBLE_TEXT_BUCKET,
    AttentionLayout,
    DenseMaskAttention,
    DenseRebuildAttention,
    SplitConditionAttention,
    condition_text_permissions,
    plain_attention,
)

TEXT, IMAGE, COND, HEADS, DIM = 24, 20, 16, 2, 8
CPU = torch.device("cpu")


def make_layout(call_ids, cond_rows) -> AttentionLayout:
    masks = torch.zeros(len(call_ids), COND, dtype=torch.bool)
    for box, rows in enumerate(cond_rows):
        masks[box, list(rows)] = True
    return AttentionLayout(TEXT, IMAGE, COND, call_ids, masks)


OVERLAPPING = make_layout(
    call_ids=[[3, 4, 5], [7], [9, 10]],
    cond_rows=[
        range(0, 8),
        range(5, 12),
        range(10, 14),
    ],  # 5-7 in boxes 0+1, 10-11 in boxes 1+2; 14-15 in none
)


def explicit_attention(layout: AttentionLayout, query, key, value) -> torch.Tensor:
    """Softmax attention with the mask written out rule by rule."""
    total = layout.total_len
    cond_start = layout.text_len + layout.image_len
    allowed = torch.zeros(total, total, dtype=torch.bool)
    for row in range(total):
        if row < cond_start:
            allowed[row, :] = True  # text and image rows see every key
            continue
        allowed[row, cond_start:] = True  # condition rows see all condition keys ...
        for box, ids in enumerate(layout.call_ids):
            if layout.box_token_masks[box, row - cond_start]:
                allowed[row, list(ids)] = True  # ... and the text of every box they lie in
    q, k, v = (tensor.transpose(1, 2).double() for tensor in (query, key, value))
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    weights = scores.masked_fill(~allowed, float("-inf")).softmax(dim=-1)
    return (weights @ v).transpose(1, 2).flatten(2, 3).float()


def random_qkv(layout: AttentionLayout, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    shape = (1, layout.total_len, HEADS, DIM)
    return [torch.randn(shape, generator=generator) * 2 for _ in range(3)]


PROCESSORS = [SplitConditionAttention(), DenseMaskAttention(), DenseRebuildAttention()]


@pytest.mark.parametrize("processor", PROCESSORS, ids=lambda p: p.name)
@pytest.mark.parametrize(
    "layout",
    [
        OVERLAPPING,
        make_layout([[0, 1]], [range(COND)]),  # one box covering every condition token
        make_layout([[2], [5, 6]], [[], []]),  # boxes that cover no condition token
    ],
    ids=["overlapping", "full-box", "empty-boxes"],
)
def test_processor_matches_explicit_softmax(processor, layout):
    query, key, value = random_qkv(layout)
    expected = explicit_attention(layout, query, key, value)
    got = processor.prepare(layout, CPU, torch.float32)(query, key, value)
    assert got.shape == (1, layout.total_len, HEADS * DIM)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_split_equals_dense_and_the_rebuilding_baseline():
    query, key, value = random_qkv(OVERLAPPING, seed=3)
    split = SplitConditionAttention().prepare(OVERLAPPING, CPU, torch.float32)(query, key, value)
    dense = DenseMaskAttention().prepare(OVERLAPPING, CPU, torch.float32)(query, key, value)
    rebuilt = DenseRebuildAttention().prepare(OVERLAPPING, CPU, torch.float32)(query, key, value)
    torch.testing.assert_close(split, dense, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rebuilt, dense, atol=1e-6, rtol=1e-6)


class SdpaSpy:
    """Records (query rows, key count, mask shape or None) of every SDPA call and the masks themselves."""

    def __init__(self, monkeypatch) -> None:
        self.calls: list[tuple[int, int, tuple | None]] = []
        self.masks: list[torch.Tensor | None] = []
        real = attention_module.F.scaled_dot_product_attention

        def spy(query, key, value, attn_mask=None, **kwargs):
            mask_shape = None if attn_mask is None else tuple(attn_mask.shape)
            self.calls.append((query.shape[-2], key.shape[-2], mask_shape))
            self.masks.append(attn_mask)
            return real(query, key, value, attn_mask=attn_mask, **kwargs)

        monkeypatch.setattr(attention_module.F, "scaled_dot_product_attention", spy)


def test_split_runs_text_and_image_rows_without_any_mask(monkeypatch):
    attend = SplitConditionAttention().prepare(OVERLAPPING, CPU, torch.float32)
    spy = SdpaSpy(monkeypatch)
    attend(*random_qkv(OVERLAPPING))
    main, cond = spy.calls
    assert main == (TEXT + IMAGE, OVERLAPPING.total_len, None)  # all text+image rows, every key, no mask
    # condition rows: the 6 visible text keys padded to one bucket, then the condition keys; a small mask
    assert cond == (COND, VISIBLE_TEXT_BUCKET + COND, (COND, VISIBLE_TEXT_BUCKET + COND))


def test_dense_baselines_pass_the_full_mask_and_rebuild_it_in_every_call(monkeypatch):
    once = DenseMaskAttention().prepare(OVERLAPPING, CPU, torch.float32)
    rebuild = DenseRebuildAttention().prepare(OVERLAPPING, CPU, torch.float32)
    spy = SdpaSpy(monkeypatch)
    for _ in range(3):
        once(*random_qkv(OVERLAPPING))
        rebuild(*random_qkv(OVERLAPPING))
    total = OVERLAPPING.total_len
    assert spy.calls == [(total, total, (total, total))] * 6
    once_masks, rebuilt_masks = spy.masks[0::2], spy.masks[1::2]
    assert all(mask is once_masks[0] for mask in once_masks)  # built once per request
    assert len({id(mask) for mask in rebuilt_masks}) == 3  # a new mask in every call ...
    blocked = once_masks[0].isinf()
    assert all(torch.equal(mask < -1e19, blocked) for mask in rebuilt_masks)  # ... with the same pattern


def test_plain_attention_is_what_text_and_image_rows_get():
    query, key, value = random_qkv(OVERLAPPING, seed=7)
    full = SplitConditionAttention().prepare(OVERLAPPING, CPU, torch.float32)(query, key, value)
    main = OVERLAPPING.main_len
    torch.testing.assert_close(plain_attention(query[:, :main], key, value), full[:, :main])


def test_overlapping_boxes_see_the_union_of_their_texts():
    permissions = condition_text_permissions(OVERLAPPING)
    visible = lambda row: permissions[row].nonzero().flatten().tolist()  # noqa: E731
    assert visible(0) == [3, 4, 5]
    assert visible(6) == [3, 4, 5, 7]
    assert visible(11) == [7, 9, 10]
    assert visible(15) == []


def test_condition_rows_ignore_image_tokens_and_other_text():
    query, key, value = random_qkv(OVERLAPPING, seed=5)
    attend = SplitConditionAttention().prepare(OVERLAPPING, CPU, torch.float32)
    base = attend(query, key, value)
    cond = slice(TEXT + IMAGE, None)
    changed_key, changed_value = key.clone(), value.clone()
    changed_key[:, TEXT : TEXT + IMAGE] += 3.0  # image keys
    changed_value[:, TEXT : TEXT + IMAGE] += 3.0
    changed_value[:, [0, 1, 2, 20]] += 3.0  # text no box owns
    after = attend(query, changed_key, changed_value)
    torch.testing.assert_close(after[:, cond], base[:, cond])
    assert not torch.allclose(after[:, :TEXT], base[:, :TEXT])  # text rows do see them


def test_layout_rejects_inconsistent_inputs():
    with pytest.raises(ValueError, match="outside"):
        make_layout([[TEXT]], [[0]])
    with pytest.raises(ValueError, match="masks"):
        AttentionLayout(TEXT, IMAGE, COND, [[1]], torch.zeros(2, COND, dtype=torch.bool))
