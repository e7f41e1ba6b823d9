"""Running diffusers' FluxTransformer2DModel with SeeThrough3D's extra condition stream.

The weights are the stock FLUX.1-dev transformer; only the forward pass differs from diffusers':
- the 1024 condition tokens are embedded by the model's own ``x_embedder`` and go through every
  block beside the image tokens, using the image stream's own layers (norms, projections, MLPs);
- their AdaLN modulation comes from ``time_text_embed(timestep 0, guidance, pooled)``, while text and
  image use the real timestep;
- attention runs over [text | image | condition] with SeeThrough3D's mask (``attention.py``), and the
  SeeThrough3D LoRAs (``lora.py``) act on the condition tokens only.

Everything that does not change during one generation (text embedding, condition embedding, the
condition's modulation, RoPE tables, attention masks) is computed once per request in ``prepare``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.embeddings import apply_rotary_emb

from .attention import JointAttention
from .latents import text_position_ids
from .lora import BlockLoRA, SeeThroughLoRA

Rotary = tuple[torch.Tensor, torch.Tensor]


@dataclass
class RequestConstants:
    """The transformer's per-request inputs that stay fixed across denoising steps."""

    text_hidden: torch.Tensor  # [1, T, dim]: context_embedder(T5 embeddings)
    cond_hidden: torch.Tensor  # [1, C, dim]: x_embedder(condition latents)
    pooled: torch.Tensor  # [1, pooled_dim]: CLIP pooled embedding
    guidance: torch.Tensor | None  # [1] guidance scale (FLUX.1-dev's guidance embedding)
    cond_temb: torch.Tensor  # [1, dim]: modulation embedding of the condition stream (timestep 0)
    rotary: Rotary  # RoPE cos/sin over [text | image | condition]
    attend: JointAttention


class SeeThroughTransformer:
    """Noise prediction for image latents given a prepared request."""

    def __init__(self, model: FluxTransformer2DModel, condition_lora: SeeThroughLoRA | None = None) -> None:
        self.model = model
        self.condition_lora = condition_lora

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.x_embedder.weight.dtype

    def _time_embedding(
        self, timestep_1000: torch.Tensor, guidance: torch.Tensor | None, pooled: torch.Tensor
    ) -> torch.Tensor:
        """``time_text_embed`` the way FluxTransformer2DModel.forward calls it (values scaled by 1000)."""
        if guidance is None:
            return self.model.time_text_embed(timestep_1000, pooled)
        return self.model.time_text_embed(timestep_1000, guidance.to(self.dtype) * 1000, pooled)

    @torch.inference_mode()
    def prepare(
        self,
        prompt_embeds: torch.Tensor,
        pooled_embeds: torch.Tensor,
        cond_latents: torch.Tensor,
        guidance_scale: float,
        image_ids: torch.Tensor,
        cond_ids: torch.Tensor,
        attend: JointAttention,
    ) -> RequestConstants:
        model, device, dtype = self.model, self.device, self.dtype
        text_hidden = model.context_embedder(prompt_embeds.to(device=device, dtype=dtype))
        cond_hidden = model.x_embedder(cond_latents.to(device=device, dtype=dtype))
        pooled = pooled_embeds.to(device=device, dtype=dtype)
        guidance = None
        if model.config.guidance_embeds:
            guidance = torch.full([1], guidance_scale, device=device, dtype=torch.float32)
        cond_timestep = torch.zeros(1, device=device, dtype=dtype)
        cond_temb = self._time_embedding(cond_timestep, guidance, pooled)
        ids = torch.cat([text_position_ids(text_hidden.shape[1]), image_ids, cond_ids], dim=0)
        rotary = model.pos_embed(ids.to(device))
        return RequestConstants(text_hidden, cond_hidden, pooled, guidance, cond_temb, rotary, attend)

    @torch.inference_mode()
    def __call__(
        self, latents: torch.Tensor, timestep: torch.Tensor, request: RequestConstants
    ) -> torch.Tensor:
        """``timestep`` in [0, 1] (sigma), shape [1]; returns the flow prediction for ``latents``."""
        model = self.model
        image = model.x_embedder(latents)
        temb = self._time_embedding(timestep.to(image.dtype) * 1000, request.guidance, request.pooled)
        text, cond = request.text_hidden, request.cond_hidden
        lora = self.condition_lora

        for index, block in enumerate(model.transformer_blocks):
            block_lora = lora.double_blocks[index] if lora is not None else None
            text, image, cond = run_double_block(
                block, block_lora, text, image, cond, temb, request.cond_temb, request.rotary, request.attend
            )

        text_len = text.shape[1]
        joint = torch.cat([text, image], dim=1)
        for index, block in enumerate(model.single_transformer_blocks):
            block_lora = lora.single_blocks[index] if lora is not None else None
            joint, cond = run_single_block(
                block, block_lora, joint, cond, temb, request.cond_temb, request.rotary, request.attend
            )

        image = model.norm_out(joint[:, text_len:], temb)
        return model.proj_out(image)


def _image_qkv(attn, hidden: torch.Tensor, lora: BlockLoRA | None) -> tuple[torch.Tensor, ...]:
    """to_q/to_k/to_v (+ condition LoRA) split into heads, with the q/k RMSNorm."""
    query, key, value = attn.to_q(hidden), attn.to_k(hidden), attn.to_v(hidden)
    if lora is not None:
        query = query + lora["q"](hidden)
        key = key + lora["k"](hidden)
        value = value + lora["v"](hidden)
    heads = (-1, attn.head_dim)
    return (
        attn.norm_q(query.unflatten(-1, heads)),
        attn.norm_k(key.unflatten(-1, heads)),
        value.unflatten(-1, heads),
    )


def _text_qkv(attn, hidden: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """The double-stream blocks' separate text projections."""
    heads = (-1, attn.head_dim)
    query = attn.norm_added_q(attn.add_q_proj(hidden).unflatten(-1, heads))
    key = attn.norm_added_k(attn.add_k_proj(hidden).unflatten(-1, heads))
    return query, key, attn.add_v_proj(hidden).unflatten(-1, heads)


def _attention(parts: list[tuple[torch.Tensor, ...]], rotary: Rotary, attend: JointAttention) -> torch.Tensor:
    """Concatenate the streams' q/k/v in sequence order, apply RoPE, attend."""
    query = apply_rotary_emb(torch.cat([part[0] for part in parts], dim=1), rotary, sequence_dim=1)
    key = apply_rotary_emb(torch.cat([part[1] for part in parts], dim=1), rotary, sequence_dim=1)
    value = torch.cat([part[2] for part in parts], dim=1)
    return attend(query, key, value).to(query.dtype)


def _residual_mlp(
    norm, feed_forward, hidden, attn_out, gate_msa, shift_mlp, scale_mlp, gate_mlp
) -> torch.Tensor:
    """The double-stream block's gated attention residual, then its modulated, gated MLP."""
    hidden = hidden + gate_msa.unsqueeze(1) * attn_out
    normed = norm(hidden) * (1 + scale_mlp[:, None]) + shift_mlp[:, None]
    return hidden + gate_mlp.unsqueeze(1) * feed_forward(normed)


def run_double_block(
    block,
    lora: BlockLoRA | None,
    text: torch.Tensor,
    image: torch.Tensor,
    cond: torch.Tensor,
    temb: torch.Tensor,
    cond_temb: torch.Tensor,
    rotary: Rotary,
    attend: JointAttention,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One FluxTransformerBlock over three streams; the condition shares the image stream's layers."""
    attn = block.attn
    image_in, *image_mod = block.norm1(image, emb=temb)
    cond_in, *cond_mod = block.norm1(cond, emb=cond_temb)
    text_in, *text_mod = block.norm1_context(text, emb=temb)

    out = _attention(
        [_text_qkv(attn, text_in), _image_qkv(attn, image_in, None), _image_qkv(attn, cond_in, lora)],
        rotary,
        attend,
    )
    text_out, image_out, cond_out = out.split([text.shape[1], image.shape[1], cond.shape[1]], dim=1)
    image_out = attn.to_out[1](attn.to_out[0](image_out))
    cond_out = attn.to_out[0](cond_out)
    if lora is not None:
        cond_out = cond_out + lora["proj"](cond_out)  # trained on the output projection's output
    cond_out = attn.to_out[1](cond_out)
    text_out = attn.to_add_out(text_out)

    image = _residual_mlp(block.norm2, block.ff, image, image_out, *image_mod)
    cond = _residual_mlp(block.norm2, block.ff, cond, cond_out, *cond_mod)
    text = _residual_mlp(block.norm2_context, block.ff_context, text, text_out, *text_mod)
    if text.dtype == torch.float16:
        text = text.clip(-65504, 65504)
    return text, image, cond


def run_single_block(
    block,
    lora: BlockLoRA | None,
    joint: torch.Tensor,
    cond: torch.Tensor,
    temb: torch.Tensor,
    cond_temb: torch.Tensor,
    rotary: Rotary,
    attend: JointAttention,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One FluxSingleTransformerBlock over [text|image] (``joint``) and the condition stream."""
    attn = block.attn
    joint_in, joint_gate = block.norm(joint, emb=temb)
    cond_in, cond_gate = block.norm(cond, emb=cond_temb)
    joint_mlp = block.act_mlp(block.proj_mlp(joint_in))
    cond_mlp = block.act_mlp(block.proj_mlp(cond_in))

    out = _attention([_image_qkv(attn, joint_in, None), _image_qkv(attn, cond_in, lora)], rotary, attend)
    joint_out, cond_out = out.split([joint.shape[1], cond.shape[1]], dim=1)

    joint = joint + joint_gate.unsqueeze(1) * block.proj_out(torch.cat([joint_out, joint_mlp], dim=2))
    cond = cond + cond_gate.unsqueeze(1) * block.proj_out(torch.cat([cond_out, cond_mlp], dim=2))
    if joint.dtype == torch.float16:
        joint = joint.clip(-65504, 65504)
    return joint, cond
