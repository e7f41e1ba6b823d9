"""What one training run is asked to do: built from the command line, checked before anything loads."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from seethrough_core.limits import (
    DEFAULT_STEPS,
    TRAIN_AMODAL_WEIGHT,
    TRAIN_BATCH,
    TRAIN_CAPTION_DROPOUT,
    TRAIN_CHECKPOINT_EVERY,
    TRAIN_LEARNING_RATE,
    TRAIN_RANK,
    TRAIN_RESOLUTIONS,
    TRAIN_STEPS,
    TRAIN_WARMUP_STEPS,
)
from seethrough_core.vocabulary import (
    DEFAULT_TRAIN_LOSS,
    DEFAULT_TRAIN_MEMORY_MODE,
    TRAIN_LOSSES,
    TRAIN_MEMORY_MODES,
)

from ..model_errors import TrainingError

MIXED_PRECISIONS = ("bf16", "fp16", "no")


@dataclass(frozen=True)
class TrainingConfig:
    data: tuple[Path, ...]  # dataset folders (`seethrough dataset make`)
    out: Path  # the run folder: checkpoints, log, validation images
    model: str | None = None  # FLUX.1-dev folder or cached repo id; None with tiny
    tiny: bool = False  # the tiny random FLUX (tests, trying the command without a GPU)
    init_lora: Path | None = None  # start from these weights (fine-tuning the released checkpoint)
    rank: int = TRAIN_RANK
    lr: float = TRAIN_LEARNING_RATE
    warmup: int = TRAIN_WARMUP_STEPS
    steps: int = TRAIN_STEPS  # optimizer steps in all (a resumed run stops at the same total)
    batch: int = TRAIN_BATCH  # samples per optimizer step and process
    grad_accum: int = 1  # the batch is accumulated this many times before each optimizer step
    resolution: int = TRAIN_RESOLUTIONS[0]
    caption_dropout: float = TRAIN_CAPTION_DROPOUT
    loss: str = DEFAULT_TRAIN_LOSS
    amodal_weight: float = TRAIN_AMODAL_WEIGHT
    checkpoint_every: int = TRAIN_CHECKPOINT_EVERY
    validate_every: int = 0  # 0: no validation images
    validate: tuple[Path, ...] = ()  # rendered layout folders (`seethrough render LAYOUT --out DIR`)
    validate_steps: int = DEFAULT_STEPS
    resume: bool = False
    memory: str = DEFAULT_TRAIN_MEMORY_MODE
    device: str | None = None  # None: the accelerator's device (cuda when there is one)
    mixed_precision: str | None = None  # None: bf16 on CUDA, none on the CPU
    gradient_checkpointing: bool = True
    optimizer_8bit: bool = False  # bitsandbytes' AdamW8bit (on with --memory 24gb)
    tensorboard: bool = False
    seed: int = 0
    cache: Path | None = None  # where the encoded dataset is kept (None: <dataset>/cache)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form notes kept in the run's config.json

    def __post_init__(self) -> None:
        check_config(self)

    @property
    def micro_batches(self) -> int:
        """Samples each process runs (one at a time) per optimizer step."""
        return self.batch * self.grad_accum

    @property
    def uses_8bit_adam(self) -> bool:
        return self.optimizer_8bit or self.memory == "24gb"

    def to_json_dict(self) -> dict[str, Any]:
        raw = asdict(self)
        for key, value in raw.items():
            if isinstance(value, Path):
                raw[key] = str(value)
            elif isinstance(value, tuple):
                raw[key] = [str(item) for item in value]
        return raw


def check_config(config: TrainingConfig) -> None:
    """Every option's range, with the option's name in the message."""
    problems = []
    if not config.data:
        problems.append("--data: give at least one dataset folder")
    if config.tiny == (config.model is not None):
        problems.append("give exactly one of --model PATH_OR_HF_ID and --tiny")
    positive = {
        "--rank": config.rank,
        "--steps": config.steps,
        "--batch": config.batch,
        "--grad-accum": config.grad_accum,
        "--checkpoint-every": config.checkpoint_every,
        "--validate-steps": config.validate_steps,
    }
    problems += [f"{name} must be at least 1, got {value}" for name, value in positive.items() if value < 1]
    if not (math.isfinite(config.lr) and config.lr > 0):
        problems.append(f"--lr must be a positive number, got {config.lr}")
    if config.warmup < 0:
        problems.append(f"--warmup must be 0 or more, got {config.warmup}")
    if config.resolution not in TRAIN_RESOLUTIONS and not config.tiny:
        problems.append(f"--resolution must be one of {TRAIN_RESOLUTIONS}, got {config.resolution}")
    if config.resolution % 16 or config.resolution < 64:
        problems.append(f"--resolution must be a multiple of 16 and at least 64, got {config.resolution}")
    if not 0.0 <= config.caption_dropout <= 1.0:
        problems.append(f"--caption-dropout must be within [0, 1], got {config.caption_dropout}")
    if config.loss not in TRAIN_LOSSES:
        problems.append(f"--loss must be one of {TRAIN_LOSSES}, got {config.loss!r}")
    if not (math.isfinite(config.amodal_weight) and config.amodal_weight >= 0):
        problems.append(f"--amodal-weight must be 0 or more, got {config.amodal_weight}")
    if config.validate_every < 0:
        problems.append(f"--validate-every must be 0 or more, got {config.validate_every}")
    if config.validate_every and not config.validate:
        problems.append("--validate-every needs at least one --validate folder")
    if config.memory not in TRAIN_MEMORY_MODES:
        problems.append(f"--memory must be one of {TRAIN_MEMORY_MODES}, got {config.memory!r}")
    if config.memory == "24gb" and config.validate_every:
        problems.append(
            "--validate-every is not available with --memory 24gb (the T5 encoder would not fit beside "
            "training); serve a checkpoint instead: seethrough serve --memory 24gb --lora "
            "RUN/checkpoint-N/lora.safetensors"
        )
    if config.mixed_precision is not None and config.mixed_precision not in MIXED_PRECISIONS:
        problems.append(f"mixed precision must be one of {MIXED_PRECISIONS}, got {config.mixed_precision!r}")
    if config.init_lora is not None and config.resume:
        problems.append("--init-lora and --resume exclude each other: a resumed run has its own weights")
    if problems:
        raise TrainingError("; ".join(problems))


def config_warnings(config: TrainingConfig, data_sides: dict[Path, set[int]]) -> list[str]:
    """Settings that run but are likely not what was meant; ``data_sides``: each dataset's longest
    image sides. Said before training starts, so a wasted night is a warning away."""
    warnings = []
    for folder, sides in data_sides.items():
        smaller = sorted(side for side in sides if side < config.resolution)
        larger = sorted(side for side in sides if side > config.resolution)
        if smaller:
            warnings.append(
                f"{folder} has images of {', '.join(map(str, smaller))} px (longest side), smaller than "
                f"--resolution {config.resolution}: they are upscaled, so the model learns blurry detail; "
                f"train at --resolution {max(smaller)} or make the data at {config.resolution} px"
            )
        if larger:
            warnings.append(
                f"{folder} has images of {', '.join(map(str, larger))} px (longest side), larger than "
                f"--resolution {config.resolution}: they are downscaled"
            )
    if config.warmup >= config.steps:
        warnings.append(
            f"--warmup {config.warmup} >= --steps {config.steps}: the learning rate never reaches --lr "
            f"{config.lr:g}; use fewer warm-up steps"
        )
    return warnings
