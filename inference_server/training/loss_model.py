"""One sample's training loss, computed through the server's own transformer forward.

The module holds only the trainable LoRA as a parameter (so accelerate's data-parallel wrapper syncs
only its gradients); the frozen FLUX transformer is reached through ``SeeThroughTransformer``, the
same forward the server denoises with. Each sample runs alone, with its own attention mask (its boxes
and text tokens); a batch is several samples whose gradients accumulate before the optimizer step.
"""

from __future__ import annotations

import torch
from diffusers import FluxTransformer2DModel
from torch import nn

from seethrough_core.limits import TRAIN_GUIDANCE

from ..attention import AttentionLayout, SplitConditionAttention
from ..condition import CONDITION_TOKENS, condition_position_ids
from ..latents import image_position_ids, pack_latents
from ..lora import SeeThroughLoRA
from ..transformer import BlockRunners, SeeThroughTransformer
from .amodal_weights import amodal_balanced_weights
from .flow_loss import MicroBatchDraw, flow_matching_loss, noisy_latents
from .sample_cache import EncodedSample, PromptEmbeds


class LoRALossModel(nn.Module):
    def __init__(
        self,
        transformer: FluxTransformer2DModel,
        lora: SeeThroughLoRA,
        runners: BlockRunners,
        dropped_caption: PromptEmbeds,
        amodal_weight: float | None,
    ) -> None:
        super().__init__()
        self.lora = lora
        self.forward_pass = SeeThroughTransformer(transformer, lora, runners)  # not a module: stays frozen
        self.dropped_caption = dropped_caption
        self.amodal_weight = amodal_weight  # None: the plain flow loss

    def forward(self, sample: EncodedSample, draw: MicroBatchDraw) -> torch.Tensor:
        model = self.forward_pass
        device, dtype = model.device, model.dtype
        generator = torch.Generator("cpu").manual_seed(draw.seed)
        clean = _sample_latents(sample.latent_mean, sample.latent_std, generator)
        noise = torch.randn(clean.shape, generator=generator)
        cond = pack_latents(_sample_latents(sample.cond_mean, sample.cond_std, generator))
        text = self.dropped_caption if draw.drop_caption else sample
        layout = AttentionLayout(
            text_len=text.prompt_embeds.shape[0],
            image_len=clean.shape[-2] * clean.shape[-1] // 4,
            cond_len=CONDITION_TOKENS,
            call_ids=sample.call_ids,
            box_token_masks=sample.token_masks.bool(),
        )
        request = model.prepare(
            text.prompt_embeds[None],
            text.pooled_embeds[None],
            cond,
            TRAIN_GUIDANCE,
            image_position_ids(sample.height, sample.width),
            condition_position_ids(sample.height, sample.width),
            SplitConditionAttention().prepare(layout, device, dtype),
        )
        noisy = pack_latents(noisy_latents(clean, noise, draw.sigma)).to(device, dtype)
        prediction = model(noisy, torch.tensor([draw.sigma], device=device), request)
        weights = None
        if self.amodal_weight is not None:
            weights = amodal_balanced_weights(sample.visible, sample.visibility, self.amodal_weight)
        return flow_matching_loss(prediction, clean.to(device), noise.to(device), weights)


def _sample_latents(mean: torch.Tensor, std: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One draw from the cached VAE posterior: [1, C, h, w] float32 on the CPU (where the generator is;
    a data-parallel wrapper may have moved the sample to the GPU)."""
    mean, std = mean.float().cpu()[None], std.float().cpu()[None]
    return mean + std * torch.randn(mean.shape, generator=generator)
