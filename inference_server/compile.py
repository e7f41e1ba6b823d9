"""Regional compilation of the transformer blocks, with the compiled kernels cached on disk.

``torch.compile`` runs on the four per-block functions of ``transformer.py`` (double-stream,
single-stream, and their cached-condition variants), not on the whole model: the 19 double-stream blocks
share one compiled graph and the 38 single-stream blocks another (their weights are graph inputs), so
compiling costs a few graphs instead of 57 blocks' worth. Compilation happens on the first request at
each image size (minutes on a GPU); inductor's caches live under ``~/.cache/seethrough/torch-compile``
(or $XDG_CACHE_HOME/seethrough/...; an explicit $TORCHINDUCTOR_CACHE_DIR wins), so the next server
start at the same size reuses them and takes seconds.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from .transformer import (
    BlockRunners,
    run_double_block,
    run_double_block_cached,
    run_single_block,
    run_single_block_cached,
)

logger = logging.getLogger(__name__)

# One graph per (image size, condition-cache on/off, attention kind, LoRA on/off) and function: allow
# many sizes before dynamo gives up and falls back to eager.
RECOMPILE_LIMIT = 64


@dataclass(frozen=True)
class CompileSettings:
    backend: str = "inductor"
    mode: str | None = None  # torch.compile's mode, e.g. "max-autotune-no-cudagraphs"
    fullgraph: bool = False  # True makes any graph break an error (the tests use it)
    dynamic: bool | None = False  # static shapes: kernels specialised to each image size


def compile_cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "seethrough" / "torch-compile"


def use_compile_cache() -> Path:
    """Point inductor's on-disk caches (FX graphs, Triton kernels) at our folder unless the user chose one.

    torch writes its default (a folder under /tmp, often wiped at reboot) into $TORCHINDUCTOR_CACHE_DIR as
    soon as dynamo is imported, so that value counts as "not chosen".
    """
    current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if current is None or os.path.abspath(current) == os.path.abspath(_torch_default_cache_dir()):
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(compile_cache_dir())
    folder = Path(os.environ["TORCHINDUCTOR_CACHE_DIR"])
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _torch_default_cache_dir() -> str:
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError:  # a torch without it writes no default either
        return ""
    return default_cache_dir()


def compiled_runners(settings: CompileSettings) -> BlockRunners:
    """The block functions wrapped by torch.compile; compilation itself happens at their first call."""
    dynamo_config = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):  # renamed in torch 2.6; set whichever exists
        if hasattr(dynamo_config, name):
            setattr(dynamo_config, name, max(getattr(dynamo_config, name), RECOMPILE_LIMIT))

    def wrap(function):
        return torch.compile(
            function,
            backend=settings.backend,
            mode=settings.mode,
            fullgraph=settings.fullgraph,
            dynamic=settings.dynamic,
        )

    return BlockRunners(
        double=wrap(run_double_block),
        single=wrap(run_single_block),
        double_cached=wrap(run_double_block_cached),
        single_cached=wrap(run_single_block_cached),
    )


class CompileNotices:
    """Logs while a request compiles: the first one at each (size, mode) key does."""

    def __init__(self, cache: Path | None = None) -> None:
        self.cache = cache  # where compiled kernels are kept between runs (None: nothing is kept)
        self._seen: set[tuple] = set()

    def first(self, key: tuple, description: str) -> bool:
        """True (after logging a notice) the first time ``key`` is seen."""
        if key in self._seen:
            return False
        self._seen.add(key)
        kept = f"seconds when the compile cache {self.cache} already has it" if self.cache else "not cached"
        logger.info(
            "compiling the transformer blocks for %s: the first request at this size takes minutes (%s)",
            description,
            kept,
        )
        return True

    @staticmethod
    def done(description: str, seconds: float) -> None:
        logger.info("compiled the transformer blocks for %s; that request took %.1f s", description, seconds)
