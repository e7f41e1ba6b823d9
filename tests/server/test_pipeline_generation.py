"""End-to-end generation on the tiny random model: determinism, progress, cancel, previews, inputs."""

import numpy as np
import pytest
import torch

from inference_server.condition import condition_position_ids, encode_condition, oscr_to_pixels
from inference_server.latents import image_position_ids
from inference_server.model_errors import GenerationCancelled
from inference_server.pipeline import SeeThroughPipeline, StepInfo
from seethrough_core.generation_settings import SettingError
from seethrough_core.oscr_spec import jpeg_round_trip
from seethrough_core.prompt import compose_prompt


def test_same_seed_gives_identical_bytes(tiny_pipeline, make_request):
    first = tiny_pipeline(**make_request(seed=7))
    second = tiny_pipeline(**make_request(seed=7))
    assert first.image.dtype == np.uint8 and first.image.shape == (256, 256, 3)
    assert first.image.tobytes() == second.image.tobytes()
    assert first.image.std() > 1.0  # a real (noise) image, not a constant


def test_different_seeds_give_different_images(tiny_pipeline, make_request):
    assert not np.array_equal(
        tiny_pipeline(**make_request(seed=1)).image, tiny_pipeline(**make_request(seed=2)).image
    )


def test_output_records_the_request(tiny_pipeline, make_request):
    out = tiny_pipeline(**make_request(seed=11))
    assert out.prompt == "a photo of mars rover and spaceship on mars, sci-fi background, scary."
    assert out.seed == 11 and out.is_noise is True
    assert len(out.call_ids) == 2 and all(out.call_ids)
    assert {"encode_s", "denoise_s", "decode_s", "total_s"} <= set(out.timings)
    assert out.timings["total_s"] >= out.timings["denoise_s"] > 0


def test_the_oscr_image_goes_through_jpeg_90_unless_the_request_opts_out(tiny_pipeline, make_request):
    request = make_request(num_inference_steps=2)
    as_trained = tiny_pipeline(**request)
    as_sent = tiny_pipeline(**request, oscr_jpeg_round_trip=False)
    assert (as_trained.oscr_jpeg_quality, as_sent.oscr_jpeg_quality) == (90, None)
    assert not np.array_equal(as_trained.image, as_sent.image)  # the condition really changed
    # ... and into exactly what the JPEG round trip gives
    saved = jpeg_round_trip(request["oscr_image"], 90)
    assert not np.array_equal(saved, request["oscr_image"])
    torch.testing.assert_close(oscr_to_pixels(request["oscr_image"], 90), oscr_to_pixels(saved))
    same = tiny_pipeline(**{**request, "oscr_image": saved}, oscr_jpeg_round_trip=False)
    assert np.abs(same.image.astype(int) - as_trained.image.astype(int)).max() <= 1


def test_non_square_output(tiny_pipeline, make_request):
    out = tiny_pipeline(**make_request(width=320, height=256, num_inference_steps=2))
    assert out.image.shape == (256, 320, 3)


@pytest.mark.parametrize(
    "change",
    [
        {"oscr_image": np.zeros((64, 64, 3), dtype=np.uint8)},
        {"descriptions": ["mars rover", "blue dog"]},
        {"box_token_masks": np.flip(np.ones((2, 32, 32), dtype=bool), 0)},  # a view with negative strides
    ],
    ids=["oscr", "description", "masks"],
)
def test_every_input_reaches_the_model(tiny_pipeline, make_request, change):
    base = tiny_pipeline(**make_request()).image
    assert not np.array_equal(tiny_pipeline(**make_request(**change)).image, base)


def test_step_callback_once_per_step(tiny_pipeline, make_request):
    steps: list[StepInfo] = []
    tiny_pipeline(**make_request(num_inference_steps=4), step_callback=steps.append)
    assert [info.step for info in steps] == [1, 2, 3, 4]
    assert all(info.total == 4 and info.preview is None for info in steps)
    elapsed = [info.elapsed_s for info in steps]
    assert elapsed == sorted(elapsed) and elapsed[0] > 0


def test_previews_every_n_steps(tiny_pipeline, make_request):
    steps: list[StepInfo] = []
    tiny_pipeline(**make_request(num_inference_steps=5), step_callback=steps.append, preview_interval=2)
    with_preview = [info.step for info in steps if info.preview is not None]
    assert with_preview == [2, 4]
    preview = steps[1].preview
    assert preview.dtype == np.uint8 and preview.ndim == 3 and preview.shape[2] == 3
    assert max(preview.shape[:2]) <= 128


def test_large_output_preview_is_at_most_128_px(tiny_pipeline):
    latents = torch.randn(1, 4, 2 * 1024 // 16, 2 * 768 // 16)  # latents of a 1024 x 768 image
    if not tiny_pipeline.previewer.fitted:
        tiny_pipeline.previewer.fit(tiny_pipeline.vae)
    assert tiny_pipeline.previewer(latents).shape == (128, 96, 3)


def test_cancel_stops_the_loop_and_skips_the_decode(make_request, monkeypatch):
    pipeline = SeeThroughPipeline.tiny(seed=0)
    decodes = []
    real_decode = pipeline.vae.decode
    monkeypatch.setattr(pipeline.vae, "decode", lambda *a, **k: decodes.append(1) or real_decode(*a, **k))
    pipeline(**make_request(num_inference_steps=2))
    assert decodes == [1]  # the spy sees a normal run's decode

    steps = []

    def cancel_at_two(info: StepInfo) -> None:
        steps.append(info.step)
        if info.step == 2:
            raise GenerationCancelled("user pressed cancel")

    with pytest.raises(GenerationCancelled):
        pipeline(**make_request(num_inference_steps=5), step_callback=cancel_at_two)
    assert steps == [1, 2] and decodes == [1]


@pytest.mark.slow
def test_split_and_dense_attention_agree(make_request):
    request = make_request(num_inference_steps=3)
    pipeline = SeeThroughPipeline.tiny(seed=0)
    split_image = pipeline(**request).image
    pipeline.set_attention("dense")
    dense_image = pipeline(**request).image
    assert np.abs(split_image.astype(int) - dense_image.astype(int)).max() <= 1

    # and the latents themselves, before uint8 rounding
    composed = compose_prompt(request["scene_prompt"], request["descriptions"])
    encoding = pipeline.prompt_encoder.encode(composed, torch.float32)
    generator = torch.Generator().manual_seed(0)
    cond = encode_condition(pipeline.vae, oscr_to_pixels(request["oscr_image"]), generator)
    noise = torch.randn(1, 256, 16, generator=generator)
    results = {}
    for name in ("split", "dense", "dense-rebuild"):
        pipeline.set_attention(name)
        results[name] = pipeline.denoise(
            latents=noise,
            prompt_embeds=encoding.prompt_embeds,
            pooled_embeds=encoding.pooled_embeds,
            call_ids=encoding.call_ids,
            cond_latents=cond,
            box_token_masks=request["box_token_masks"],
            width=256,
            height=256,
            num_inference_steps=3,
            guidance_scale=3.5,
        )
    torch.testing.assert_close(results["split"], results["dense"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(results["dense-rebuild"], results["dense"], atol=1e-6, rtol=1e-6)


def test_condition_position_ids():
    torch.testing.assert_close(condition_position_ids(512, 512), image_position_ids(512, 512))
    torch.testing.assert_close(
        condition_position_ids(1024, 1024), image_position_ids(512, 512) * torch.tensor([1, 2, 2])
    )
    ids = condition_position_ids(256, 768)  # image grid 16 x 48: steps 0.5 (rows) and 1.5 (columns)
    assert ids.shape == (1024, 3)
    assert ids[33].tolist() == [0.0, 0.5, 1.5] and ids[-1].tolist() == [0.0, 15.5, 46.5]


def test_oscr_is_resized_to_512_and_scaled():
    pixels = oscr_to_pixels(np.full((100, 300, 3), 255, dtype=np.uint8))
    assert pixels.shape == (1, 3, 512, 512)
    assert torch.allclose(pixels, torch.ones_like(pixels))


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"box_token_masks": np.zeros((3, 32, 32), dtype=bool)}, "masks"),
        ({"box_token_masks": np.zeros((2, 32, 32), dtype=np.uint8)}, "masks"),
        ({"box_token_masks": np.zeros((2, 16, 16), dtype=bool)}, "masks"),
        ({"width": 250}, "width"),
        ({"width": 240}, "width"),
        ({"height": 2064}, "height"),
        ({"num_inference_steps": 0}, "steps"),
        ({"num_inference_steps": 101}, "steps"),
        ({"descriptions": ["mars rover", "  "]}, "descriptions[1]"),
        ({"descriptions": [], "box_token_masks": np.zeros((0, 32, 32), dtype=bool)}, "descriptions"),
        (
            {"descriptions": ["dog"] * 17, "box_token_masks": np.zeros((17, 32, 32), dtype=bool)},
            "descriptions",
        ),
        ({"oscr_image": np.zeros((64, 64, 3), dtype=np.float32)}, "oscr_image"),
        ({"oscr_image": np.zeros((64, 64), dtype=np.uint8)}, "oscr_image"),
        ({"seed": -1}, "seed"),
        ({"guidance_scale": float("nan")}, "guidance"),
        ({"scene_prompt": "dog " * 600}, "scene_prompt"),
    ],
)
def test_bad_inputs_name_the_field(tiny_pipeline, make_request, change, field):
    # Named as the protocol names them, so the server passes the name on as it is.
    with pytest.raises(SettingError) as caught:
        tiny_pipeline(**make_request(**change))
    assert isinstance(caught.value, ValueError) and caught.value.field == field


def test_bad_preview_interval(tiny_pipeline, make_request):
    with pytest.raises(SettingError) as caught:
        tiny_pipeline(**make_request(), preview_interval=-1)
    assert caught.value.field == "preview_interval"
