"""The step cache (First-Block-Cache style) on the tiny model: exact at threshold 0, skips steps at a
high threshold, counts the steps it computed, composes with the condition cache, and compiles whole.

Speed on the GPU and the image quality at a threshold are benchmarks' and the real checkpoint's business
(docs/performance.md); here the mechanism."""

import numpy as np
import pytest
import torch
import torch._dynamo
from model_comparison import assert_same_generation
from torch._dynamo.utils import counters

from inference_server.compile import CompileSettings
from inference_server.model_errors import SetupError
from inference_server.pipeline import SeeThroughPipeline
from inference_server.step_cache import StepCache
from inference_server.transformer import BlockRunners
from seethrough_core.generation_settings import SettingError
from seethrough_core.limits import MAX_STEP_CACHE

STEPS = 6


@pytest.fixture(scope="module")
def pipeline():
    return SeeThroughPipeline.tiny(seed=0)


def run(pipeline, request, **options):
    """(image, latents after each step, steps computed, progress steps seen)."""
    latents, seen = [], []

    def keep(info):
        latents.append(info.latents.clone())
        seen.append(info.step)

    output = pipeline(**request, step_callback=keep, **options)
    return output.image, latents, output.steps_computed, seen


def counting(pipeline) -> dict[str, int]:
    """Wrap the pipeline's block runners so every call of a kind is counted."""
    calls = {"double": 0, "single": 0, "double_cached": 0, "single_cached": 0}
    runners = pipeline.runners

    def wrap(name):
        def call(*args):
            calls[name] += 1
            return getattr(runners, name)(*args)

        return call

    pipeline.runners = BlockRunners(**{name: wrap(name) for name in calls})
    return calls


def test_threshold_zero_is_bit_for_bit_no_cache(pipeline, make_request):
    request = make_request(num_inference_steps=STEPS)
    image, latents, computed, _ = run(pipeline, request)
    image0, latents0, computed0, _ = run(pipeline, request, step_cache=0.0)
    assert computed == computed0 == STEPS
    assert np.array_equal(image, image0)
    assert all(torch.equal(a, b) for a, b in zip(latents, latents0, strict=True))


def test_a_high_threshold_skips_steps_and_the_count_is_the_blocks_that_ran(make_request):
    pipeline = SeeThroughPipeline.tiny(seed=0)
    calls = counting(pipeline)
    request = make_request(num_inference_steps=STEPS)
    image, _, computed, seen = run(pipeline, request, step_cache=MAX_STEP_CACHE)
    singles = len(pipeline.transformer.single_transformer_blocks)
    doubles = len(pipeline.transformer.transformer_blocks)
    assert 1 <= computed < STEPS  # step 1 always runs; later steps reuse
    assert calls["single"] == computed * singles  # the remaining blocks ran exactly on the computed steps
    assert calls["double"] == STEPS + computed * (doubles - 1)  # the first block runs on every step
    assert seen == list(range(1, STEPS + 1))  # progress still reports every step
    reference, *_ = run(SeeThroughPipeline.tiny(seed=0), request)
    assert np.isfinite(image).all() and not np.array_equal(image, reference)  # reuse changes the result


def test_composes_with_the_condition_cache(make_request):
    pipeline = SeeThroughPipeline.tiny(seed=0, condition_cache=True)
    calls = counting(pipeline)
    request = make_request(num_inference_steps=STEPS)
    image, latents, _, _ = run(pipeline, request)
    image0, latents0, computed0, _ = run(pipeline, request, step_cache=0.0)
    assert computed0 == STEPS and np.array_equal(image, image0)
    assert all(torch.equal(a, b) for a, b in zip(latents, latents0, strict=True))
    for name in calls:
        calls[name] = 0
    _, _, computed, _ = run(pipeline, request, step_cache=MAX_STEP_CACHE)
    assert computed < STEPS
    # step 1 fills the condition cache with the full blocks; later computed steps read it
    singles = len(pipeline.transformer.single_transformer_blocks)
    assert calls["single"] == singles and calls["single_cached"] == (computed - 1) * singles


def test_the_pipeline_default_and_its_checks(make_request):
    pipeline = SeeThroughPipeline.tiny(seed=0, step_cache=0.1)
    assert pipeline.identity["step_cache"] == 0.1
    request = make_request(num_inference_steps=1)
    output = pipeline(**request)  # the output says which options it was made with: here the defaults
    assert (output.condition_cache, output.step_cache, output.steps_computed) == (False, 0.1, 1)
    output = pipeline(**request, condition_cache=True, step_cache=0.0)  # or the request's own
    assert (output.condition_cache, output.step_cache) == (True, 0.0)
    pipeline.set_step_cache(None)
    assert pipeline.identity["step_cache"] is None
    with pytest.raises(SetupError, match="step_cache"):
        pipeline.set_step_cache(-0.1)
    with pytest.raises(SettingError, match="step_cache"):
        pipeline.__call__(  # a request's own threshold is checked with its other settings
            scene_prompt="x", descriptions=["a"], oscr_image=np.zeros((64, 64, 3), np.uint8),
            box_token_masks=np.ones((1, 32, 32), bool), width=256, height=256, seed=0, step_cache=2.0,
        )  # fmt: skip


def test_the_decision_counts_and_never_skips_before_a_computed_step():
    cache = StepCache(0.5)
    residual = torch.ones(1, 4, 8)
    assert not cache.reuse(residual)  # nothing kept yet
    cache.remember(residual, torch.zeros(1, 4, 8))
    assert cache.relative_change(residual * 1.2) == pytest.approx(0.2)
    assert cache.reuse(residual * 1.2) and not cache.reuse(residual * 2)
    assert (cache.computed, cache.reused) == (1, 1)
    never = StepCache(0.0)
    never.remember(residual, residual)
    assert not never.reuse(residual)  # identical residual, but 0 means exact


@pytest.mark.slow  # traces the model with dynamo
def test_compiled_with_the_step_cache_traces_whole_and_adds_no_graph(make_request):
    torch._dynamo.reset()
    counters.clear()
    settings = CompileSettings(backend="eager", fullgraph=True)  # fullgraph: a graph break fails
    compiled = SeeThroughPipeline.tiny(seed=0, compile=settings, step_cache=MAX_STEP_CACHE)
    eager = SeeThroughPipeline.tiny(seed=0, step_cache=MAX_STEP_CACHE)
    request = make_request(num_inference_steps=4)
    assert_same_generation(compiled, eager, request)
    assert counters["stats"]["unique_graphs"] == 2  # the double and single block graphs, nothing more
    assert compiled(**request).steps_computed == eager(**request).steps_computed < 4
    torch._dynamo.reset()
