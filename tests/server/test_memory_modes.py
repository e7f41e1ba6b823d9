"""Memory modes: the 24-GB mode's choices, a clear error for a missing optional extra, and the T5 streaming.

The quantized kernels and the real GPU peak are measured by benchmarks/gpu_bench.py on a GPU; here the
selection logic, the errors, and the streaming's residency (with "meta" standing in for the GPU).
"""

import copy
import sys

import numpy as np
import pytest
import torch

from inference_server import placement
from inference_server.model_errors import SetupError
from inference_server.offload import stream_t5, t5_units
from inference_server.pipeline import SeeThroughPipeline
from inference_server.placement import plan_memory
from inference_server.quantize import auto_quantization, faster_quantization, require_backend
from inference_server.tiny import build_tiny_components

CPU = torch.device("cpu")


@pytest.fixture
def extras_installed(monkeypatch):
    """Pretend both quantization libraries are importable (plan logic only; nothing is quantized)."""
    monkeypatch.setattr(placement, "require_backend", lambda kind: None)


@pytest.fixture
def extras_missing(monkeypatch):
    """Make both quantization libraries fail to import, as on a machine without the extras."""
    for module in ("torchao", "bitsandbytes"):
        monkeypatch.setitem(sys.modules, module, None)  # a None entry makes `import` raise ImportError


@pytest.mark.parametrize(
    ("capability", "eager", "compiled"),
    [((9, 0), "nf4", "fp8"), ((8, 9), "nf4", "fp8"), ((8, 6), "nf4", "nf4"), ((7, 5), "nf4", "nf4")],
    ids=["hopper", "ada", "ampere", "turing"],
)
def test_auto_picks_the_faster_kind_from_the_table(monkeypatch, capability, eager, compiled):
    """fp8 only compiled (eager it was slower than NF4 on an H200) and only with fp8 matrix units."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    assert auto_quantization(torch.device("cuda")) == eager
    assert auto_quantization(torch.device("cuda"), compiled=True) == compiled
    assert faster_quantization(capability, True).evidence  # every choice says where it comes from
    assert auto_quantization(CPU) == auto_quantization(CPU, compiled=True) == "nf4"


def test_memory_plans(extras_installed):
    assert plan_memory("full", "auto", CPU) == placement.MemoryPlan("full", None, False, False)
    assert plan_memory("offload", "auto", CPU) == placement.MemoryPlan("offload", None, False, True)
    assert plan_memory("24gb", "auto", CPU) == placement.MemoryPlan("24gb", "nf4", True, False)
    assert plan_memory("24gb", "fp8", CPU).quantization == "fp8"
    assert plan_memory("full", "fp8", CPU) == placement.MemoryPlan("full", "fp8", False, False)
    with pytest.raises(SetupError, match="needs a quantized transformer"):
        plan_memory("24gb", "none", CPU)
    with pytest.raises(SetupError, match="not 'offload'"):
        plan_memory("offload", "nf4", CPU)
    with pytest.raises(SetupError, match="memory must be one of"):
        plan_memory("8gb", "auto", CPU)
    sixteen = plan_memory("16gb", "auto", CPU, compiled=True)
    assert (sixteen.quantization, sixteen.stream_text_encoder) == ("nf4", True)
    assert sixteen.vae_decode_budget_bytes == placement.VAE_DECODE_BUDGET_BYTES["16gb"]
    assert plan_memory("24gb", "auto", CPU).vae_decode_budget_bytes is None  # tiles only in 16gb
    with pytest.raises(SetupError, match="16gb.*NF4"):
        plan_memory("16gb", "fp8", CPU)
    with pytest.raises(SetupError, match="needs a quantized transformer"):
        plan_memory("16gb", "none", CPU)
    with pytest.raises(SetupError, match="quantization must be one of"):
        plan_memory("24gb", "int4", CPU)


@pytest.mark.parametrize(("kind", "module"), [("fp8", "torchao"), ("nf4", "bitsandbytes")])
def test_a_missing_extra_names_what_to_install(extras_missing, kind, module):
    with pytest.raises(SetupError) as caught:
        require_backend(kind)
    assert f"pip install 'seethrough[{kind}]'" in str(caught.value) and module in str(caught.value)
    with pytest.raises(SetupError, match=rf"seethrough\[{kind}\]"):
        SeeThroughPipeline.tiny(memory="24gb", quantization=kind)


def test_from_pretrained_fails_on_the_missing_extra_before_looking_for_weights(extras_missing, tmp_path):
    # the folder does not exist: reaching the weights would raise WeightsNotFoundError instead
    with pytest.raises(SetupError, match=r"seethrough\[nf4\]"):
        SeeThroughPipeline.from_pretrained(str(tmp_path / "nowhere"), None, device="cpu", memory="24gb")


def test_default_memory_mode_needs_no_extra(extras_missing):
    pipeline = SeeThroughPipeline.tiny()
    assert pipeline.identity["memory"] == "full" and pipeline.identity["quantization"] is None


def test_t5_streams_unit_by_unit_with_the_next_copy_overlapped_and_keeps_its_cpu_weights():
    encoder = build_tiny_components(0).text_encoder_2
    ids = torch.randint(3, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    expected = encoder(ids)[0]
    weights = {name: tensor.clone() for name, tensor in encoder.named_parameters()}
    units = t5_units(encoder)
    stream = stream_t5(encoder, torch.device("meta"))  # "meta" stands in for the GPU: no data, only placement

    residency = []
    for index, unit in enumerate(units):

        def record(module, args, output, index=index):
            devices = [{p.device.type for p in other.parameters()} for other in units]
            residency.append((index, devices, stream.resident.copy()))

        # prepend: runs before the streaming hook puts the CPU weights back
        unit.register_forward_hook(record, prepend=True)
    out = encoder(ids)[0]

    assert out.device.type == "meta"  # inputs followed the weights to the device
    assert [index for index, _, _ in residency] == list(range(len(units)))  # embedding, blocks, final norm
    for index, devices, resident in residency:
        # this unit runs on the device; the next one's copy is on its way (prefetched), nothing else
        assert devices[index] == {"meta"} and resident == {index, index + 1} & set(range(len(units)))
        assert all(d == {"cpu"} for i, d in enumerate(devices) if i != index)  # only this unit installed
    # the next unit's copy starts before this unit runs, and only after the previous one finished
    order = stream.order
    for index in range(len(units) - 1):
        assert order.index(("copy", index + 1)) < order.index(("run", index))
        if index:
            assert order.index(("done", index - 1)) < order.index(("copy", index + 1))
    assert stream.resident == set() and not stream.pinned  # pinned memory is for CUDA only
    for name, tensor in encoder.named_parameters():
        assert tensor.device.type == "cpu" and torch.equal(tensor, weights[name])

    stream.remove()
    stream_t5(encoder, CPU)  # streamed to the CPU itself: the very same numbers as unstreamed
    assert torch.equal(encoder(ids)[0], expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (see the docstring)")
def test_nf4_24gb_mode_end_to_end_on_the_tiny_model(make_request):
    """On a CUDA machine with bitsandbytes installed. Not on the CPU: in eval mode bitsandbytes' CPU backend
    repacks weights in 64-value blocks per row, which the tiny model's 32-wide layers cannot fill."""
    bnb = pytest.importorskip("bitsandbytes")
    reference = SeeThroughPipeline.tiny(seed=0, device="cuda")(**make_request()).image
    pipeline = SeeThroughPipeline.tiny(seed=0, device="cuda", memory="24gb", quantization="nf4")
    transformer = pipeline.transformer
    layer = transformer.transformer_blocks[0].attn.to_q
    assert isinstance(layer, bnb.nn.Linear4bit) and not layer.training
    assert isinstance(transformer.single_transformer_blocks[0].proj_out, bnb.nn.Linear4bit)
    assert type(transformer.x_embedder) is torch.nn.Linear and pipeline.dtype == torch.float32
    assert pipeline.text_encoder_stream is not None
    image = pipeline(**make_request()).image
    assert np.abs(image.astype(int) - reference.astype(int)).mean() < 2  # NF4 noise, same picture


@pytest.mark.skipif(not torch.cuda.is_available(), reason="pinned memory and copy streams need CUDA")
def test_pinned_t5_streaming_with_the_copy_stream_equals_the_encoder_on_the_gpu():
    encoder = build_tiny_components(0).text_encoder_2
    ids = torch.randint(3, 100, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = copy.deepcopy(encoder).to("cuda")(ids.cuda())[0]
        stream = stream_t5(encoder, torch.device("cuda"))
        assert stream.pinned and all(p.is_pinned() for p in encoder.parameters())
        for _ in range(2):  # a second prompt streams again from the pinned weights
            torch.testing.assert_close(encoder(ids)[0], expected, rtol=0, atol=0)
    assert stream.resident == set() and all(p.device.type == "cpu" for p in encoder.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (see the 24gb test's docstring)")
def test_nf4_16gb_mode_end_to_end_on_the_tiny_model(make_request):
    pytest.importorskip("bitsandbytes")
    reference = SeeThroughPipeline.tiny(seed=0, device="cuda")(**make_request()).image
    pipeline = SeeThroughPipeline.tiny(seed=0, device="cuda", memory="16gb")
    assert pipeline.identity["quantization"] == "nf4" and pipeline.text_encoder_stream.pinned
    image = pipeline(**make_request(step_cache=0.0)).image
    assert np.abs(image.astype(int) - reference.astype(int)).mean() < 2  # NF4 noise, same picture
