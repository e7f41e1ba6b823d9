"""The smaller speed parts on the tiny model: the prompt cache, the VAE decode in tiles where the
memory mode's budget asks for it, and the streamed T5 giving the unstreamed encoder's numbers."""

import dataclasses

import numpy as np
import torch

from inference_server import vae_tiles
from inference_server.offload import stream_t5
from inference_server.pipeline import SeeThroughPipeline
from inference_server.text import PromptCache
from inference_server.tiny import build_tiny_components
from seethrough_core.prompt import compose_prompt


def test_a_repeated_prompt_is_encoded_once_and_gives_the_same_embeddings(make_request):
    pipeline = SeeThroughPipeline.tiny(seed=0)
    cache = pipeline.prompt_encoder.cache
    t5_calls = []
    pipeline.text_encoder_2.register_forward_hook(lambda *args: t5_calls.append(1))
    request = make_request(num_inference_steps=1)
    first = pipeline(**request)
    second = pipeline(**{**request, "seed": 7})  # another seed, same prompt: a variation
    assert (cache.hits, cache.misses, len(t5_calls)) == (1, 1, 1)
    third = pipeline(**{**request, "scene_prompt": "on the moon."})
    assert (cache.hits, cache.misses, len(t5_calls)) == (1, 2, 2)
    again = pipeline(**request)
    assert np.array_equal(again.image, first.image) and not np.array_equal(second.image, first.image)
    assert third.prompt != first.prompt

    # the cached encoding is the one a fresh encoder computes
    composed = compose_prompt(request["scene_prompt"], request["descriptions"])
    fresh = SeeThroughPipeline.tiny(seed=0).prompt_encoder.encode(composed, pipeline.dtype)
    kept = pipeline.prompt_encoder.encode(composed, pipeline.dtype)
    assert torch.equal(fresh.prompt_embeds, kept.prompt_embeds)
    assert torch.equal(fresh.pooled_embeds, kept.pooled_embeds) and fresh.call_ids == kept.call_ids


def test_with_offload_a_cached_prompt_moves_no_text_encoder(make_request, monkeypatch):
    pipeline = SeeThroughPipeline.tiny(seed=0, memory="offload")
    moves = []
    original = type(pipeline.text_encoder_2).to
    monkeypatch.setattr(
        type(pipeline.text_encoder_2), "to", lambda self, *a, **k: moves.append(a) or original(self, *a, **k)
    )
    request = make_request(num_inference_steps=1)
    pipeline(**request)
    assert moves  # the first request moves T5 to the device and back
    moves.clear()
    pipeline(**request)
    assert moves == [] and pipeline.prompt_encoder.cache.hits == 1


def test_the_prompt_cache_is_bounded_and_drops_the_least_recently_used():
    cache = PromptCache(2)
    cache.put(("a", torch.float32), "A")
    cache.put(("b", torch.float32), "B")
    assert cache.get(("a", torch.float32)) == "A"  # a is now the most recent
    cache.put(("c", torch.float32), "C")
    assert len(cache) == 2 and cache.get(("b", torch.float32)) is None
    assert cache.get(("a", torch.bfloat16)) is None  # another dtype is another entry
    assert (cache.hits, cache.misses) == (1, 2)
    off = PromptCache(0)
    off.put(("a", torch.float32), "A")
    assert len(off) == 0


def test_the_decode_uses_tiles_only_above_the_budget(make_request, monkeypatch):
    assert not vae_tiles.needs_tiles(1024, 1024, torch.bfloat16, None)  # no budget: never
    at_1024 = vae_tiles.decode_bytes(1024, 1024, torch.bfloat16)
    assert vae_tiles.needs_tiles(1024, 1024, torch.bfloat16, at_1024 - 1)
    assert not vae_tiles.needs_tiles(1024, 1024, torch.bfloat16, at_1024)
    assert vae_tiles.decode_bytes(1024, 1024, torch.float32) == 2 * at_1024

    pipeline = SeeThroughPipeline.tiny(seed=0)
    tiled_calls = []
    original = pipeline.vae.tiled_decode
    monkeypatch.setattr(
        pipeline.vae, "tiled_decode", lambda *a, **k: tiled_calls.append(1) or original(*a, **k)
    )
    monkeypatch.setattr(vae_tiles, "TILE_PX", 128)  # the tiny 256 px image in 2 x 2 overlapping tiles
    request = make_request(num_inference_steps=2)
    whole = pipeline(**request).image
    assert tiled_calls == []
    budget = vae_tiles.decode_bytes(256, 256, pipeline.dtype) - 1
    pipeline.plan = dataclasses.replace(pipeline.plan, vae_decode_budget_bytes=budget)
    tiled = pipeline(**request).image
    assert tiled_calls == [1] and tiled.shape == whole.shape
    difference = np.abs(tiled.astype(int) - whole.astype(int))
    assert difference.max() > 0 and difference.mean() < 8  # the same picture, blended seams
    assert pipeline.vae.tile_sample_min_size == pipeline.vae.config.sample_size  # the VAE's own setting back


def test_the_streamed_t5_twice_in_a_row_equals_the_unstreamed_encoder():
    encoder = build_tiny_components(0).text_encoder_2
    ids = torch.randint(3, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    expected = encoder(ids)[0]
    stream = stream_t5(encoder, torch.device("cpu"))
    assert torch.equal(encoder(ids)[0], expected) and torch.equal(encoder(ids)[0], expected)
    assert stream.resident == set()  # nothing left on the device between prompts
