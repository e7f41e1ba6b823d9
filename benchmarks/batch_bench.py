"""The pipelining gain of `seethrough batch`: wall time against render + generation, same run.

Without pipelining a batch costs the sum of its OSCR renders (Blender, main thread) and its
generations (server). The batch renders the next shot while the server generates, so its wall
time should approach the larger of the two sums. This script runs one batch against local tiny
servers and prints both, with the ratio.

    python benchmarks/batch_bench.py                 # 6 shots, 1 server
    python benchmarks/batch_bench.py --servers 2     # spread over two servers
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from seethrough.batch.runner import BatchOptions, BatchRunner  # noqa: E402
from seethrough_core.layout import Layout, load_layout  # noqa: E402
from seethrough_core.server_process import ServerProcess  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[1] / "assets" / "examples" / "street.json"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", type=int, default=6)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=12, help="tiny-model steps per image")
    parser.add_argument("--servers", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        folder = Path(tmp)
        inputs = []
        for i in range(args.shots):
            data = load_layout(EXAMPLE).to_dict()
            data["resolution"] = [args.size, args.size]
            data["boxes"][0]["center"][1] += 0.2 * i  # distinct shots
            path = folder / f"shot_{i:02d}.json"
            Layout.from_dict(data).save(path)
            inputs.append(path)
        servers = [
            stack.enter_context(ServerProcess.tiny(folder / f"server_{i}.log")).endpoint
            for i in range(args.servers)
        ]
        options = BatchOptions(out_dir=folder / "out", servers=servers, seeds=[1], steps=args.steps)
        summary = BatchRunner(options, stream=io.StringIO()).run(inputs)  # per-job lines not needed here
        generation_s = sum(
            json.loads(o.image_path.with_suffix(".json").read_text())["timings"]["generation_s"]
            for o in summary.outcomes
            if o.status == "done"
        )
    sequential = summary.render_s + generation_s
    print(
        f"\n{args.shots} shots at {args.size} px, tiny model, {args.steps} steps, {args.servers} server(s)\n"
    )
    print("| renders (sum) s | generations (sum) s | render + generate s | batch wall s | gain |")
    print("|---|---|---|---|---|")
    print(
        f"| {summary.render_s:.1f} | {generation_s:.1f} | {sequential:.1f} | {summary.wall_s:.1f} "
        f"| {sequential / summary.wall_s:.2f}x |"
    )
    if summary.count("failed"):
        print(f"warning: {summary.count('failed')} job(s) failed", file=sys.stderr)


if __name__ == "__main__":
    main()
