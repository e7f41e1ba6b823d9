"""from_pretrained: local diffusers folders, repo ids from the local HF cache only, clear errors."""

import json
import shutil
from dataclasses import fields

import pytest
import torch
from model_comparison import assert_same_generation, assert_same_weights

from inference_server.components import COMPONENT_NAMES, MODEL_NAMES, FluxComponents
from inference_server.cpu_alignment import is_aligned
from inference_server.lora import save_seethrough_lora
from inference_server.model_errors import SetupError, WeightsMismatchError, WeightsNotFoundError
from inference_server.pipeline import SeeThroughPipeline

SNAPSHOT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory):
    """The tiny pipeline saved in diffusers' layout, its LoRA beside it, and its reference image."""
    folder = tmp_path_factory.mktemp("tiny_flux")
    pipeline = SeeThroughPipeline.tiny(seed=0)
    pipeline.save_pretrained(folder / "model")
    save_seethrough_lora(pipeline.condition_lora, folder / "lora.safetensors")
    return folder / "model", folder / "lora.safetensors"


@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf_cache"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_saved_folder_has_the_diffusers_layout(saved_tiny):
    model, _ = saved_tiny
    index = json.loads((model / "model_index.json").read_text())
    assert index["_class_name"] == "FluxPipeline"
    assert index["transformer"] == ["diffusers", "FluxTransformer2DModel"]
    assert index["text_encoder_2"] == ["transformers", "T5EncoderModel"]
    for name in (
        "transformer",
        "vae",
        "text_encoder",
        "text_encoder_2",
        "tokenizer",
        "tokenizer_2",
        "scheduler",
    ):
        assert (model / name).is_dir()


@pytest.mark.parametrize("memory", ["full", "offload"])
def test_loads_from_a_local_folder_and_matches_tiny(saved_tiny, tiny_pipeline, make_request, memory):
    model, lora = saved_tiny
    loaded = SeeThroughPipeline.from_pretrained(
        str(model), str(lora), device="cpu", dtype="float32", memory=memory
    )
    assert loaded.identity["model"] == str(model) and loaded.identity["lora"] == str(lora)
    assert len(loaded.identity["lora_sha256"]) == 12 and loaded.identity["memory"] == memory
    assert loaded.is_noise is False
    assert_loaded_the_same_model(loaded, tiny_pipeline)
    assert_same_generation(loaded, tiny_pipeline, make_request())


def assert_loaded_the_same_model(loaded: SeeThroughPipeline, built: SeeThroughPipeline) -> None:
    for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "condition_lora"):
        assert_same_weights(getattr(loaded, name), getattr(built, name))
    settings = [
        {k: v for k, v in p.scheduler.config.items() if not k.startswith("_")} for p in (loaded, built)
    ]
    assert settings[0] == settings[1]  # "_..." keys are diffusers' bookkeeping (which values were defaults)


def test_weights_read_for_the_cpu_are_aligned_like_weights_built_in_memory(saved_tiny):
    # safetensors' tensors start wherever the file puts them; misaligned, the CPU's matrix kernels take
    # another path and round differently in the last bit than for the same model built in memory
    model, lora = saved_tiny
    loaded = SeeThroughPipeline.from_pretrained(str(model), str(lora), device="cpu", dtype="float32")
    for module in (loaded.transformer, loaded.vae, loaded.text_encoder, loaded.text_encoder_2):
        assert all(is_aligned(tensor) for tensor in module.state_dict().values())
    encoder = loaded.text_encoder_2
    assert encoder.shared.weight is encoder.encoder.embed_tokens.weight  # still tied


def test_loads_repo_ids_from_the_local_cache(saved_tiny, empty_hf_cache, tiny_pipeline, make_request):
    model, lora = saved_tiny
    for repo, source in (
        ("black-forest-labs/FLUX.1-dev", model),
        ("va1bhavagrawa1/seethrough3d-flux.1-weights", None),
    ):
        entry = empty_hf_cache / ("models--" + repo.replace("/", "--"))
        snapshot = entry / "snapshots" / SNAPSHOT
        if source is None:
            (snapshot / "checkpoints/seethrough3d_release").mkdir(parents=True)
            shutil.copy(lora, snapshot / "checkpoints/seethrough3d_release/lora.safetensors")
        else:
            shutil.copytree(source, snapshot)
        (entry / "refs").mkdir()
        (entry / "refs" / "main").write_text(SNAPSHOT)
    loaded = SeeThroughPipeline.from_pretrained(
        "black-forest-labs/FLUX.1-dev",
        "va1bhavagrawa1/seethrough3d-flux.1-weights",
        device="cpu",
        dtype="float32",
    )
    assert loaded.identity["lora"].endswith("checkpoints/seethrough3d_release/lora.safetensors")
    assert_loaded_the_same_model(loaded, tiny_pipeline)
    assert_same_generation(loaded, tiny_pipeline, make_request(num_inference_steps=2))


def test_missing_folder_says_what_where_and_how(tmp_path):
    missing = tmp_path / "no_such_flux"
    with pytest.raises(WeightsNotFoundError) as caught:
        SeeThroughPipeline.from_pretrained(str(missing), None, device="cpu")
    message = str(caught.value)
    assert (
        str(missing) in message
        and "download black-forest-labs/FLUX.1-dev" in message
        and "licence" in message
    )


def test_uncached_repo_id_names_the_cache(empty_hf_cache):
    with pytest.raises(WeightsNotFoundError) as caught:
        SeeThroughPipeline.from_pretrained("black-forest-labs/FLUX.1-dev", None, device="cpu")
    message = str(caught.value)
    assert str(empty_hf_cache) in message and "'black-forest-labs/FLUX.1-dev'" in message
    assert "never downloads" in message and "hf download black-forest-labs/FLUX.1-dev" in message


def test_incomplete_folder_names_the_missing_parts(tmp_path):
    (tmp_path / "model_index.json").write_text("{}")
    (tmp_path / "vae").mkdir()
    with pytest.raises(WeightsNotFoundError, match="missing transformer, text_encoder, text_encoder_2"):
        SeeThroughPipeline.from_pretrained(str(tmp_path), None, device="cpu")


def test_missing_weight_file_names_the_component(saved_tiny, tmp_path):
    model, _ = saved_tiny
    broken = tmp_path / "model"
    shutil.copytree(model, broken)
    for weights in (broken / "vae").glob("*.safetensors"):
        weights.unlink()
    with pytest.raises(WeightsNotFoundError, match="could not load the vae"):
        SeeThroughPipeline.from_pretrained(str(broken), None, device="cpu", dtype="float32")


def test_wrong_model_is_rejected(saved_tiny, tmp_path):
    model, _ = saved_tiny
    other = tmp_path / "model"
    shutil.copytree(model, other)
    index = json.loads((other / "model_index.json").read_text())
    index["_class_name"] = "StableDiffusionPipeline"
    (other / "model_index.json").write_text(json.dumps(index))
    with pytest.raises(WeightsMismatchError, match="StableDiffusionPipeline"):
        SeeThroughPipeline.from_pretrained(str(other), None, device="cpu", dtype="float32")


def test_missing_lora_says_how_to_get_it(saved_tiny, tmp_path):
    model, _ = saved_tiny
    with pytest.raises(WeightsNotFoundError, match="hf download va1bhavagrawa1/seethrough3d-flux.1-weights"):
        SeeThroughPipeline.from_pretrained(str(model), str(tmp_path / "lora.safetensors"), device="cpu")


@pytest.mark.parametrize(
    "kwargs",
    [{"dtype": "int8"}, {"memory": "sometimes"}, {"device": "cuda"}],
    ids=["dtype", "memory", "device"],
)
def test_bad_settings_are_rejected(saved_tiny, kwargs):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    model, _ = saved_tiny
    with pytest.raises(SetupError):
        SeeThroughPipeline.from_pretrained(str(model), None, **{"device": "cpu", **kwargs})


def test_one_table_of_components_drives_loading_saving_and_the_dataclass():
    assert tuple(f.name for f in fields(FluxComponents))[: len(COMPONENT_NAMES)] == COMPONENT_NAMES
    assert set(MODEL_NAMES) == {"transformer", "vae", "text_encoder", "text_encoder_2"}


def test_identity_follows_the_pipelines_state(make_request):
    pipeline = SeeThroughPipeline.tiny(seed=0)
    assert pipeline.identity["attention"] == "split" and pipeline.identity["lora"] == "random tiny"
    pipeline.set_attention("dense")
    pipeline.set_condition_cache(True)
    pipeline.set_lora_scale(0.5)
    identity = pipeline.identity
    assert (identity["attention"], identity["condition_cache"], identity["lora_scale"]) == (
        "dense",
        True,
        0.5,
    )
    pipeline.set_condition_lora(None)
    assert pipeline.identity["lora"] is None and pipeline.identity["lora_scale"] is None
