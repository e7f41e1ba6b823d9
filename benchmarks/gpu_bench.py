"""What SeeThrough3D conditioning costs over plain FLUX: `python benchmarks/gpu_bench.py` on one CUDA GPU.

Measured side by side in one run, on the same GPU: seconds per image (the whole request: text and
condition encoding, 28 denoising steps, VAE decode) and peak GPU memory, at 1024 and 512 px, for

    plain          diffusers' FluxPipeline on the very same modules: what artists compare us with
    exact          ours, the default: split attention, exact, no dense mask
    dense          ours with one dense additive mask built per request
    dense-rebuild  ours with the dense mask rebuilt in every block of every step (the reference's way)
    cached         ours with the condition stream computed once and its keys/values reused (approximate)

each eager and compiled (regional torch.compile; plain FLUX through diffusers' compile_repeated_blocks),
in bf16 (`--memory full`) and in the 24-GB mode (`--memory 24gb`: fp8 or NF4 transformer, streamed T5).
It also measures how far the cached mode lands from the exact one (latents after every step, image PSNR).

The models are FLUX.1-dev-sized, built from the published configs (benchmarks/flux_dev_configs.json)
with random weights: no download, the same FLOPs and bytes as the real ones. `--model/--lora` use real
weights instead (then the cached-vs-exact distance means something for image quality).

Rows are merged into a JSON file, so a run can be split (`--memory`, `--compile`, `--sizes`, `--variants`),
and the table is written into docs/performance.md between its generated-section markers.

`python benchmarks/gpu_bench.py --tiny --steps 2` runs all of it on the tiny model on the CPU (the
smoke test does), so this script cannot rot unseen between GPU runs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "benchmarks")]

import torch  # noqa: E402  (after the path fix-up above)
from gpu_harness import (  # noqa: E402
    CONFIGS,
    build_pipelines,
    describe_machine,
    free_memory,
    measure_attention,
    measure_fidelity,
    peaks,
    profile,
    runner,
    timed,
)
from gpu_report import (  # noqa: E402, F401  (the names the smoke test reads through this script)
    BEGIN,
    END,
    VARIANTS,
    AttentionTiming,
    Fidelity,
    Recorder,
    Results,
    Row,
    format_gib,
    render,
)

from inference_server.model_errors import SetupError  # noqa: E402
from inference_server.placement import plan_memory  # noqa: E402

DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "gpu_bench.json"
DEFAULT_DOC = REPO / "docs" / "performance.md"


def run_memory_mode(
    args: argparse.Namespace, device: torch.device, machine: str, memory: str, record: Recorder
) -> None:
    try:
        # a missing extra fails here, before minutes of building
        plan_memory(memory, args.quantization if memory == "24gb" else "auto", device)
        pipes = build_pipelines(args, device, memory)
    except SetupError as error:
        note = f"{machine}: memory '{memory}' skipped: {error}"
        print(note)
        record.add(Results(notes=[note]))
        return
    quantization = pipes.ours.plan.quantization
    variants = [variant for variant in VARIANTS if variant.name in args.variants]
    print(f"\n{machine}\n{pipes.model}, memory {memory} (quantization {quantization}), {args.steps} steps")
    if device.type == "cuda":
        resident = torch.cuda.memory_allocated(device) / 2**30
        print(f"resident after loading: {resident:.1f} GiB allocated")
        if memory == "24gb":  # where the 24-GB mode's memory goes: the models vs one request's working set
            note = (
                f"{machine}: {pipes.model}, memory 24gb ({quantization}): {resident:.1f} GiB allocated by "
                "the loaded models before the first request; the rest of the peak is one request's work"
            )
            record.add(Results(notes=[note]))

    if not args.no_fidelity:
        for size in args.sizes:
            rel, latent_max, image_max, psnr = measure_fidelity(pipes, size, args.steps)
            fidelity = Fidelity(
                machine, pipes.model, size, args.steps, memory, rel, latent_max, image_max, psnr
            )
            record.add(Results(fidelity=[fidelity]))
            print(f"cached vs exact at {size} px: image PSNR {psnr:.1f} dB, max |diff| {image_max}/255")

    for compiled in [mode == "on" for mode in args.compile]:
        if compiled:
            pipes.ours.set_compile(True)
            pipes.plain.transformer.compile_repeated_blocks(dynamic=False)  # diffusers' regional compile
        for size in args.sizes:
            for variant in variants:
                run = runner(pipes, variant, size, args.steps)
                free_memory(device)
                first, seconds = timed(run, args.repeats, device)
                allocated, reserved = peaks(device)
                row = Row(
                    machine,
                    pipes.model,
                    size,
                    args.steps,
                    memory,
                    quantization,
                    compiled,
                    variant.name,
                    seconds,
                    first,
                    allocated,
                    reserved,
                )
                record.add(Results(rows=[row]))
                mode = "compiled" if compiled else "eager"
                print(f"  {size:>5} px {mode:<8} {variant.name:<14} {row.median_s:8.2f} s "
                      f"(first {first:.1f} s)  peak {format_gib(reserved)}")  # fmt: skip
            if args.profile_steps and not compiled:
                profile(pipes, variants, size, args, device, f"{machine}, {pipes.model}, memory {memory} "
                        f"({quantization}), eager")  # fmt: skip
    del pipes
    free_memory(device)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="the tiny model (on the CPU unless --device)")
    parser.add_argument("--device", help="torch device (default: cuda; cpu with --tiny)")
    parser.add_argument("--steps", type=int, default=28, help="denoising steps per image (default 28)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="image sides in px (default 1024 512; 256 with --tiny)"
    )
    parser.add_argument("--memory", nargs="+", default=["full", "24gb"], choices=["full", "24gb"])
    parser.add_argument(
        "--quantization",
        default="auto",
        choices=["auto", "fp8", "nf4"],
        help="the 24gb mode's transformer quantization (default auto: fp8 on compute capability >= 8.9)",
    )
    parser.add_argument("--compile", nargs="+", default=["off", "on"], choices=["off", "on"])
    parser.add_argument(
        "--variants", nargs="+", default=[v.name for v in VARIANTS], choices=[v.name for v in VARIANTS]
    )
    parser.add_argument(
        "--repeats", type=int, default=2, help="timed images per row after the first (default 2)"
    )
    parser.add_argument("--no-fidelity", action="store_true", help="skip the cached-vs-exact distance")
    parser.add_argument("--no-attention", action="store_true", help="skip the attention-op timing")
    parser.add_argument("--attention-iterations", type=int, default=20, help="timed calls per variant (20)")
    parser.add_argument(
        "--model", help="a real FLUX.1-dev folder or cached repo id instead of random weights"
    )
    parser.add_argument("--lora", help="the SeeThrough3D LoRA, with --model")
    parser.add_argument(
        "--warm-start",
        action="store_true",
        help="the compile cache is already warm (a second process after a compiled run): record the first "
        "images as warm-start times of the rows already measured",
    )
    parser.add_argument(
        "--profile-steps", type=int, default=0, help="profile this many steps of each eager variant (0: off)"
    )
    parser.add_argument("--profile-rows", type=int, default=25, help="operators per profile table (25)")
    parser.add_argument(
        "--profile-out",
        type=Path,
        default=REPO / "out" / "gpu_profile.txt",
        help="where profiles are appended",
    )
    parser.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="JSON the rows are merged into")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help="markdown file to write the table into")
    args = parser.parse_args(argv)
    args.sizes = args.sizes or ([256] if args.tiny else [1024, 512])
    if args.model and not args.lora:
        parser.error("--model needs --lora")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.tiny else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_bench needs a CUDA GPU; `--tiny --steps 2` runs the same code on the tiny model on the CPU"
        )
        return 2
    machine = describe_machine(device)
    record = Recorder(args.results, args.doc, args.warm_start)
    if not args.no_attention:
        configs = json.loads(CONFIGS.read_text())["transformer"]
        heads, head_dim = (
            (2, 16) if args.tiny else (configs["num_attention_heads"], configs["attention_head_dim"])
        )
        model = "tiny, random weights" if args.tiny else "FLUX.1-dev size"
        dtype = torch.float32 if args.tiny else torch.bfloat16
        for size in args.sizes:
            timings = measure_attention(device, dtype, heads, head_dim, size, args.attention_iterations)
            record.add(
                Results(attention=[AttentionTiming(machine, model, size, n, ms) for n, ms in timings.items()])
            )
            for name, ms in timings.items():
                print(f"attention op at {size} px: {name:<14} {ms:8.3f} ms")
    for memory in args.memory:
        run_memory_mode(args, device, machine, memory, record)
    print("\n" + render(record.new))
    print(f"rows merged into {args.results}; table written into {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
