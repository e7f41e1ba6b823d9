"""Bridge overhead: `python benchmarks/server_bench.py [--repeats 5] [--steps 2]`.

What the protocol and server add to a generation, on any machine: the round trip the client measures
(submit to result decoded, progress messages included) minus the model time the server reports
(`generation_s`: the pipeline call alone). 512 and 1024 px requests are interleaved in one run against
`seethrough serve --tiny` in its own process, as the add-on talks to it; OSCR image and amodal masks at
the output size, as the add-on sends them. What the model itself costs on a GPU (plain FLUX against the
conditioned pipeline) is benchmarks/gpu_bench.py's job.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from seethrough_core.client import SeeThroughClient  # noqa: E402  (after the path fix-up above)
from seethrough_core.generation_settings import GenerationSettings  # noqa: E402
from seethrough_core.protocol import GenerateRequest  # noqa: E402
from seethrough_core.server_process import ServerProcess  # noqa: E402


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
    descriptions = ["a red car", "an old tree", "a small house", "a blue robot"][:boxes]
    return GenerateRequest(
        GenerationSettings("on a quiet street", descriptions, side, side, seed=1, steps=steps),
        oscr_image=rng.integers(0, 256, (side, side, 3), dtype=np.uint8),
        masks=masks,
        mask_kind="amodal",
    )


def measure_bridge(sides: list[int], repeats: int, steps: int) -> dict[int, list[Sample]]:
    samples: dict[int, list[Sample]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp, ServerProcess.tiny(Path(tmp) / "server.log") as server:
        with SeeThroughClient(server.endpoint, timeout_s=30) as client:
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed requests per size (default 5)")
    parser.add_argument("--steps", type=int, default=2, help="denoising steps per bridge request (default 2)")
    args = parser.parse_args()
    sides = [512, 1024]
    print_bridge(measure_bridge(sides, args.repeats, args.steps), args.steps)


if __name__ == "__main__":
    main()
