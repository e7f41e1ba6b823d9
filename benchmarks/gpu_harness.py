"""The GPU benchmark's measuring parts: FLUX.1-dev-sized models with random weights, one request per
variant, timing, peak memory, the cached-vs-exact distance, the attention op alone and profiles."""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import platform
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
from gpu_report import VARIANTS, Variant
from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

from inference_server.attention import ATTENTION_PROCESSORS, AttentionLayout, plain_attention
from inference_server.components import FluxComponents
from inference_server.lora import SeeThroughLoRA
from inference_server.pipeline import SeeThroughPipeline, StepInfo
from inference_server.placement import STREAMED_TEXT_ENCODER_MODES
from inference_server.tiny import (
    FLUX_SCHEDULER_CONFIG,
    build_tiny_components,
    tiny_clip_tokenizer,
    tiny_t5_tokenizer,
)
from seethrough_core.condition_input import ConditionInput
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.limits import DEFAULT_GUIDANCE
from seethrough_core.prompt import compose_prompt

CONFIGS = Path(__file__).with_name("flux_dev_configs.json")

SCENE = "on mars, sci-fi background, scary."
DESCRIPTIONS = ["mars rover", "astronaut", "spaceship"]
SEED = 42
GUIDANCE = DEFAULT_GUIDANCE


def describe_machine(device: torch.device) -> str:
    versions = f"torch {torch.__version__}"
    if device.type != "cuda":
        return (
            f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {versions}"
        )
    try:
        driver = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=driver_version",
                "--format=csv,noheader",
                f"--id={device.index or 0}",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        driver = "unknown"
    return f"{torch.cuda.get_device_name(device)}, driver {driver}, {versions}, CUDA {torch.version.cuda}"


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build the weights directly in the compute dtype
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


def flux_dev_components(device: torch.device, dtype: torch.dtype, memory: str) -> FluxComponents:
    """FLUX.1-dev-sized components with random weights, initialised on ``device`` (seconds there, minutes
    on the CPU). In the 24-GB mode the transformer and T5 then move to CPU memory, where from_pretrained
    loads them, and the pipeline quantizes / streams them from there."""
    configs = json.loads(CONFIGS.read_text())
    with default_dtype(dtype), device:
        transformer = FluxTransformer2DModel(**configs["transformer"])
        text_encoder_2 = T5EncoderModel(T5Config(**configs["text_encoder_2"]))
        text_encoder = CLIPTextModel(CLIPTextConfig(**configs["text_encoder"]))
        vae = AutoencoderKL(**configs["vae"])
    if memory in STREAMED_TEXT_ENCODER_MODES:
        transformer.to("cpu")
        text_encoder_2.to("cpu")
    blocks = len(transformer.transformer_blocks), len(transformer.single_transformer_blocks)
    lora = SeeThroughLoRA.random(transformer.inner_dim, configs["seethrough_lora_rank"], *blocks, seed=0)
    for module in (transformer, text_encoder_2, text_encoder, vae, lora):
        module.eval().requires_grad_(False)
    return FluxComponents(
        transformer=transformer,
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        # Only ids in range matter for speed; these produce real offsets for call_ids, with no download.
        tokenizer=tiny_clip_tokenizer(),
        tokenizer_2=tiny_t5_tokenizer(),
        scheduler=FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG),
        condition_lora=lora,
    )


@dataclass
class Pipelines:
    ours: SeeThroughPipeline
    plain: FluxPipeline
    model: str  # what the rows say about the weights


def build_pipelines(
    args: argparse.Namespace, device: torch.device, memory: str, quantization: str
) -> Pipelines:
    dtype = torch.float32 if args.tiny else torch.bfloat16
    if args.model:
        ours = SeeThroughPipeline.from_pretrained(
            args.model,
            args.lora,
            device=str(device),
            dtype="bfloat16",
            memory=memory,
            quantization=quantization,
        )
        model = f"FLUX.1-dev {args.model}"
    else:
        parts = build_tiny_components(0) if args.tiny else flux_dev_components(device, dtype, memory)
        ours = SeeThroughPipeline(
            parts,
            device=device,
            memory=memory,
            quantization=quantization,
            model_name="bench",
        )
        model = "tiny, random weights" if args.tiny else "FLUX.1-dev size, random weights"
    plain = FluxPipeline(
        transformer=ours.transformer,
        vae=ours.vae,
        text_encoder=ours.text_encoder,
        text_encoder_2=ours.text_encoder_2,  # streamed in the 24-GB mode: the hooks sit on the module
        tokenizer=ours.tokenizer,
        tokenizer_2=ours.tokenizer_2,
        scheduler=FlowMatchEulerDiscreteScheduler.from_config(ours.scheduler.config),
    )
    plain.set_progress_bar_config(disable=True)
    return Pipelines(ours, plain, model)


# --- one request --------------------------------------------------------------------------------------


def request(size: int, steps: int) -> tuple[GenerationSettings, ConditionInput]:
    """A three-box request at ``size`` px: overlapping boxes, a random stand-in OSCR image."""
    masks = np.zeros((3, 32, 32), dtype=bool)
    masks[0, 4:20, 2:14], masks[1, 10:28, 10:24], masks[2, 16:30, 18:31] = True, True, True
    oscr = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    settings = GenerationSettings(SCENE, list(DESCRIPTIONS), size, size, SEED, steps, GUIDANCE)
    return settings, ConditionInput(oscr, masks)


class Run:
    """Generates one image with a variant; ``steps_computed`` is the last image's count."""

    def __init__(self, call: Callable[[], tuple[np.ndarray, int]]) -> None:
        self.call = call
        self.steps_computed: int | None = None

    def __call__(self) -> np.ndarray:
        image, self.steps_computed = self.call()
        return image


def runner(pipes: Pipelines, variant: Variant, size: int, steps: int) -> Run:
    """A function that generates one image with ``variant`` (a draft: the draft of a ``size`` layout)."""
    if variant.attention is None:
        prompt = compose_prompt(SCENE, list(DESCRIPTIONS)).text

        def plain() -> tuple[np.ndarray, int]:
            image = pipes.plain(
                prompt=prompt,
                height=size,
                width=size,
                num_inference_steps=steps,
                guidance_scale=GUIDANCE,
                generator=torch.Generator("cpu").manual_seed(SEED),
                output_type="np",
                max_sequence_length=512,
            ).images[0]
            return image, steps

        return Run(plain)

    settings, condition = request(size, steps)
    settings = replace(settings, condition_cache=variant.condition_cache, step_cache=variant.step_cache)
    if variant.draft:  # the preset's size and speed options, as the add-on's Draft sends them
        settings = settings.draft()

    def ours() -> tuple[np.ndarray, int]:
        pipes.ours.set_attention(variant.attention)
        output = pipes.ours.generate(settings, condition)
        return output.image, output.steps_computed

    return Run(ours)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(run: Callable[[], object], repeats: int, device: torch.device) -> tuple[float, list[float]]:
    """(first call's seconds, the next ``repeats`` calls' seconds)."""
    times = []
    for _ in range(repeats + 1):
        sync(device)
        started = time.perf_counter()
        run()
        sync(device)
        times.append(time.perf_counter() - started)
    return times[0], times[1:]


def free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peaks(device: torch.device) -> tuple[float | None, float | None]:
    if device.type != "cuda":
        return None, None
    return torch.cuda.max_memory_allocated(device) / 2**30, torch.cuda.max_memory_reserved(device) / 2**30


def measure_fidelity(pipes: Pipelines, size: int, steps: int) -> tuple[list[float], float, int, float]:
    """Exact vs cached with the same inputs: per-step latent distance, final latent and image distances."""
    pipeline = pipes.ours
    pipeline.set_attention("split")
    settings, condition = request(size, steps)

    def run(cache: bool) -> tuple[list[torch.Tensor], np.ndarray]:
        latents: list[torch.Tensor] = []

        def keep(info: StepInfo) -> None:
            latents.append(info.latents.float().cpu())

        image = pipeline.generate(
            replace(settings, condition_cache=cache), condition, step_callback=keep
        ).image
        return latents, image

    exact_latents, exact_image = run(False)
    cached_latents, cached_image = run(True)
    rel = [float((c - e).norm() / e.norm()) for e, c in zip(exact_latents, cached_latents, strict=True)]
    latent_max = float((cached_latents[-1] - exact_latents[-1]).abs().max())
    difference = exact_image.astype(np.float64) - cached_image.astype(np.float64)
    mse = float((difference**2).mean())
    psnr = math.inf if mse == 0 else 10 * math.log10(255**2 / mse)
    return rel, latent_max, int(np.abs(difference).max()), psnr


def measure_attention(
    device: torch.device, dtype: torch.dtype, heads: int, head_dim: int, size: int, iterations: int
) -> dict[str, float]:
    """Milliseconds per attention call of one block at ``size`` px, per variant (random q/k/v)."""
    text, image, cond = 512, (size // 16) ** 2, 1024
    masks = torch.from_numpy(request(size, 1)[1].token_grids.reshape(3, -1))
    layout = AttentionLayout(text, image, cond, [[3, 4, 5], [7, 8], [10, 11, 12]], masks)
    generator = torch.Generator(device).manual_seed(0)
    query, key, value = (
        torch.randn(1, text + image + cond, heads, head_dim, generator=generator, device=device, dtype=dtype)
        for _ in range(3)
    )
    main = text + image
    calls = {
        "plain": lambda: plain_attention(query[:, :main], key[:, :main], value[:, :main]),
        "cached": lambda: plain_attention(query[:, :main], key, value),  # text+image rows over all keys
    }
    for variant in VARIANTS:
        if variant.attention is not None and not variant.condition_cache:
            attend = ATTENTION_PROCESSORS[variant.attention]().prepare(layout, device, dtype)
            calls[variant.name] = lambda attend=attend: attend(query, key, value)
    timings = {}
    with torch.inference_mode():
        for name, call in calls.items():
            for _ in range(3):  # warm-up: kernel selection, allocator
                call()
            sync(device)
            started = time.perf_counter()
            for _ in range(iterations):
                call()
            sync(device)
            timings[name] = (time.perf_counter() - started) / iterations * 1000
    return timings


def profile(
    pipes: Pipelines,
    variants: list[Variant],
    size: int,
    args: argparse.Namespace,
    device: torch.device,
    title: str,
) -> None:
    """Where the time goes: torch.profiler over a few steps of each variant, the top operators by device
    time (self time on the CPU), appended to ``args.profile_out``."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as profiler

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sort = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    args.profile_out.parent.mkdir(parents=True, exist_ok=True)
    with args.profile_out.open("a") as out:
        for variant in variants:
            run = runner(pipes, variant, size, args.profile_steps)
            run()  # warm: the first call at a step count builds its schedule and buffers
            sync(device)
            with profiler(activities=activities) as recorded:
                run()
                sync(device)
            table = recorded.key_averages().table(
                sort_by=sort, row_limit=args.profile_rows, max_name_column_width=60
            )
            out.write(f"## {title}: {variant.name}, {size} px, {args.profile_steps} steps\n\n{table}\n\n")
            out.flush()
            print(f"  profiled {variant.name} at {size} px -> {args.profile_out}")
