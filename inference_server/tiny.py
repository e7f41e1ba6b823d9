"""A tiny FLUX with random weights: the real classes at toy sizes, built in code, no downloads.

Same component classes as FLUX.1-dev (diffusers FluxTransformer2DModel, AutoencoderKL with 8x
downsampling, FlowMatchEulerDiscreteScheduler with FLUX.1-dev's config; transformers CLIPTextModel and
T5EncoderModel) and tokenizers with real character offsets, so every code path of the pipeline runs.
Its images are noise. Everything is deterministic in ``seed``.
"""

from __future__ import annotations

import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import CLIPTextConfig, CLIPTextModel, PreTrainedTokenizerFast, T5Config, T5EncoderModel

from .components import FluxComponents
from .lora import SeeThroughLoRA

TINY_LORA_RANK = 4

# FLUX.1-dev's scheduler settings (its scheduler_config.json)
FLUX_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}

# Whole words get one piece; some words are deliberately missing so they split into subwords
# ("mars" -> "▁mar" "s", "spaceship" -> "▁space" "ship", "astronaut" -> "▁astro" "naut").
_WORDS = (
    "a photo of and on in at the with to from under over behind near next front back left right "
    "mar rover astro alien standing ground space blue neon robotic dog slight glow sci fi background "
    "scary red green yellow white black small big old new car tree house cat table chair lamp room "
    "night day street city forest beach sky sun moon man woman boy girl robot box cube ball vase book"
).split()
_SUFFIXES = ("s", "ship", "naut", "ing", "ed", "er", "ly")
_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789,.-!?'\"():;"


def _unigram_pieces(specials: list[str]) -> list[tuple[str, float]]:
    """Vocabulary with log-probability scores: specials, words, suffixes, then single characters."""
    pieces = [(token, 0.0) for token in specials]
    pieces.append(("▁", -8.0))
    pieces += [("▁" + word, -5.0) for word in _WORDS]
    pieces += [(suffix, -6.0) for suffix in _SUFFIXES if suffix not in _WORDS]
    pieces += [(char, -12.0) for char in _CHARACTERS]
    pieces += [("▁" + char, -13.0) for char in _CHARACTERS if char not in _WORDS]
    unique: dict[str, float] = {}
    for piece, score in pieces:
        unique.setdefault(piece, score)
    return list(unique.items())


def tiny_t5_tokenizer() -> PreTrainedTokenizerFast:
    """SentencePiece-style (Metaspace + Unigram) tokenizer with T5's specials: pad 0, EOS 1, unk 2."""
    pieces = _unigram_pieces(["<pad>", "</s>", "<unk>"])
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", pad_token="<pad>", unk_token="<unk>", model_max_length=512
    )


def tiny_clip_tokenizer() -> PreTrainedTokenizerFast:
    """Lower-casing tokenizer with CLIP's specials (EOS 0 doubles as padding, BOS 1) and 77 tokens."""
    pieces = _unigram_pieces(["<|endoftext|>", "<|startoftext|>", "<unk>"])
    backend = Tokenizer(models.Unigram(pieces, unk_id=2, byte_fallback=False))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    backend.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    backend.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 0)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<unk>",
        model_max_length=77,
    )


def build_tiny_components(seed: int = 0) -> FluxComponents:
    """All pipeline components at toy size with weights drawn from ``seed`` (global RNG untouched)."""
    tokenizer = tiny_clip_tokenizer()
    tokenizer_2 = tiny_t5_tokenizer()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=32,
                intermediate_size=64,
                projection_dim=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                max_position_embeddings=77,
                pad_token_id=0,
                bos_token_id=1,
                eos_token_id=0,
            )
        )
        text_encoder_2 = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer_2),
                d_model=32,
                d_kv=8,
                d_ff=64,
                num_layers=1,
                num_heads=4,
                relative_attention_num_buckets=8,
                feed_forward_proj="gated-gelu",
                pad_token_id=0,
                eos_token_id=1,
                decoder_start_token_id=0,
            )
        )
        vae = AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,  # 4 blocks = 8x downsampling, as FLUX's VAE
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            latent_channels=4,
            norm_num_groups=4,
            sample_size=256,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
        transformer = FluxTransformer2DModel(
            patch_size=1,
            in_channels=16,  # 4 latent channels x 2x2 patch
            num_layers=2,
            num_single_layers=2,
            attention_head_dim=16,
            num_attention_heads=2,
            joint_attention_dim=32,
            pooled_projection_dim=32,
            guidance_embeds=True,
            axes_dims_rope=(4, 6, 6),
        )
    condition_lora = SeeThroughLoRA.random(
        features=transformer.inner_dim,
        rank=TINY_LORA_RANK,
        num_double=len(transformer.transformer_blocks),
        num_single=len(transformer.single_transformer_blocks),
        seed=seed + 1,
    )
    for module in (text_encoder, text_encoder_2, vae, transformer, condition_lora):
        module.eval().requires_grad_(False)  # freshly built modules start in training mode (dropout on)
    return FluxComponents(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG),
        condition_lora=condition_lora,
    )
