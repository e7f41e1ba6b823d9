"""Training speed and memory: seconds per optimizer step and peak memory at 512 and 1024 px.

On a CUDA GPU the models are FLUX.1-dev-sized with random weights (the published configs,
``flux_dev_configs.json``; the speed and memory of a step do not depend on the weights' values), trained
as `seethrough train` does: rank 128, batch 2, bf16 autocast, gradient checkpointing. Elsewhere it
measures the tiny model on the CPU. The dataset is two generated two-box samples.

    PYTHONPATH=. python benchmarks/train_bench.py                      # CUDA if present, else the CPU
    PYTHONPATH=. python benchmarks/train_bench.py --device cuda --memory 24gb   # needs seethrough[train]

The first step (allocator warm-up, cuDNN/SDPA kernel choice) is not counted.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from gpu_harness import describe_machine, flux_dev_components, free_memory, peaks

from inference_server.tiny import TINY_LORA_RANK
from inference_server.training.config import TrainingConfig
from inference_server.training.trainer import Trainer
from seethrough_core.limits import TRAIN_BATCH, TRAIN_RANK, TRAIN_RESOLUTIONS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from training_support import write_dataset  # noqa: E402 - the tests' dataset writer, found via tests/

RESULTS = Path(__file__).with_name("results") / "train_bench.json"


def measure(size: int, args: argparse.Namespace, device: torch.device, root: Path) -> dict:
    full = device.type == "cuda"
    data = write_dataset(root / f"data-{size}", count=2, side=size)
    config = TrainingConfig(
        data=(data,),
        out=root / f"run-{size}",
        model="random FLUX.1-dev-sized weights" if full else None,
        tiny=not full,
        rank=TRAIN_RANK if full else TINY_LORA_RANK,
        steps=args.steps + 1,
        batch=args.batch,
        resolution=size,
        checkpoint_every=10**9,
        memory=args.memory,
        device=str(device),
        warmup=0,
    )
    components = None
    if full:
        components = (flux_dev_components(device, torch.bfloat16, args.memory), config.model)
    seconds: list[float] = []
    last = [time.perf_counter()]

    def clock(step: int, trainer: Trainer) -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        now = time.perf_counter()
        if step == 1:
            free_memory(device)  # peaks from here on: the steady state, not the dataset encoding
        else:
            seconds.append(now - last[0])
        last[0] = now

    trainer = Trainer(config, on_step=clock, show_progress=False, components=components)
    trainer.run()
    allocated, reserved = peaks(device)
    return {
        "resolution": size,
        "batch": args.batch,
        "rank": config.rank,
        "model": "FLUX.1-dev-sized, random weights" if full else "tiny (CPU)",
        "memory": args.memory,
        "seconds_per_step": sum(seconds) / len(seconds),
        "steps_timed": len(seconds),
        "peak_allocated_gib": allocated,
        "peak_reserved_gib": reserved,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--sizes", type=int, nargs="+", default=list(TRAIN_RESOLUTIONS))
    parser.add_argument("--steps", type=int, default=4, help="timed steps per size (after one warm-up step)")
    parser.add_argument("--batch", type=int, default=TRAIN_BATCH)
    parser.add_argument("--memory", default="full", choices=["full", "24gb"])
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (the CPU run)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            row = measure(size, args, device, Path(tmp))
            rows.append(row)
            memory = (
                f"peak {row['peak_allocated_gib']:.1f} GiB allocated"
                if row["peak_allocated_gib"] is not None
                else f"peak RSS {row['peak_rss_gib']:.2f} GiB"
            )
            print(
                f"{size:5d} px  {row['seconds_per_step']:7.2f} s/step  {memory}  ({row['model']})", flush=True
            )
    report = {"machine": describe_machine(device), "threads": torch.get_num_threads(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
