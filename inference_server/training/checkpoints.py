"""A run's checkpoints: ``RUN/checkpoint-<step>/`` holds ``lora.safetensors`` (the released key layout,
what `seethrough serve --lora` loads) and ``training_state.pt`` (optimizer and learning-rate schedule),
which `--resume` continues from.

A checkpoint is written into a ``.partial`` folder and renamed when complete, so a crash while saving
never leaves a checkpoint that looks finished but is not.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..lora import SeeThroughLoRA, save_seethrough_lora

LORA_FILE = "lora.safetensors"
STATE_FILE = "training_state.pt"
STATE_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass(frozen=True)
class TrainingState:
    step: int  # optimizer steps done
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rank: int


def checkpoint_dir(run: Path, step: int) -> Path:
    return Path(run) / f"checkpoint-{step}"


def save_checkpoint(
    run: Path, step: int, lora: SeeThroughLoRA, optimizer: torch.optim.Optimizer, scheduler
) -> Path:
    """Write checkpoint ``step`` (replacing one of the same step); returns its folder."""
    final = checkpoint_dir(run, step)
    partial = final.with_name(final.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_seethrough_lora(lora, partial / LORA_FILE)
    state = {
        "version": STATE_VERSION,
        "step": step,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rank": lora.rank,
    }
    torch.save(state, partial / STATE_FILE)
    shutil.rmtree(final, ignore_errors=True)
    partial.rename(final)
    return final


def latest_checkpoint(run: Path) -> Path | None:
    """The complete checkpoint of the highest step in ``run``, or None."""
    found = []
    for child in Path(run).glob("checkpoint-*"):
        match = _NAME.match(child.name)
        if match and (child / LORA_FILE).is_file() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return max(found)[1] if found else None


def load_training_state(folder: Path) -> TrainingState:
    raw = torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=False)
    return TrainingState(
        step=raw["step"], optimizer=raw["optimizer"], scheduler=raw["scheduler"], rank=raw["rank"]
    )
