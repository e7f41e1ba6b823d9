"""`seethrough train`: train or fine-tune the SeeThrough3D condition LoRA on `seethrough dataset make` data.

Importing this module stays cheap (no torch). Several GPUs: `accelerate launch -m seethrough train ...`
(data parallel; accelerate starts one process per GPU and the trainer reads its environment).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from seethrough_core.dataset_format import iter_samples
from seethrough_core.errors import SeeThroughError
from seethrough_core.layout import load_layout
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
from seethrough_core.rendered_layout import is_complete, reusable
from seethrough_core.vocabulary import (
    DEFAULT_RENDER_ENGINE,
    DEFAULT_TRAIN_LOSS,
    DEFAULT_TRAIN_MEMORY_MODE,
    TRAIN_LOSSES,
    TRAIN_MEMORY_MODES,
)

from .batch.inputs import LAYOUT_SUFFIXES
from .serve_command import add_model_arguments


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data", nargs="+", required=True, metavar="DIR", help="dataset folders (`seethrough dataset make`)"
    )
    add_model_arguments(parser, "the tiny random FLUX of `seethrough serve --tiny` (for trying it out)")
    parser.add_argument("--out", required=True, metavar="RUN", help="run folder: checkpoints, log, images")
    parser.add_argument(
        "--init-lora",
        metavar="FILE",
        help="start from this SeeThrough3D LoRA to fine-tune the released one (default: a new LoRA)",
    )
    parser.add_argument("--rank", type=int, default=TRAIN_RANK, help=f"LoRA rank ({TRAIN_RANK})")
    parser.add_argument(
        "--lr", type=float, default=TRAIN_LEARNING_RATE, help=f"learning rate ({TRAIN_LEARNING_RATE:g})"
    )
    parser.add_argument(
        "--warmup", type=int, default=TRAIN_WARMUP_STEPS, help=f"linear warm-up steps ({TRAIN_WARMUP_STEPS})"
    )
    parser.add_argument(
        "--steps", type=int, default=TRAIN_STEPS, help=f"optimizer steps in all ({TRAIN_STEPS})"
    )
    parser.add_argument(
        "--batch", type=int, default=TRAIN_BATCH, help=f"samples per step per GPU ({TRAIN_BATCH})"
    )
    parser.add_argument(
        "--grad-accum", type=int, default=1, metavar="K", help="accumulate K batches per optimizer step (1)"
    )
    parser.add_argument(
        "--resolution",
        type=int,
        default=TRAIN_RESOLUTIONS[0],
        choices=TRAIN_RESOLUTIONS,
        help="longest side of the training images: 512 (stage 1) or 1024 (stage 2)",
    )
    parser.add_argument(
        "--caption-dropout",
        type=float,
        default=TRAIN_CAPTION_DROPOUT,
        help=f"share of samples trained with an empty caption ({TRAIN_CAPTION_DROPOUT:g})",
    )
    parser.add_argument(
        "--loss",
        default=DEFAULT_TRAIN_LOSS,
        choices=TRAIN_LOSSES,
        help="flow: the reference's rectified-flow loss; amodal-balanced: weighted towards occluded objects",
    )
    parser.add_argument(
        "--amodal-weight",
        type=float,
        default=TRAIN_AMODAL_WEIGHT,
        metavar="W",
        help=f"strength of the amodal-balanced weights ({TRAIN_AMODAL_WEIGHT:g})",
    )
    parser.add_argument(
        "--checkpoint-every",
        type=int,
        default=TRAIN_CHECKPOINT_EVERY,
        metavar="K",
        help=f"save RUN/checkpoint-<step> every K steps ({TRAIN_CHECKPOINT_EVERY})",
    )
    parser.add_argument(
        "--validate-every",
        type=int,
        default=0,
        metavar="K",
        help="validation images every K steps (0: never)",
    )
    parser.add_argument(
        "--validate",
        nargs="+",
        default=[],
        metavar="LAYOUT",
        help="layouts for validation images: folders from `seethrough render`, or layout .json/.blend files "
        "(rendered with Blender once, into RUN/validation-inputs/; default none)",
    )
    parser.add_argument(
        "--validate-steps",
        type=int,
        default=DEFAULT_STEPS,
        help=f"denoising steps of validation images ({DEFAULT_STEPS})",
    )
    parser.add_argument("--resume", action="store_true", help="continue RUN from its latest checkpoint")
    parser.add_argument(
        "--memory",
        default=DEFAULT_TRAIN_MEMORY_MODE,
        choices=TRAIN_MEMORY_MODES,
        help="full: bf16 transformer (a 48 GB+ GPU); 24gb: NF4 transformer and 8-bit AdamW, for 24 GB "
        "cards at 512 px (needs seethrough[train])",
    )
    parser.add_argument("--device", help="torch device (default: cuda where there is one; cpu with --tiny)")
    parser.add_argument(
        "--adam-8bit", action="store_true", help="8-bit AdamW (bitsandbytes) in any memory mode"
    )
    parser.add_argument(
        "--no-gradient-checkpointing",
        action="store_true",
        help="keep the blocks' activations instead of recomputing them (faster, much more memory)",
    )
    parser.add_argument(
        "--tensorboard", action="store_true", help="also log to RUN/tensorboard (seethrough[train])"
    )
    parser.add_argument(
        "--cache", metavar="DIR", help="where encoded datasets are kept (default: DATASET/cache)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the sample order and noise (0)")


def run_train(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    from inference_server.model_errors import NonFiniteLossError
    from inference_server.training.config import TrainingConfig, config_warnings
    from inference_server.training.trainer import Trainer

    try:
        validate = _validation_folders([Path(item) for item in args.validate], Path(args.out))
        config = TrainingConfig(
            data=tuple(Path(item) for item in args.data),
            out=Path(args.out),
            model=args.model,
            tiny=args.tiny,
            init_lora=Path(args.init_lora) if args.init_lora else None,
            rank=args.rank,
            lr=args.lr,
            warmup=args.warmup,
            steps=args.steps,
            batch=args.batch,
            grad_accum=args.grad_accum,
            resolution=args.resolution,
            caption_dropout=args.caption_dropout,
            loss=args.loss,
            amodal_weight=args.amodal_weight,
            checkpoint_every=args.checkpoint_every,
            validate_every=args.validate_every,
            validate=tuple(validate),
            validate_steps=args.validate_steps,
            resume=args.resume,
            memory=args.memory,
            device=args.device,
            gradient_checkpointing=not args.no_gradient_checkpointing,
            optimizer_8bit=args.adam_8bit,
            tensorboard=args.tensorboard,
            seed=args.seed,
            cache=Path(args.cache) if args.cache else None,
        )
        for warning in config_warnings(config, _data_sides(config.data)):
            print(f"seethrough train: warning: {warning}", file=sys.stderr, flush=True)
        result = Trainer(config).run()
    except NonFiniteLossError as error:
        return _fail(str(error), code=1)
    except SeeThroughError as error:
        return _fail(str(error))
    if result.interrupted:
        print(
            f"seethrough train: stopped at step {result.step}; saved {result.checkpoint}. "
            f"Continue with the same command and --resume.",
            file=sys.stderr,
        )
        return 130
    print(f"seethrough train: done, {result.step} steps; the LoRA is {result.checkpoint}/lora.safetensors")
    return 0


def _data_sides(folders: tuple[Path, ...]) -> dict[Path, set[int]]:
    """The longest image sides in each dataset (a folder that cannot be read is left to the trainer,
    which names the problem)."""
    sides: dict[Path, set[int]] = {}
    for folder in folders:
        try:
            sides[folder] = {max(s.width, s.height) for s in iter_samples(folder)}
        except (SeeThroughError, OSError, ValueError):
            continue
    return sides


def _validation_folders(items: list[Path], run: Path) -> list[Path]:
    """Rendered folders as given; layout files rendered with Blender once into RUN/validation-inputs/."""
    folders = []
    for item in items:
        if item.is_file() and item.suffix.lower() in LAYOUT_SUFFIXES:
            folder = run / "validation-inputs" / item.stem
            # A .json layout is read here, so a changed file is rendered again (the one reuse rule of
            # rendered_layout); a .blend needs Blender to read, so its finished render is kept.
            layout = load_layout(item) if item.suffix.lower() == ".json" else None
            if (reusable(folder, layout) is None) if layout is not None else not is_complete(folder):
                from blender_addon.render_process import render_file  # loads Blender

                if render_file(item, folder, engine=DEFAULT_RENDER_ENGINE) != 0:
                    raise SeeThroughError(f"--validate {item}: the layout could not be rendered (see above)")
            folders.append(folder)
        else:
            folders.append(item)
    return folders


def _fail(message: str, code: int = 2) -> int:
    print(f"seethrough train: error: {message}", file=sys.stderr)
    return code
