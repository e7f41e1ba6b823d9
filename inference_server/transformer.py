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

The caller chooses the autograd mode: the pipeline denoises under ``torch.inference_mode``, and the
trainer (``training/``) runs this same forward with autograd on, so gradients reach the LoRA.

Cached condition stream (``prepare(..., cache_condition=True)``, off by default): condition rows never
attend to image tokens, so the condition tokens' keys and values in each block depend only on the
condition stream and on the text keys their boxes may see. The first step computes everything and keeps
each block's condition keys/values; later steps skip the condition tokens entirely (their projections,
MLPs and attention rows) and let the text+image rows attend to the kept keys/values. This is an
APPROXIMATION: text rows attend to image tokens, so the text hidden states change from step to step
from block 1 on, and with them the text keys the condition rows read from block 1 on, hence the condition
keys/values from block 2 on. Blocks 0 and 1 are exact, and the whole cache is exact when no condition
token lies in a box (the condition then reads no text). docs/performance.md has the measured distance.

Step cache (``prepare(..., step_cache=THRESHOLD)``, off by default; ``step_cache.py``): a step whose first
block barely changed from the last computed step reuses what the other blocks added then.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from diffusers import FluxTransformer2DModel
from diffusers.models.embeddings import apply_rotary_emb

from .attention import JointAttention, plain_attention
from .latents import text_position_ids
from .lora import BlockLoRA, SeeThroughLoRA
from .step_cache import StepCache

Rotary = tuple[torch.Tensor, torch.Tensor]
KeyValue = tuple[torch.Tensor, torch.Tensor]  # RoPE'd keys and values [1, C, heads, head_dim]


@dataclass
class ConditionCache:
    """Each block's condition keys and values, kept from the step that computed the condition stream."""

    double: list[KeyValue] = field(default_factory=list)
    single: list[KeyValue] = field(default_factory=list)
    filled: bool = False


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
    rotary_main: Rotary | None = None  # RoPE over [text | image] only: what a cached step computes
    cache: ConditionCache | None = None  # set when the condition stream is computed once and reused
    step_cache: StepCache | None = None  # set when steps may reuse the previous step's blocks (step_cache.py)


@dataclass(frozen=True)
class BlockRunners:
    """The per-block functions a forward pass calls: eager by default; ``compile.py`` compiles them
    (regional compilation: one compiled graph serves all blocks of a kind)."""

    double: Callable[..., tuple]  # run_double_block's signature
    single: Callable[..., tuple]  # run_single_block's
    double_cached: Callable[..., tuple]  # run_double_block_cached's
    single_cached: Callable[..., torch.Tensor]  # run_single_block_cached's


class SeeThroughTransformer:
    """Noise prediction for image latents given a prepared request."""

    def __init__(
        self,
        model: FluxTransformer2DModel,
        condition_lora: SeeThroughLoRA | None = None,
        runners: BlockRunners | None = None,
    ) -> None:
        self.model = model
        self.condition_lora = condition_lora
        self.runners = runners if runners is not None else EAGER_RUNNERS

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

    def prepare(
        self,
        prompt_embeds: torch.Tensor,
        pooled_embeds: torch.Tensor,
        cond_latents: torch.Tensor,
        guidance_scale: float,
        image_ids: torch.Tensor,
        cond_ids: torch.Tensor,
        attend: JointAttention,
        cache_condition: bool = False,
        step_cache: float | None = None,
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
        main_len = text_hidden.shape[1] + image_ids.shape[0]
        rotary_main = (rotary[0][:main_len], rotary[1][:main_len])
        cache = ConditionCache() if cache_condition else None
        steps = StepCache(float(step_cache)) if step_cache is not None else None
        return RequestConstants(
            text_hidden, cond_hidden, pooled, guidance, cond_temb, rotary, attend, rotary_main, cache, steps
        )

    def __call__(
        self, latents: torch.Tensor, timestep: torch.Tensor, request: RequestConstants
    ) -> torch.Tensor:
        """``timestep`` in [0, 1] (sigma), shape [1]; returns the flow prediction for ``latents``."""
        model = self.model
        image = model.x_embedder(latents)
        temb = self._time_embedding(timestep.to(image.dtype) * 1000, request.guidance, request.pooled)
        image = model.norm_out(self._blocks(image, temb, request), temb)
        return model.proj_out(image)

    def _blocks(self, image: torch.Tensor, temb: torch.Tensor, request: RequestConstants) -> torch.Tensor:
        """All blocks (or, when the step cache allows, the first one and the kept residual of the others);
        returns the image stream. Without a filled condition cache the condition stream runs beside the
        others (and fills the cache when there is one); with it, text and image attend to the kept keys."""
        cache, steps = request.cache, request.step_cache
        cond = None if cache is not None and cache.filled else request.cond_hidden
        text, first, cond = self._double_blocks(range(1), request.text_hidden, image, cond, temb, request)
        if steps is not None and steps.reuse(first - image):
            return first + steps.rest_residual
        count = len(self.model.transformer_blocks)
        text, image_out, cond = self._double_blocks(range(1, count), text, first, cond, temb, request)
        joint = self._single_blocks(torch.cat([text, image_out], dim=1), cond, temb, request)
        image_out = joint[:, text.shape[1] :]
        if steps is not None:
            steps.remember(first - image, image_out - first)
        if cache is not None:
            cache.filled = True
        return image_out

    def _double_blocks(
        self,
        indices: range,
        text: torch.Tensor,
        image: torch.Tensor,
        cond: torch.Tensor | None,
        temb: torch.Tensor,
        request: RequestConstants,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Double-stream blocks ``indices``; ``cond`` None: the condition comes from the filled cache."""
        runners, lora, cache = self.runners, self.condition_lora, request.cache
        for index in indices:
            block = self.model.transformer_blocks[index]
            if cond is None:
                key, value = cache.double[index]
                text, image = runners.double_cached(block, text, image, temb, request.rotary_main, key, value)
                continue
            block_lora = lora.double_blocks[index] if lora is not None else None
            text, image, cond, kv = runners.double(
                block, block_lora, text, image, cond, temb, request.cond_temb, request.rotary, request.attend
            )
            if cache is not None:
                cache.double.append(_keep(kv))
        return text, image, cond

    def _single_blocks(
        self, joint: torch.Tensor, cond: torch.Tensor | None, temb: torch.Tensor, request: RequestConstants
    ) -> torch.Tensor:
        """All single-stream blocks over [text|image]; ``cond`` None: the condition from the filled cache."""
        runners, lora, cache = self.runners, self.condition_lora, request.cache
        for index, block in enumerate(self.model.single_transformer_blocks):
            if cond is None:
                key, value = cache.single[index]
                joint = runners.single_cached(block, joint, temb, request.rotary_main, key, value)
                continue
            block_lora = lora.single_blocks[index] if lora is not None else None
            joint, cond, kv = runners.single(
                block, block_lora, joint, cond, temb, request.cond_temb, request.rotary, request.attend
            )
            if cache is not None:
                cache.single.append(_keep(kv))
        return joint


def _keep(kv: KeyValue) -> KeyValue:
    """Copy the condition rows out of the block's full key/value tensors, so those can be freed."""
    return kv[0].clone(), kv[1].clone()


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


def _joint_qkv(parts: list[tuple[torch.Tensor, ...]], rotary: Rotary) -> tuple[torch.Tensor, ...]:
    """Concatenate the streams' q/k/v in sequence order and apply RoPE."""
    query = apply_rotary_emb(torch.cat([part[0] for part in parts], dim=1), rotary, sequence_dim=1)
    key = apply_rotary_emb(torch.cat([part[1] for part in parts], dim=1), rotary, sequence_dim=1)
    value = torch.cat([part[2] for part in parts], dim=1)
    return query, key, value


def _attention(
    parts: list[tuple[torch.Tensor, ...]], rotary: Rotary, attend: JointAttention, cond_len: int
) -> tuple[torch.Tensor, KeyValue]:
    """Attention over all streams; also returns the condition rows' keys/values (the last ``cond_len``)."""
    query, key, value = _joint_qkv(parts, rotary)
    start = key.shape[1] - cond_len
    return attend(query, key, value).to(query.dtype), (key[:, start:], value[:, start:])


def _attention_with_cached(
    parts: list[tuple[torch.Tensor, ...]],
    rotary_main: Rotary,
    cond_key: torch.Tensor,
    cond_value: torch.Tensor,
) -> torch.Tensor:
    """Text+image rows over their own keys plus the cached condition keys/values (no mask: they see all)."""
    query, key, value = _joint_qkv(parts, rotary_main)
    key = torch.cat([key, cond_key], dim=1)
    value = torch.cat([value, cond_value], dim=1)
    return plain_attention(query, key, value).to(query.dtype)


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
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, KeyValue]:
    """One FluxTransformerBlock over three streams; the condition shares the image stream's layers.

    Returns text, image, condition and the condition rows' keys/values (for the condition cache).
    """
    attn = block.attn
    image_in, *image_mod = block.norm1(image, emb=temb)
    cond_in, *cond_mod = block.norm1(cond, emb=cond_temb)
    text_in, *text_mod = block.norm1_context(text, emb=temb)

    out, cond_kv = _attention(
        [_text_qkv(attn, text_in), _image_qkv(attn, image_in, None), _image_qkv(attn, cond_in, lora)],
        rotary,
        attend,
        cond.shape[1],
    )
    text_out, image_out, cond_out = out.split([text.shape[1], image.shape[1], cond.shape[1]], dim=1)
    cond_out = attn.to_out[0](cond_out)
    if lora is not None:
        cond_out = cond_out + lora["proj"](cond_out)  # trained on the output projection's output
    cond_out = attn.to_out[1](cond_out)
    cond = _residual_mlp(block.norm2, block.ff, cond, cond_out, *cond_mod)
    text, image = _double_text_image_out(block, text, image, text_out, image_out, text_mod, image_mod)
    return text, image, cond, cond_kv


def run_double_block_cached(
    block,
    text: torch.Tensor,
    image: torch.Tensor,
    temb: torch.Tensor,
    rotary_main: Rotary,
    cond_key: torch.Tensor,
    cond_value: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A FluxTransformerBlock over text and image only, which attend to the cached condition keys/values."""
    attn = block.attn
    image_in, *image_mod = block.norm1(image, emb=temb)
    text_in, *text_mod = block.norm1_context(text, emb=temb)
    out = _attention_with_cached(
        [_text_qkv(attn, text_in), _image_qkv(attn, image_in, None)], rotary_main, cond_key, cond_value
    )
    text_out, image_out = out.split([text.shape[1], image.shape[1]], dim=1)
    return _double_text_image_out(block, text, image, text_out, image_out, text_mod, image_mod)


def _double_text_image_out(
    block, text, image, text_out, image_out, text_mod, image_mod
) -> tuple[torch.Tensor, torch.Tensor]:
    """The text and image streams' output projections, residuals and MLPs in a double-stream block."""
    attn = block.attn
    image_out = attn.to_out[1](attn.to_out[0](image_out))
    text_out = attn.to_add_out(text_out)
    image = _residual_mlp(block.norm2, block.ff, image, image_out, *image_mod)
    text = _residual_mlp(block.norm2_context, block.ff_context, text, text_out, *text_mod)
    if text.dtype == torch.float16:
        text = text.clip(-65504, 65504)
    return text, image


def run_single_block(
    block,
    lora: BlockLoRA | None,
    joint: torch.Tensor,
    cond: torch.Tensor,
    temb: torch.Tensor,
    cond_temb: torch.Tensor,
    rotary: Rotary,
    attend: JointAttention,
) -> tuple[torch.Tensor, torch.Tensor, KeyValue]:
    """One FluxSingleTransformerBlock over [text|image] (``joint``) and the condition stream.

    Returns joint, condition and the condition rows' keys/values (for the condition cache).
    """
    attn = block.attn
    joint_in, joint_gate = block.norm(joint, emb=temb)
    cond_in, cond_gate = block.norm(cond, emb=cond_temb)
    cond_mlp = block.act_mlp(block.proj_mlp(cond_in))

    out, cond_kv = _attention(
        [_image_qkv(attn, joint_in, None), _image_qkv(attn, cond_in, lora)], rotary, attend, cond.shape[1]
    )
    joint_out, cond_out = out.split([joint.shape[1], cond.shape[1]], dim=1)
    cond = cond + cond_gate.unsqueeze(1) * block.proj_out(torch.cat([cond_out, cond_mlp], dim=2))
    return _single_joint_out(block, joint, joint_in, joint_gate, joint_out), cond, cond_kv


def run_single_block_cached(
    block,
    joint: torch.Tensor,
    temb: torch.Tensor,
    rotary_main: Rotary,
    cond_key: torch.Tensor,
    cond_value: torch.Tensor,
) -> torch.Tensor:
    """A FluxSingleTransformerBlock over [text|image], which attends to the cached condition keys/values."""
    joint_in, joint_gate = block.norm(joint, emb=temb)
    joint_out = _attention_with_cached(
        [_image_qkv(block.attn, joint_in, None)], rotary_main, cond_key, cond_value
    )
    return _single_joint_out(block, joint, joint_in, joint_gate, joint_out)


def _single_joint_out(block, joint, joint_in, joint_gate, joint_out) -> torch.Tensor:
    """The [text|image] stream's MLP, output projection and gated residual in a single-stream block."""
    joint_mlp = block.act_mlp(block.proj_mlp(joint_in))
    joint = joint + joint_gate.unsqueeze(1) * block.proj_out(torch.cat([joint_out, joint_mlp], dim=2))
    if joint.dtype == torch.float16:
        joint = joint.clip(-65504, 65504)
    return joint


EAGER_RUNNERS = BlockRunners(
    double=run_double_block,
    single=run_single_block,
    double_cached=run_double_block_cached,
    single_cached=run_single_block_cached,
)
