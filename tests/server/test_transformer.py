"""The block runner against diffusers' own FluxTransformer2DModel, and the condition stream's conventions."""

import torch

from inference_server.attention import AttentionLayout, DenseMaskAttention, SplitConditionAttention
from inference_server.condition import condition_position_ids
from inference_server.latents import image_position_ids, text_position_ids
from inference_server.tiny import build_tiny_components
from inference_server.transformer import SeeThroughTransformer

TEXT, IMAGE, COND = 512, 256, 1024  # a 256 x 256 image


def random_inputs(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    prompt = torch.randn(1, TEXT, 32, generator=generator)
    pooled = torch.randn(1, 32, generator=generator)
    latents = torch.randn(1, IMAGE, 16, generator=generator)
    cond = torch.randn(1, COND, 16, generator=generator)
    return prompt, pooled, latents, cond


def test_without_condition_tokens_it_is_exactly_diffusers_flux():
    model = build_tiny_components(0).transformer
    prompt, pooled, latents, _ = random_inputs()
    layout = AttentionLayout(TEXT, IMAGE, 0, [], torch.zeros(0, 0, dtype=torch.bool))
    attend = DenseMaskAttention().prepare(layout, torch.device("cpu"), torch.float32)
    runner = SeeThroughTransformer(model, None)
    ids = image_position_ids(256, 256)
    request = runner.prepare(prompt, pooled, torch.zeros(1, 0, 16), 3.5, ids, torch.zeros(0, 3), attend)
    timestep = torch.tensor([0.7])
    ours = runner(latents, timestep, request)
    with torch.inference_mode():
        expected = model(
            hidden_states=latents,
            encoder_hidden_states=prompt,
            pooled_projections=pooled,
            timestep=timestep,
            img_ids=ids,
            txt_ids=text_position_ids(TEXT),
            guidance=torch.tensor([3.5]),
            return_dict=False,
        )[0]
    assert torch.equal(ours, expected)


def test_condition_stream_uses_timestep_zero_modulation_and_follows_the_image():
    parts = build_tiny_components(0)
    model = parts.transformer
    prompt, pooled, latents, cond = random_inputs(1)
    masks = torch.zeros(1, COND, dtype=torch.bool)
    masks[0, :100] = True
    layout = AttentionLayout(TEXT, IMAGE, COND, [[4, 5]], masks)
    attend = SplitConditionAttention().prepare(layout, torch.device("cpu"), torch.float32)
    runner = SeeThroughTransformer(model, parts.condition_lora)

    embeddings, norm_calls = [], []
    model.time_text_embed.register_forward_hook(
        lambda mod, args, out: embeddings.append((args[0].clone(), out))
    )
    model.transformer_blocks[0].norm1.register_forward_hook(
        lambda mod, args, kwargs, out: norm_calls.append((args[0].shape[1], kwargs["emb"])), with_kwargs=True
    )
    request = runner.prepare(
        prompt, pooled, cond, 3.5, image_position_ids(256, 256), condition_position_ids(256, 256), attend
    )
    runner(latents, torch.tensor([0.6]), request)

    (zero_t, cond_temb), (step_t, temb) = embeddings
    assert zero_t.tolist() == [0.0] and torch.allclose(step_t, torch.tensor([600.0]))
    assert torch.equal(request.cond_temb, cond_temb)
    assert [tokens for tokens, _ in norm_calls] == [IMAGE, COND]  # same norm1 layer for both streams
    assert torch.equal(norm_calls[0][1], temb) and torch.equal(norm_calls[1][1], cond_temb)

    # RoPE over [text | image | condition], in that order
    cos, _ = request.rotary
    assert cos.shape[0] == TEXT + IMAGE + COND
    cond_cos, _ = model.pos_embed(condition_position_ids(256, 256))
    assert torch.equal(cos[TEXT + IMAGE :], cond_cos)
