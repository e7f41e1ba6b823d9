"""SeeThrough3D LoRA files in the released layout, and ordinary FLUX style LoRAs on top."""

import numpy as np
import pytest
import torch
from model_comparison import assert_same_generation
from safetensors.torch import load_file, save_file
from server_support import random_lora_for, write_style_lora

from inference_server.lora import ConditionLoRA, expected_release_keys, save_seethrough_lora
from inference_server.model_errors import LoRAFormatError, WeightsMismatchError, WeightsNotFoundError
from inference_server.pipeline import SeeThroughPipeline


@pytest.fixture
def pipeline() -> SeeThroughPipeline:
    return SeeThroughPipeline.tiny(seed=0)


@pytest.fixture
def lora_file(tmp_path, pipeline):
    path = tmp_path / "lora.safetensors"
    save_seethrough_lora(random_lora_for(pipeline, seed=7), path)
    return path


def test_written_file_has_the_released_layout(lora_file):
    state = load_file(str(lora_file))
    assert sorted(state) == sorted(expected_release_keys(2, 2))
    assert "transformer_blocks.1.attn.processor.proj_loras.0.up.weight" in state
    assert "single_transformer_blocks.0.attn.processor.v_loras.0.down.weight" in state
    assert not any(key.startswith("single_transformer_blocks") and "proj_loras" in key for key in state)
    assert state["transformer_blocks.0.attn.processor.q_loras.0.down.weight"].shape == (3, 32)  # [rank, dim]
    assert state["transformer_blocks.0.attn.processor.q_loras.0.up.weight"].shape == (32, 3)  # [dim, rank]
    assert len(expected_release_keys(19, 38)) == 19 * 8 + 38 * 6  # the real FLUX.1-dev file


def test_released_lora_loads_and_changes_the_output(pipeline, lora_file, make_request):
    request = make_request()
    pipeline.set_condition_lora(None)
    without = pipeline(**request).image
    pipeline.load_condition_lora(str(lora_file))
    assert pipeline.condition_lora.rank == 3
    loaded = pipeline(**request).image
    assert not np.array_equal(loaded, without)
    assert pipeline.identity["lora"] == str(lora_file) and len(pipeline.identity["lora_sha256"]) == 12

    pipeline.set_lora_scale(0.0)  # scale 0 is exactly "no LoRA"
    assert np.array_equal(pipeline(**request).image, without)


def test_lora_acts_on_condition_tokens_only(pipeline, make_request):
    seen: list[tuple[str, int]] = []
    for name, module in pipeline.condition_lora.named_modules():
        if isinstance(module, ConditionLoRA):
            module.register_forward_hook(
                lambda mod, args, out, name=name: seen.append((name, args[0].shape[1]))
            )
    pipeline(**make_request(num_inference_steps=1))
    assert {tokens for _, tokens in seen} == {1024}  # every LoRA call saw exactly the condition tokens
    proj_calls = [name for name, _ in seen if name.endswith("proj")]
    assert len(seen) == 2 * 4 + 2 * 3 and len(proj_calls) == 2
    assert all(name.startswith("double_blocks") for name in proj_calls)


@pytest.mark.parametrize(
    ("damage", "bad_key"),
    [
        ("drop", "single_transformer_blocks.1.attn.processor.k_loras.0.up.weight"),
        ("reshape", "transformer_blocks.1.attn.processor.proj_loras.0.down.weight"),
        ("extra", "transformer_blocks.0.attn.processor.out_loras.0.down.weight"),
        ("rank", "single_transformer_blocks.0.attn.processor.q_loras.0.up.weight"),
    ],
)
def test_broken_lora_is_rejected_naming_the_key(pipeline, lora_file, damage, bad_key):
    state = load_file(str(lora_file))
    if damage == "drop":
        del state[bad_key]
    elif damage == "reshape":
        state[bad_key] = torch.zeros(3, 48)
    elif damage == "extra":
        state[bad_key] = torch.zeros(3, 32)
    else:
        state[bad_key] = torch.zeros(32, 5)
    save_file(state, str(lora_file))
    with pytest.raises(LoRAFormatError) as caught:
        pipeline.load_condition_lora(str(lora_file))
    assert caught.value.key == bad_key and bad_key in str(caught.value)


def test_missing_lora_file_says_how_to_get_it(pipeline, tmp_path):
    with pytest.raises(WeightsNotFoundError, match="seethrough3d-flux.1-weights"):
        pipeline.load_condition_lora(str(tmp_path / "nope.safetensors"))


@pytest.mark.slow
def test_style_lora_changes_output_and_scale_zero_does_not(tmp_path, make_request):
    request = make_request()
    base = SeeThroughPipeline.tiny(seed=0)
    reference = base(**request).image
    style = tmp_path / "style.safetensors"
    write_style_lora(style, base, seed=1)

    base.add_style_lora(str(style), 1.0)
    assert not np.array_equal(base(**request).image, reference)
    assert base.identity["style_loras"][0]["scale"] == 1.0

    muted = SeeThroughPipeline.tiny(seed=0)
    muted.add_style_lora(str(style), 0.0)
    assert_same_generation(muted, SeeThroughPipeline.tiny(seed=0), request)


def test_condition_lora_is_refused_as_a_style_lora(pipeline, lora_file):
    with pytest.raises(WeightsMismatchError, match="`lora` argument"):
        pipeline.add_style_lora(str(lora_file), 1.0)
