"""What an edit costs over a plain generation: `python benchmarks/edit_bench.py [--repeats 3] [--steps 4]`.

An edit (docs/edit.md) is a plain generation plus three things: the VAE encode of the previous picture,
the blend of the latents outside the region after every step, and the feathered composite after the
decode. This runs plain generations and edits side by side, interleaved, in one process on the same
pipeline, at 512 and 1024 px (strength 1, a region of a quarter of the picture) and prints per size
the median seconds of each, their ratio, and the edit's own stages (`encode_edit_s`, `composite_s`).

By default the pipeline is the tiny random-weight model on the CPU: its transformer is nearly free, so
the ratio there overstates the relative cost; the absolute seconds of the extra stages are the figures
to read. On a CUDA GPU, the FLUX.1-dev-sized transformer with random weights (same FLOPs as the real
one, no download) gives the ratio artists will see:

    python benchmarks/edit_bench.py --full-size --device cuda --steps 28 --repeats 3

(`--model PATH --lora PATH` loads real weights instead.)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import numpy as np  # noqa: E402  (after the path fix-up above)
import torch  # noqa: E402

from inference_server.pipeline import SeeThroughPipeline  # noqa: E402
from seethrough_core.condition_input import ConditionInput  # noqa: E402
from seethrough_core.edit_input import EditInput  # noqa: E402
from seethrough_core.generation_settings import GenerationSettings  # noqa: E402


def build(args: argparse.Namespace, device: torch.device) -> tuple[SeeThroughPipeline, str]:
    if args.model:
        pipeline = SeeThroughPipeline.from_pretrained(args.model, args.lora, device=str(device))
        return pipeline, f"FLUX.1-dev {args.model}"
    if args.full_size:
        from gpu_harness import flux_dev_components  # builds FLUX.1-dev-sized random models

        parts = flux_dev_components(device, torch.bfloat16, "full")
        return SeeThroughPipeline(parts, device=device, model_name="bench"), "FLUX.1-dev size, random weights"
    return SeeThroughPipeline.tiny(seed=0, device=str(device)), "tiny, random weights"


def request(side: int, steps: int) -> tuple[GenerationSettings, ConditionInput]:
    """A two-box request at ``side`` px with a random stand-in OSCR image."""
    masks = np.zeros((2, 32, 32), dtype=bool)
    masks[0, 4:20, 2:14], masks[1, 10:28, 10:24] = True, True
    oscr = (np.random.default_rng(0).random((512, 512, 3)) * 255).astype(np.uint8)
    descriptions = ["a red car", "a small brown dog"]
    settings = GenerationSettings("on a quiet street", descriptions, side, side, 42, steps)
    return settings, ConditionInput(oscr, masks)


def quarter_region(side: int) -> np.ndarray:
    mask = np.zeros((side, side), dtype=np.uint8)
    mask[side // 4 : 3 * side // 4, side // 4 : 3 * side // 4] = 255
    return mask


def measure(pipeline: SeeThroughPipeline, side: int, steps: int, repeats: int) -> dict[str, list[float]]:
    settings, condition = request(side, steps)
    previous = pipeline.generate(settings, condition).image  # also the warm-up at this size
    edit = EditInput(previous, quarter_region(side), 1.0)
    settings = replace(settings, seed=7)
    pipeline.generate(settings, condition, edit)  # warm-up of the edit path
    samples: dict[str, list[float]] = {"plain": [], "edit": [], "encode_edit_s": [], "composite_s": []}
    for _ in range(repeats):  # interleaved: drift on a shared machine hits both alike
        for name in ("plain", "edit"):
            started = time.perf_counter()
            extra = {"edit": edit} if name == "edit" else {}
            output = pipeline.generate(settings, condition, **extra)
            samples[name].append(time.perf_counter() - started)
            if name == "edit":
                samples["encode_edit_s"].append(output.timings["encode_edit_s"])
                samples["composite_s"].append(output.timings["composite_s"])
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1: a shared machine)")
    parser.add_argument("--full-size", action="store_true", help="FLUX.1-dev-sized random models (a GPU)")
    parser.add_argument("--model", help="a FLUX.1-dev folder or cached repo id (real weights)")
    parser.add_argument("--lora", help="the SeeThrough3D LoRA for --model")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipeline, model = build(args, device)
    print(f"edit_bench: {model} on {device}, {args.steps} steps, {args.repeats} repeats, median seconds")
    print(f"{'size':>6} {'plain':>9} {'edit':>9} {'edit/plain':>11} {'encode_edit':>12} {'composite':>10}")
    for side in args.sizes:
        samples = measure(pipeline, side, args.steps, args.repeats)
        plain, edit = (statistics.median(samples[k]) for k in ("plain", "edit"))
        encode, blend = (statistics.median(samples[k]) for k in ("encode_edit_s", "composite_s"))
        print(f"{side:>6} {plain:>9.3f} {edit:>9.3f} {edit / plain:>11.2f} {encode:>12.3f} {blend:>10.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
