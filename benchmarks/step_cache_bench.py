"""How many steps the step cache skips, and what that saves: `python benchmarks/step_cache_bench.py`.

Runs one request at several thresholds side by side, interleaved, in one process on one pipeline, and
prints per threshold the median seconds of the denoising loop, the steps computed, and how far the image
lands from the uncached one. It also prints the first block's relative change at each step (what the
threshold is compared with), measured with the cache on but never reusing.

By default the tiny random-weight model on the CPU: the figures show the mechanism only. Random weights
say nothing about image quality at a threshold, and how much the first block's output changes from step
to step depends on the trained weights. On a CUDA GPU, the FLUX.1-dev-sized transformer with random
weights: `--full-size --device cuda` (`--model PATH --lora PATH` loads real weights: then the image
distance means something).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import numpy as np  # noqa: E402  (after the path fix-up above)
import torch  # noqa: E402
from edit_bench import build, request  # noqa: E402

from inference_server.step_cache import StepCache  # noqa: E402

THRESHOLDS = (None, 0.0, 0.05, 0.1, 0.2, 0.5, 1.0)
PROBE = 1e-9  # on, but reuses only when the first block's output did not change at all


def relative_changes(pipeline, inputs: dict) -> list[float]:
    """The first block's relative change at each step after the first, as the step cache computes it."""
    seen: list[float] = []
    original = StepCache.relative_change

    def record(self, residual):
        value = original(self, residual)
        seen.append(value)
        return value

    StepCache.relative_change = record
    try:
        pipeline(**inputs, step_cache=PROBE)
    finally:
        StepCache.relative_change = original
    return seen


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--condition-cache", action="store_true", help="with the condition cache on")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-size", action="store_true", help="FLUX.1-dev-sized random weights")
    parser.add_argument("--model", help="a real FLUX.1-dev folder or cached repo id")
    parser.add_argument("--lora", help="the SeeThrough3D LoRA, with --model")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    pipeline, model = build(args, device)
    inputs = {**request(args.size, args.steps), "condition_cache": args.condition_cache}

    changes = relative_changes(pipeline, inputs)
    seconds: dict[float | None, list[float]] = {threshold: [] for threshold in THRESHOLDS}
    outputs = {}
    pipeline(**inputs)  # warm-up
    for _ in range(args.repeats):
        for threshold in THRESHOLDS:  # interleaved: a machine's load drift touches every threshold alike
            output = pipeline(**inputs, step_cache=threshold)
            seconds[threshold].append(output.timings["denoise_s"])
            outputs[threshold] = output

    where = f"{device.type}, {torch.get_num_threads()} threads, torch {torch.__version__}"
    print(f"\n{model}, {where}: {args.size} px, {args.steps} steps, condition cache {args.condition_cache}")
    print("first block's relative change per step (steps 2..): " + ", ".join(f"{c:.3f}" for c in changes))
    print("\n| step cache | steps computed | denoise s (median) | × off | image max / mean abs diff vs off |")
    print("|---|---|---|---|---|")
    base = statistics.median(seconds[None])
    reference = outputs[None].image.astype(np.int16)
    for threshold in THRESHOLDS:
        output = outputs[threshold]
        difference = np.abs(output.image.astype(np.int16) - reference)
        label = "off" if threshold is None else f"{threshold:g}"
        median = statistics.median(seconds[threshold])
        print(f"| {label} | {output.steps_computed} | {median:.3f} | {median / base:.2f} "
              f"| {difference.max()} / {difference.mean():.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
