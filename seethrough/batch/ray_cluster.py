"""`seethrough batch --ray [ADDRESS]`: reaching a Ray cluster and counting what it offers.

Nothing here imports Ray at module level: `seethrough batch` without --ray works without the farm
extra, and --ray without it says how to install it.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from types import ModuleType
from urllib.parse import urlsplit

from seethrough_core.errors import SeeThroughError

RAY_MIN_VERSION = (2, 40)
FARM_EXTRA_HINT = "pip install 'seethrough[farm]' (Ray >= 2.40) on this machine and on every node"
LOCAL = "local"  # --ray without an address: a Ray started on this machine for the run
TEST_OBJECT_STORE_BYTES = 100 * 1024 * 1024  # Ray's minimum is 75 MiB


class FarmError(SeeThroughError):
    """The Ray cluster cannot run the batch; the message says what is missing and what to do."""


def import_ray() -> ModuleType:
    """Ray, or FarmError naming the extra to install."""
    try:
        import ray
    except ImportError as exc:
        raise FarmError(f"--ray needs Ray, which is not installed ({exc}): {FARM_EXTRA_HINT}") from None
    version = tuple(int(part) for part in ray.__version__.split(".")[:2] if part.isdigit())
    if version < RAY_MIN_VERSION:
        raise FarmError(f"--ray needs Ray >= 2.40, this machine has {ray.__version__}: {FARM_EXTRA_HINT}")
    return ray


def connect(address: str, timeout_s: float) -> ModuleType:
    """ray.init() on ``address`` ("local", "auto", "ray://host:port" or "host:port"); raises FarmError."""
    ray = import_ray()
    if address == LOCAL:  # Ray's "local": a new Ray even where one runs already (`ray start`, a test's)
        ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False)
        return ray
    if address != "auto":
        _check_reachable(address, timeout_s)
        if address.startswith("ray://"):
            try:
                import grpc  # noqa: F401  Ray's client protocol
            except ImportError:
                raise FarmError(
                    f"{address}: ray:// addresses need Ray's client (grpcio): {FARM_EXTRA_HINT}"
                ) from None
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, ValueError, TimeoutError) as exc:
        raise FarmError(f"cannot connect to the Ray cluster at {address}: {exc}") from None
    return ray


def _check_reachable(address: str, timeout_s: float) -> None:
    """A quick TCP connect, so a wrong host or port fails within the timeout, not after Ray's retries."""
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise FarmError(
            f"--ray {address}: give auto, ray://HOST:PORT (Ray's client, usually port 10001) or "
            "HOST:PORT (the head node's GCS, usually 6379)"
        )
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as exc:
        raise FarmError(
            f"cannot reach the Ray cluster at {address} within {timeout_s:g} s ({exc}): is the head node "
            "running (`ray start --head`) and is the port open from this machine?"
        ) from None


@dataclass(frozen=True)
class ActorPlan:
    """How many generation actors the cluster gets, and what each asks Ray for."""

    count: int
    num_cpus: float
    num_gpus: float
    device: str

    def describe(self) -> str:
        kind = "GPU" if self.num_gpus else "CPU"
        return f"{self.count} {kind} generation actor{'s' if self.count != 1 else ''}"


def plan_actors(resources: dict[str, float], cpu_actors: int | None, address: str) -> ActorPlan:
    """One actor per GPU, or ``cpu_actors`` CPU actors; FarmError says what the cluster lacks.

    Renders need a CPU of their own beside the actors, or they would wait forever.
    """
    cpus = int(resources.get("CPU", 0))
    where = "this machine's Ray" if address == LOCAL else f"the Ray cluster at {address}"
    if cpu_actors is not None:
        if cpus < cpu_actors + 1:
            raise FarmError(
                f"{where} has {cpus} CPU(s); {cpu_actors} CPU actor(s) need {cpu_actors + 1} "
                "(one each, and one for the OSCR renders): give a smaller --ray-cpu-actors or add nodes"
            )
        return ActorPlan(cpu_actors, 1, 0, "cpu")
    gpus = int(resources.get("GPU", 0))
    if gpus == 0:
        raise FarmError(
            f"{where} has no GPU: generation actors need one GPU each (num_gpus=1). Add GPU nodes "
            "(`ray start --address HEAD --num-gpus N`), or run CPU actors with --ray-cpu-actors N "
            "(slow; for testing with --tiny)"
        )
    if cpus < 1:
        raise FarmError(f"{where} has no CPU for the OSCR renders: add a node with CPUs")
    return ActorPlan(gpus, 0, 1, "cuda")
