"""Serving benchmarks: `python benchmarks/server_bench.py [--repeats 5] [--steps 2]`.

1. Bridge overhead, on any machine: what the protocol and server add to a generation. The round
   trip the client measures (submit to result decoded, progress messages included) minus the model
   time the server reports (`generation_s`: the pipeline call alone). 512 and 1024 px requests are
   interleaved in one run against `seethrough serve --tiny` in its own process, as the add-on
   talks to it; OSCR image and amodal masks at the output size, as the add-on sends them.

2. GPU, only where CUDA is available: plain FLUX denoising vs SeeThrough-conditioned denoising at
   1024 px, 28 steps, on a full-size FLUX.1-dev transformer with random weights (no download):
   seconds per step and peak GPU memory.
"""

from __future__ import annotations

import argparse
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seethrough_core.client import SeeThroughClient  # noqa: E402  (after the path fix-up above)
from seethrough_core.errors import SeeThroughError  # noqa: E402
from seethrough_core.protocol import GenerateRequest  # noqa: E402

# FLUX.1-dev's transformer/config.json
FLUX_DEV_TRANSFORMER = {
    "patch_size": 1,
    "in_channels": 64,
    "num_layers": 19,
    "num_single_layers": 38,
    "attention_head_dim": 128,
    "num_attention_heads": 24,
    "joint_attention_dim": 4096,
    "pooled_projection_dim": 768,
    "guidance_embeds": True,
    "axes_dims_rope": (16, 56, 56),
}
SEETHROUGH_LORA_RANK = 128  # the released checkpoint's rank


# --- 1. bridge overhead --------------------------------------------------------------------------------


@dataclass
class Sample:
    round_trip_s: float
    model_s: float  # the pipeline call, as the server reports it
    before_model_s: float  # server side, message received to model start: decode, checks, pooling

    @property
    def overhead_s(self) -> float:
        return self.round_trip_s - self.model_s


def bridge_request(side: int, steps: int, boxes: int = 4) -> GenerateRequest:
    rng = np.random.default_rng(side)
    masks = np.zeros((boxes, side, side), dtype=np.uint8)
    for i in range(boxes):
        masks[i, side * i // 8 : side * (i + 4) // 8, side // 8 : side * 7 // 8] = 255
    return GenerateRequest(
        scene_prompt="on a quiet street",
        descriptions=["a red car", "an old tree", "a small house", "a blue robot"][:boxes],
        oscr_image=rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        masks=masks,
        mask_kind="amodal",
        width=side,
        height=side,
        seed=1,
        steps=steps,
    )


def start_tiny_server() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    process = subprocess.Popen(
        [sys.executable, "-m", "seethrough_core", "serve", "--tiny", "--bind", endpoint],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"`seethrough serve --tiny` exited with status {process.returncode}")
        try:
            with SeeThroughClient(endpoint, timeout_s=2) as client:
                if client.info().state == "ready":
                    return process, endpoint
        except SeeThroughError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("the tiny server did not become ready within 180 s")


def measure_bridge(sides: list[int], repeats: int, steps: int) -> dict[int, list[Sample]]:
    process, endpoint = start_tiny_server()
    samples: dict[int, list[Sample]] = {side: [] for side in sides}
    try:
        with SeeThroughClient(endpoint, timeout_s=30) as client:
            requests = {side: bridge_request(side, steps) for side in sides}
            for side in sides:  # warm-up: first calls at a new size are slow in torch
                client.submit(requests[side]).wait()
            for _ in range(repeats):
                for side in sides:  # interleaved, so drift hits both sizes alike
                    request = requests[side]
                    request.request_id = f"bench-{side}-{time.monotonic_ns()}"
                    started = time.perf_counter()
                    result = client.submit(request).wait()
                    finished = time.perf_counter()
                    timings = result.timings
                    samples[side].append(
                        Sample(finished - started, timings["generation_s"], timings["queue_wait_s"])
                    )
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(30)
    return samples


def print_bridge(samples: dict[int, list[Sample]], steps: int) -> None:
    print(f"\nBridge overhead: round trip minus model time, tiny model, {steps} steps, 4 amodal masks")
    header = f"{'size':>9} {'request MB':>10} {'result MB':>9} {'round trip ms':>13} {'model ms':>9} "
    print(header + f"{'overhead ms: median':>20} {'min':>6} {'max':>6} {'server before model ms':>23}")
    for side, rows in samples.items():
        request = bridge_request(side, steps)
        request_mb = (request.oscr_image.nbytes + request.masks.nbytes) / 1e6
        overheads = [s.overhead_s * 1000 for s in rows]
        print(
            f"{side:>4}x{side:<4} {request_mb:>10.1f} {side * side * 3 / 1e6:>9.1f} "
            f"{statistics.median(s.round_trip_s for s in rows) * 1000:>13.1f} "
            f"{statistics.median(s.model_s for s in rows) * 1000:>9.1f} "
            f"{statistics.median(overheads):>20.1f} {min(overheads):>6.1f} {max(overheads):>6.1f} "
            f"{statistics.median(s.before_model_s for s in rows) * 1000:>23.1f}"
        )
    print("overhead = round trip (client: submit to decoded result, progress included) - model time")


# --- 2. GPU: plain vs conditioned ------------------------------------------------------------------------


def measure_gpu(
    side: int = 1024,
    steps: int = 28,
    config: dict | None = None,
    device: str = "cuda",
    dtype: str = "bfloat16",
) -> list[tuple[str, float, float]]:
    """[(name, seconds per step, peak GiB)] for plain FLUX and the SeeThrough-conditioned transformer.

    `config` defaults to FLUX.1-dev's; a small one on the CPU checks this code without a GPU.
    """
    import torch
    from diffusers import FluxTransformer2DModel

    from inference_server.latents import image_position_ids, text_position_ids
    from inference_server.lora import SeeThroughLoRA
    from inference_server.pipeline import SeeThroughPipeline
    from inference_server.tiny import build_tiny_components

    config = config or FLUX_DEV_TRANSFORMER
    target, torch_dtype = torch.device(device), getattr(torch, dtype)
    on_cuda = target.type == "cuda"
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch_dtype)  # build the 12B parameters directly in bf16 on the GPU
    try:
        with target:
            transformer = FluxTransformer2DModel(**config)
    finally:
        torch.set_default_dtype(previous)
    transformer.eval().requires_grad_(False)

    generator = torch.Generator(target).manual_seed(0)

    def noise(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=target, dtype=torch_dtype)

    latents = noise(1, (side // 16) ** 2, config["in_channels"])
    prompt_embeds = noise(1, 512, config["joint_attention_dim"])
    pooled = noise(1, config["pooled_projection_dim"])
    cond_latents = noise(1, 1024, config["in_channels"])  # the OSCR image's 32 x 32 packed VAE tokens
    sigmas = torch.linspace(1.0, 1.0 / steps, steps).tolist() + [0.0]

    @torch.inference_mode()
    def plain(count: int) -> None:
        x = latents
        guidance = torch.full((1,), 3.5, device=target, dtype=torch.float32)
        txt_ids, img_ids = text_position_ids(512).to(target), image_position_ids(side, side).to(target)
        for i in range(count):
            t = torch.full((1,), sigmas[i], device=target, dtype=torch_dtype)
            velocity = transformer(
                hidden_states=x, timestep=t, guidance=guidance, pooled_projections=pooled,
                encoder_hidden_states=prompt_embeds, txt_ids=txt_ids, img_ids=img_ids, return_dict=False,
            )[0]  # fmt: skip
            x = x + (sigmas[i + 1] - sigmas[i]) * velocity  # the flow-matching Euler step

    parts = build_tiny_components(0)  # text encoders and VAE are not timed: only the transformer runs
    parts.transformer, parts.condition_lora = transformer, None
    pipeline = SeeThroughPipeline(parts, device=target, model_name="FLUX.1-dev config, random weights")
    blocks = len(transformer.transformer_blocks), len(transformer.single_transformer_blocks)
    pipeline.set_condition_lora(
        SeeThroughLoRA.random(transformer.inner_dim, SEETHROUGH_LORA_RANK, *blocks, seed=0)
    )
    masks = np.zeros((3, 32, 32), dtype=bool)
    masks[0, 4:20, 2:14], masks[1, 10:28, 10:24], masks[2, 16:30, 18:31] = True, True, True

    def conditioned(count: int) -> None:
        pipeline.denoise(
            latents=latents, prompt_embeds=prompt_embeds, pooled_embeds=pooled,
            call_ids=[[3, 4, 5], [7, 8], [10, 11, 12]], cond_latents=cond_latents, box_token_masks=masks,
            width=side, height=side, num_inference_steps=count, guidance_scale=3.5,
        )  # fmt: skip

    rows = []
    for name, run in (("plain FLUX.1-dev", plain), ("SeeThrough conditioned", conditioned)):
        run(2)  # warm-up: kernels, allocator
        if on_cuda:
            torch.cuda.synchronize(target)
            torch.cuda.reset_peak_memory_stats(target)
        started = time.perf_counter()
        run(steps)
        if on_cuda:
            torch.cuda.synchronize(target)
        peak = torch.cuda.max_memory_allocated(target) / 2**30 if on_cuda else float("nan")
        rows.append((name, (time.perf_counter() - started) / steps, peak))
    return rows


def print_gpu(rows: list[tuple[str, float, float]], side: int, steps: int) -> None:
    import torch

    print(f"\nGPU: {torch.cuda.get_device_name()}, {side}x{side}, {steps} steps, bf16, random weights")
    print(f"{'':<24} {'s/step':>7} {'total s':>8} {'peak GiB':>9}")
    base = rows[0][1]
    for name, per_step, peak in rows:
        print(f"{name:<24} {per_step:>7.3f} {per_step * steps:>8.2f} {peak:>9.1f}   x{per_step / base:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per size (default 5)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per bridge request (default 2)")
    parser.add_argument("--skip-gpu", action="store_true", help="only the bridge table")
    args = parser.parse_args()

    sides = [512, 1024]
    print_bridge(measure_bridge(sides, args.repeats, args.steps), args.steps)

    try:
        import torch
    except ImportError:
        print("\nGPU section skipped: torch is not installed (pip install 'seethrough[server]')")
        return
    if args.skip_gpu or not torch.cuda.is_available():
        print("\nGPU section skipped: " + ("--skip-gpu" if args.skip_gpu else "CUDA is not available here"))
        return
    print_gpu(measure_gpu(1024, 28), 1024, 28)


if __name__ == "__main__":
    main()
