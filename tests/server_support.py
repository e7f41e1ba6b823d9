"""Shared by the server tests: the real tiny pipeline, a gate to hold a job mid-generation, and servers
on ephemeral loopback ports.

The gate is the only change to the pipeline: it can pause the real pipeline after a step so a
test decides exactly when a cancel, a disconnect or a second client happens, instead of racing a
sleep. Everything else (denoising, decode, previews) is the real code at tiny size.
"""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from protocol_support import request_of
from safetensors.torch import save_file

from inference_server.lora import SeeThroughLoRA
from inference_server.pipeline import SeeThroughPipeline, StepInfo
from inference_server.server import SeeThroughServer, ServerConfig
from seethrough_core.generation_settings import GenerationSettings
from seethrough_core.protocol import GenerateRequest

GATE_TIMEOUT_S = 60.0


class GatedPipeline:
    """SeeThroughPipeline.tiny() with a gate checked after every step, and a count of VAE decodes."""

    def __init__(self, inner: SeeThroughPipeline) -> None:
        self.inner = inner
        self.max_boxes = inner.max_boxes
        self.max_prompt_tokens = inner.max_prompt_tokens
        self.prompt_checker = inner.prompt_checker
        self.is_noise = inner.is_noise
        self.gate = threading.Event()
        self.gate.set()
        self.reached: queue.Queue[tuple[str, int]] = queue.Queue()  # (scene_prompt, step) at the gate
        self.calls: list[str] = []  # scene prompts, in the order the pipeline ran them
        self.decodes = 0
        decode = inner.decode

        def counting_decode(*args: Any, **kwargs: Any) -> np.ndarray:
            self.decodes += 1
            return decode(*args, **kwargs)

        inner.decode = counting_decode  # the pipeline calls self.decode for its VAE decode

    @property
    def identity(self) -> dict[str, Any]:
        return self.inner.identity

    def __getattr__(self, name: str) -> Any:  # the rest (LoRA changes, log lines) as the real one has it
        return getattr(self.inner, name)

    def generate(
        self, settings: GenerationSettings, *args: Any, step_callback: Any = None, **kwargs: Any
    ) -> Any:
        prompt = settings.scene_prompt
        self.calls.append(prompt)

        def gated(info: StepInfo) -> None:
            self.reached.put((prompt, info.step))
            if not self.gate.wait(GATE_TIMEOUT_S):
                raise RuntimeError("the test never opened the gate")
            if step_callback is not None:
                step_callback(info)

        return self.inner.generate(settings, *args, step_callback=gated, **kwargs)

    def hold(self) -> None:
        """Jobs pause after their next step until release()."""
        while not self.reached.empty():
            self.reached.get_nowait()
        self.gate.clear()

    def release(self) -> None:
        self.gate.set()

    def wait_until_held(self, prompt: str, timeout_s: float = 60.0) -> int:
        """Block until the job with this scene prompt is paused at the gate; returns its step."""
        while True:
            seen, step = self.reached.get(timeout=timeout_s)
            if seen == prompt:
                return step


def run_in_process(pipeline: Any, request: GenerateRequest, **settings: Any) -> Any:
    """The pipeline called directly with a protocol request's settings (``settings`` changed), condition
    and edit, as the server's worker calls it."""
    edit = settings.pop("edit", request.edit)
    step_callback = settings.pop("step_callback", None)
    changed = replace(request.settings, **settings)
    return pipeline.generate(changed, request.condition(), edit, step_callback=step_callback)


def random_lora_for(pipeline: SeeThroughPipeline, seed: int, rank: int = 3) -> SeeThroughLoRA:
    """A SeeThrough3D LoRA with random weights that fits ``pipeline``'s transformer."""
    transformer = pipeline.transformer
    return SeeThroughLoRA.random(
        transformer.inner_dim,
        rank,
        len(transformer.transformer_blocks),
        len(transformer.single_transformer_blocks),
        seed,
    )


def write_style_lora(path: Path, pipeline: SeeThroughPipeline, seed: int, rank: int = 2) -> None:
    """A diffusers/peft-format FLUX LoRA (``transformer.<module>.lora_A/B.weight``) with random weights."""
    generator = torch.Generator().manual_seed(seed)
    modules = {
        "transformer_blocks.0.attn.to_q": (32, 32),
        "transformer_blocks.0.attn.to_v": (32, 32),
        "transformer_blocks.1.ff.net.2": (128, 32),
        "single_transformer_blocks.0.attn.to_k": (32, 32),
        "single_transformer_blocks.1.proj_out": (160, 32),
    }
    state = {}
    for module, (features_in, features_out) in modules.items():
        state[f"transformer.{module}.lora_A.weight"] = (
            torch.randn(rank, features_in, generator=generator) * 0.3
        )
        state[f"transformer.{module}.lora_B.weight"] = (
            torch.randn(features_out, rank, generator=generator) * 0.3
        )
    save_file(state, str(path))


@functools.cache
def gated_tiny_pipeline() -> GatedPipeline:
    """One warmed-up pipeline for the whole session: the first call of a fresh one is slow."""
    pipeline = GatedPipeline(SeeThroughPipeline.tiny(seed=0, device="cpu"))
    request = build_request("warm-up", boxes=1, steps=2, preview_interval=1, seed=0)
    run_in_process(pipeline.inner, request, preview_interval=1)
    pipeline.decodes = 0
    return pipeline


@contextmanager
def running_server(pipeline: Any, **config: Any) -> Iterator[SeeThroughServer]:
    """A server on 127.0.0.1 with an ephemeral port (unless `endpoint` says otherwise), on a thread."""
    config = ServerConfig(**{"endpoint": "tcp://127.0.0.1:*", "device": "cpu", **config})
    server = SeeThroughServer(lambda: pipeline, config)
    server.start()
    try:
        assert server.wait_ready(60), server.load_error
        yield server
    finally:
        pipeline.release()
        server.stop()


def build_request(scene_prompt: str = "on a quiet street", *, boxes: int = 2, side: int = 256, **kwargs: Any):
    """A valid request with full-size amodal masks (uint8, 255 inside), as the add-on sends them."""
    rng = np.random.default_rng(len(scene_prompt))
    masks = np.zeros((boxes, side, side), dtype=np.uint8)
    for i in range(boxes):
        masks[i, 20 * i : side // 2 + 20 * i, 30 + 10 * i : side - 30] = 255
    fields: dict[str, Any] = dict(
        scene_prompt=scene_prompt,
        descriptions=["a red car", "an old tree", "a small house", "a blue robot"][:boxes],
        oscr_image=rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        masks=masks,
        mask_kind="amodal",
        width=side,
        height=side,
        seed=1,
        steps=3,
    )
    fields.update(kwargs)
    return request_of(**fields)
