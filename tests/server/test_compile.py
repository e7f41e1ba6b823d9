"""Regional compilation of the transformer blocks, traced by dynamo on the tiny model.

The "eager" backend runs dynamo's tracing (graph breaks, guards, recompiles) without inductor's code
generation, which takes about 90 s on our CPUs (measured; docs/performance.md); inductor itself runs in
benchmarks/gpu_bench.py.
"""

import logging
import os

import pytest
import torch
import torch._dynamo
from model_comparison import assert_same_generation
from torch._dynamo.utils import counters

from inference_server import compile as compile_module
from inference_server.compile import CompileSettings, compile_cache_dir, use_compile_cache
from inference_server.pipeline import SeeThroughPipeline

pytestmark = pytest.mark.slow  # traces the model with dynamo

TRACE_ONLY = CompileSettings(backend="eager", fullgraph=True)  # fullgraph: a graph break fails the test


def test_compiled_blocks_trace_whole_reuse_one_graph_per_block_kind_and_match_eager(make_request, caplog):
    request = make_request(num_inference_steps=2)
    eager = SeeThroughPipeline.tiny(seed=0)

    torch._dynamo.reset()
    counters.clear()
    pipeline = SeeThroughPipeline.tiny(seed=0, compile=TRACE_ONLY)
    assert pipeline.identity["compile"] is True
    with caplog.at_level(logging.INFO, logger="inference_server.compile"):
        assert_same_generation(pipeline, eager, request)  # the first request traces
        assert_same_generation(pipeline, eager, request)  # the second reuses the graphs
        assert_same_generation(pipeline, eager, {**request, "condition_cache": True})
    # double, single and their two cached variants: one graph each, shared by both blocks of each kind
    assert counters["stats"]["unique_graphs"] == 4
    notices = [record.message for record in caplog.records if record.message.startswith("compiling")]
    assert len(notices) == 2  # the first request of each (size, attention, cache) combination
    assert "256x256" in notices[0] and "condition cache True" in notices[1]

    pipeline.set_compile(False)
    assert pipeline.identity["compile"] is False
    assert_same_generation(pipeline, eager, request)


def test_compile_cache_goes_under_our_cache_folder_unless_the_user_chose_one(monkeypatch, tmp_path):
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # torch writes its /tmp default into the variable when dynamo loads: that counts as not chosen
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", default_cache_dir())
    folder = use_compile_cache()
    assert folder == tmp_path / "seethrough" / "torch-compile" == compile_cache_dir() and folder.is_dir()
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(folder)

    chosen = tmp_path / "mine"
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(chosen))
    assert use_compile_cache() == chosen and os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(chosen)


def test_compiled_runners_raise_the_recompile_limit():
    config = torch._dynamo.config
    name = "recompile_limit" if hasattr(config, "recompile_limit") else "cache_size_limit"
    # torch's own patch: monkeypatch's undo leaves the setting hidden from dynamo (reads then fail)
    with config.patch({name: 8}):
        compile_module.compiled_runners(TRACE_ONLY)
        assert getattr(config, name) == compile_module.RECOMPILE_LIMIT


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    yield
    torch._dynamo.reset()  # compiled graphs hold the tiny models alive otherwise
