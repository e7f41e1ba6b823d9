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
from dataclasses import dataclass, replace
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
    ALL_VARIANTS,
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
from inference_server.placement import STREAMED_TEXT_ENCODER_MODES, plan_memory  # noqa: E402

DEFAULT_RESULTS = REPO / "benchmarks" / "results" / "gpu_bench.json"
DEFAULT_DOC = REPO / "docs" / "performance.md"


@dataclass(frozen=True)
class Mode:
    """One memory mode's rows: its variants at its sizes, eager and/or compiled, optionally memory-capped."""

    memory: str
    quantization: str
    variants: tuple[str, ...]
    compiled: tuple[bool, ...]
    sizes: tuple[int, ...]
    cap_gib: float | None = None  # torch.cuda.set_per_process_memory_fraction while the rows run
    name: str = ""


# `--suite speed`: the compiled 24-GB and 16-GB modes, the step cache and the draft preset, each mode
# capped at its card's memory, in order of priority (a run that is stopped keeps what it measured).
# Estimated at about 10 minutes on an H100 (mostly compilation with a cold cache; not yet timed on a GPU);
# `--suite-parts` runs a subset.
STEP_CACHE_ROWS = ("exact sc0.05", "exact sc0.1", "exact sc0.2")
SPEED_SUITE = (
    Mode("24gb", "fp8", ("plain", "exact", *STEP_CACHE_ROWS, "draft"), (True,), (1024,), 24.0, "fp8-24gb"),
    Mode("16gb", "nf4", ("plain", "exact", "exact sc0.1", "draft"), (True,), (1024,), 16.0, "nf4-16gb"),
    Mode("24gb", "nf4", ("plain", "exact", "exact sc0.1"), (True,), (1024,), 24.0, "nf4-24gb"),
    Mode("full", "auto", ("plain", "exact", *STEP_CACHE_ROWS, "draft"), (True,), (1024,), None, "bf16"),
)


def run_memory_mode(
    args: argparse.Namespace, device: torch.device, machine: str, mode: Mode, record: Recorder
) -> None:
    memory = mode.memory
    try:
        # a missing extra fails here, before minutes of building
        plan_memory(memory, mode.quantization, device)
        pipes = build_pipelines(args, device, memory, mode.quantization)
    except SetupError as error:
        note = f"{machine}: memory '{memory}' ({mode.quantization}) skipped: {error}"
        print(note)
        record.add(Results(notes=[note]))
        return
    quantization = pipes.ours.plan.quantization
    variants = [variant for variant in ALL_VARIANTS if variant.name in mode.variants]
    print(f"\n{machine}\n{pipes.model}, memory {memory} (quantization {quantization}), {args.steps} steps")
    if device.type == "cuda":
        resident = torch.cuda.memory_allocated(device) / 2**30
        print(f"resident after loading: {resident:.1f} GiB allocated")
        if memory != "full":  # where a small-card mode's memory goes: the models vs one request's working set
            note = (
                f"{machine}: {pipes.model}, memory {memory} ({quantization}): {resident:.1f} GiB allocated "
                "by the loaded models before the first request; the rest of the peak is one request's work"
            )
            record.add(Results(notes=[note]))
    cap = apply_memory_cap(mode.cap_gib, device, machine, record)

    if not args.no_fidelity:
        for size in mode.sizes:
            rel, latent_max, image_max, psnr = measure_fidelity(pipes, size, args.steps)
            fidelity = Fidelity(
                machine, pipes.model, size, args.steps, memory, rel, latent_max, image_max, psnr
            )
            record.add(Results(fidelity=[fidelity]))
            print(f"cached vs exact at {size} px: image PSNR {psnr:.1f} dB, max |diff| {image_max}/255")

    for compiled in mode.compiled:
        if compiled:
            pipes.ours.set_compile(True)
            pipes.plain.transformer.compile_repeated_blocks(dynamic=False)  # diffusers' regional compile
        for size in mode.sizes:
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
                    steps_computed=run.steps_computed,
                    memory_cap_gib=cap,
                )
                record.add(Results(rows=[row]))
                label = "compiled" if compiled else "eager"
                print(f"  {size:>5} px {label:<8} {variant.name:<14} {row.median_s:8.2f} s "
                      f"(first {first:.1f} s, {run.steps_computed} steps computed)  "
                      f"peak {format_gib(reserved)}")  # fmt: skip
            if args.profile_steps and not compiled:
                profile(pipes, variants, size, args, device, f"{machine}, {pipes.model}, memory {memory} "
                        f"({quantization}), eager")  # fmt: skip
    del pipes
    apply_memory_cap(None, device, machine, record)
    free_memory(device)


def apply_memory_cap(
    cap_gib: float | None, device: torch.device, machine: str, record: Recorder
) -> float | None:
    """Cap this process's GPU memory at ``cap_gib`` (None: lift the cap); returns the cap in force.

    Set after the models are built (the random-weight models are initialised on the GPU in bf16, which a
    real load from disk does not do), so it bounds the loaded models plus every request's work; the CUDA
    context (about 0.5 GiB) is outside it."""
    if device.type != "cuda":
        if cap_gib is not None:
            record.add(Results(notes=[f"{machine}: the {cap_gib:g} GiB memory cap needs CUDA; not applied"]))
        return None
    total = torch.cuda.get_device_properties(device).total_memory
    free_memory(device)
    fraction = 1.0 if cap_gib is None else min(1.0, cap_gib * 2**30 / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return cap_gib


def modes(args: argparse.Namespace) -> list[Mode]:
    """The modes to run: the suite's (or its named parts), else one per --memory from the other flags."""
    compiled = tuple(mode == "on" for mode in args.compile) if args.compile else None
    if args.suite == "speed":
        parts = [mode for mode in SPEED_SUITE if not args.suite_parts or mode.name in args.suite_parts]
        sizes = tuple(args.sizes) if args.sizes else None
        return [
            replace(mode, compiled=compiled or mode.compiled, sizes=sizes or mode.sizes) for mode in parts
        ]
    return [
        Mode(
            memory,
            args.quantization if memory in STREAMED_TEXT_ENCODER_MODES else "auto",
            tuple(args.variants),
            compiled or (False, True),
            tuple(args.sizes or ([256] if args.tiny else [1024, 512])),
        )
        for memory in args.memory
    ]


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
    parser.add_argument("--memory", nargs="+", default=["full", "24gb"], choices=["full", "24gb", "16gb"])
    parser.add_argument(
        "--quantization",
        default="auto",
        choices=["auto", "fp8", "nf4"],
        help="the 24gb/16gb modes' transformer quantization (default auto: the faster one on this GPU)",
    )
    parser.add_argument(
        "--compile", nargs="+", choices=["off", "on"], help="default: off and on (the speed suite: on)"
    )
    parser.add_argument(
        "--variants", nargs="+", default=[v.name for v in VARIANTS], choices=[v.name for v in ALL_VARIANTS]
    )
    parser.add_argument(
        "--suite",
        choices=["speed"],
        help="speed: the compiled 24gb (fp8, NF4) and 16gb modes, the step cache at 0.05/0.1/0.2 and the "
        "draft preset, each mode capped at its card's memory, and bf16 compiled (instead of --memory and "
        "--variants)",
    )
    parser.add_argument(
        "--suite-parts",
        nargs="+",
        choices=[mode.name for mode in SPEED_SUITE],
        help="only these parts of the suite",
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
        sizes = args.sizes or ([256] if args.tiny else [1024, 512])
        configs = json.loads(CONFIGS.read_text())["transformer"]
        heads, head_dim = (
            (2, 16) if args.tiny else (configs["num_attention_heads"], configs["attention_head_dim"])
        )
        model = "tiny, random weights" if args.tiny else "FLUX.1-dev size"
        dtype = torch.float32 if args.tiny else torch.bfloat16
        for size in sizes:
            timings = measure_attention(device, dtype, heads, head_dim, size, args.attention_iterations)
            record.add(
                Results(attention=[AttentionTiming(machine, model, size, n, ms) for n, ms in timings.items()])
            )
            for name, ms in timings.items():
                print(f"attention op at {size} px: {name:<14} {ms:8.3f} ms")
    for mode in modes(args):
        run_memory_mode(args, device, machine, mode, record)
    print("\n" + render(record.new))
    print(f"rows merged into {args.results}; table written into {args.doc}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
