"""The training loop: frozen FLUX.1-dev, the SeeThrough3D LoRA trained through the server's forward.

One optimizer step on each process: ``batch * grad_accum`` samples, each run alone (its own attention
mask) with its gradient accumulated; then gradient clipping (norm 1), AdamW and the learning-rate
schedule (constant after a linear warm-up). accelerate runs it on one device or data-parallel on several
(`accelerate launch -m seethrough train ...`); mixed precision (bf16 on CUDA) is its autocast.

Stopping: a first Ctrl-C (or SIGTERM) finishes the current step, saves a resumable checkpoint and stops;
a non-finite loss stops before the optimizer step, keeping the last good checkpoint; running out of
GPU memory stops with what to try.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from diffusers.optimization import get_constant_schedule_with_warmup
from tqdm import tqdm

from seethrough_core.limits import TRAIN_MAX_GRAD_NORM, TRAIN_WEIGHT_DECAY
from seethrough_core.stop_signals import install_stop_handlers

from ..components import FluxComponents
from ..loading import load_components
from ..lora import SeeThroughLoRA, expected_release_keys, lora_shape_of, read_seethrough_lora
from ..model_errors import LoRAFormatError, NonFiniteLossError, TrainingError
from ..quantize import quantize_transformer, require_backend
from ..tiny import build_tiny_components
from ..transformer import EAGER_RUNNERS
from ..weights import resolve_model_folder, resolve_seethrough_lora
from .block_checkpointing import checkpointed_runners
from .checkpoints import LORA_FILE, latest_checkpoint, load_training_state, save_checkpoint
from .config import TrainingConfig
from .flow_loss import MicroBatchDraw, draw_micro_batch, training_sigmas
from .loss_model import LoRALossModel
from .run_log import RunLog
from .sample_cache import EncodedDataset, encode_datasets
from .validation import ValidationInput, read_validation_input, write_validation_images

TINY_MODEL_NAME = "tiny"  # `seethrough serve --tiny`'s model: build_tiny_components(seed 0)
TINY_SEED = 0

StepHook = Callable[[int, "Trainer"], None]


@dataclass(frozen=True)
class TrainingResult:
    step: int  # optimizer steps done in all
    checkpoint: Path | None  # the last checkpoint written or resumed from
    interrupted: bool = False


class Trainer:
    """Set up from a TrainingConfig (models, dataset cache, LoRA, optimizer), then ``run()``."""

    def __init__(
        self,
        config: TrainingConfig,
        *,
        on_step: StepHook | None = None,
        show_progress: bool = True,
        handle_signals: bool = True,
        components: tuple[FluxComponents, str] | None = None,
    ) -> None:
        """``components``: models built by the caller and their name (benchmarks with random weights);
        by default they are loaded as ``config`` says."""
        self.config = config
        self.on_step = on_step
        self.show_progress = show_progress
        self.handle_signals = handle_signals
        device = config.device or ("cpu" if config.tiny else None)
        _check_device(device)
        self.accelerator = Accelerator(
            mixed_precision=config.mixed_precision or _default_precision(device),
            cpu=device == "cpu",
        )
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        if config.uses_8bit_adam and self.device.type != "cuda":
            raise TrainingError(
                "8-bit AdamW (bitsandbytes) needs a CUDA GPU; drop --memory 24gb on this device"
            )
        self.validation_inputs: list[ValidationInput] = [
            read_validation_input(path) for path in config.validate
        ]
        self.run_dir = Path(config.out)
        resume_from = self._check_run_folder()

        self.components, self.model_name = self._place(*(components or self._load_components()))
        with self.accelerator.main_process_first():  # one process encodes, the others then read the cache
            self.dataset: EncodedDataset = encode_datasets(
                config.data,
                self.components,
                self.model_name,
                config.resolution,
                self.device,
                config.cache,
                show_progress=show_progress and self.is_main,
            )
        for encoder in (self.components.text_encoder, self.components.text_encoder_2):
            encoder.to("cpu")  # not needed while training (validation brings them back for a moment)
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

        self.start_step = 0
        lora = self._initial_lora(resume_from)
        runners = checkpointed_runners() if config.gradient_checkpointing else EAGER_RUNNERS
        amodal = config.amodal_weight if config.loss == "amodal-balanced" else None
        model = LoRALossModel(self.components.transformer, lora, runners, self.dataset.empty_prompt, amodal)
        optimizer = _optimizer(lora, config)
        self.scheduler = get_constant_schedule_with_warmup(optimizer, num_warmup_steps=config.warmup)
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        if resume_from is not None:
            state = load_training_state(resume_from)
            self.optimizer.load_state_dict(state.optimizer)
            self.scheduler.load_state_dict(state.scheduler)
            self.start_step = state.step
        self.last_checkpoint = resume_from
        self.sigmas = training_sigmas(self.components.scheduler.config)
        self.order = SampleOrder(
            len(self.dataset), config.seed, self.accelerator.num_processes, self.accelerator.process_index
        )
        self._stop_requested = False

    # ----------------------------------------------------------------- setup

    def _check_run_folder(self) -> Path | None:
        config = self.config
        latest = latest_checkpoint(self.run_dir) if self.run_dir.is_dir() else None
        if config.resume and latest is None:
            raise TrainingError(f"--resume: {self.run_dir} holds no checkpoint yet; start without --resume")
        if not config.resume and latest is not None:
            raise TrainingError(
                f"{self.run_dir} already holds checkpoints (latest {latest.name}): pass --resume to continue "
                "that run, or choose another --out"
            )
        if self.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            config_file = self.run_dir / "config.json"
            config_file.write_text(json.dumps(config.to_json_dict(), indent=1) + "\n", encoding="utf-8")
        return latest

    def _load_components(self) -> tuple[FluxComponents, str]:
        config = self.config
        if config.tiny:
            components = build_tiny_components(TINY_SEED)
            name = TINY_MODEL_NAME
        else:
            folder = resolve_model_folder(str(config.model))
            place = None
            if config.memory == "24gb":
                require_backend(
                    "nf4"
                )  # trains through NF4 weights (QLoRA); fp8 kernels have no backward here

                def place(transformer) -> None:
                    quantize_transformer(transformer, "nf4", self.device, torch.bfloat16)

            components = load_components(folder, torch.bfloat16, place)
            name = str(folder.resolve())
        return components, name

    def _place(self, components: FluxComponents, name: str) -> tuple[FluxComponents, str]:
        components.condition_lora = None  # the LoRA being trained is the trainer's own
        components.transformer.requires_grad_(False).to(self.device)
        components.vae.to(self.device)
        components.text_encoder.to(self.device)
        components.text_encoder_2.to(self.device)
        return components, name

    def _initial_lora(self, resume_from: Path | None) -> SeeThroughLoRA:
        config, transformer = self.config, self.components.transformer
        if resume_from is not None:
            lora = read_seethrough_lora(resume_from / LORA_FILE, transformer)
            self._check_rank(lora, resume_from / LORA_FILE, "the resumed run")
        elif config.init_lora is not None:
            path = resolve_seethrough_lora(str(config.init_lora))
            lora = read_seethrough_lora(path, transformer)  # a wrong layout names its first bad key
            self._check_rank(lora, path, "--init-lora")
        else:
            lora = fresh_lora(transformer, config.rank, config.seed)
        return lora.to(device=self.device, dtype=torch.float32).requires_grad_(True)

    def _check_rank(self, lora: SeeThroughLoRA, path: Path, what: str) -> None:
        if lora.rank != self.config.rank:
            first = expected_release_keys(len(lora.double_blocks), len(lora.single_blocks))[0]
            raise LoRAFormatError(
                first,
                f"{what} {path} has rank {lora.rank}, but training is set to rank {self.config.rank}: pass "
                f"--rank {lora.rank} to train it",
            )

    # ----------------------------------------------------------------- the loop

    @property
    def lora(self) -> SeeThroughLoRA:
        return self.accelerator.unwrap_model(self.model).lora

    def draw(self, step: int, micro: int) -> MicroBatchDraw:
        """The random choices of one micro-batch (0-based optimizer step) on this process."""
        accelerator = self.accelerator
        slot = micro * accelerator.num_processes + accelerator.process_index
        return draw_micro_batch(self.config.seed, step, slot, self.sigmas, self.config.caption_dropout)

    @torch.no_grad()
    def evaluate_loss(self, sample_index: int, draw: MicroBatchDraw) -> float:
        """The loss of one sample under ``draw`` with the current weights (no update)."""
        return float(self.model(self.dataset[sample_index], draw))

    def run(self) -> TrainingResult:
        config = self.config
        log = RunLog(self.run_dir, self.start_step, config.tensorboard) if self.is_main else None
        bar = tqdm(
            total=config.steps,
            initial=self.start_step,
            desc="training",
            unit="step",
            disable=not (self.show_progress and self.is_main),
        )
        restore = install_stop_handlers(self._request_stop) if self.handle_signals else (lambda: None)
        step = self.start_step
        try:
            while step < config.steps:
                if self._stop_agreed():
                    self._save(step)
                    return TrainingResult(step, self.last_checkpoint, interrupted=True)
                started = time.perf_counter()
                lr = self.optimizer.param_groups[0]["lr"]
                loss = self._step(step)
                step += 1
                if self.is_main:
                    log.add(step, loss, lr, time.perf_counter() - started)
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4f}", lr=f"{lr:.2e}")
                    if self.on_step is not None:
                        self.on_step(step, self)
                if step % config.checkpoint_every == 0 or step == config.steps:
                    self._save(step)
                if config.validate_every and step % config.validate_every == 0 and self.is_main:
                    self._validate(step)
        except torch.OutOfMemoryError:
            self.optimizer.zero_grad(set_to_none=True)
            raise TrainingError(self._out_of_memory_message(step + 1)) from None
        finally:
            restore()
            bar.close()
            if log is not None:
                log.close()
        return TrainingResult(step, self.last_checkpoint)

    def _stop_agreed(self) -> bool:
        """Whether a stop was asked for on any process: all of them stop at the same step."""
        flag = torch.tensor([float(self._stop_requested)], device=self.device)
        return bool(self.accelerator.reduce(flag, reduction="sum")[0] > 0)

    def _step(self, step: int) -> float:
        """One optimizer step (0-based ``step``); returns the mean loss over all processes."""
        accelerator, micro_batches = self.accelerator, self.config.micro_batches
        losses = []
        for micro in range(micro_batches):
            sample = self.dataset[self.order.index(step, micro, micro_batches)]
            last = micro == micro_batches - 1
            with nullcontext() if last else accelerator.no_sync(self.model):
                loss = self.model(sample, self.draw(step, micro))
                accelerator.backward(loss / micro_batches)
            losses.append(float(loss.detach()))
        finite = all(np.isfinite(losses))
        summary = torch.tensor(
            [float(np.mean(losses)) if finite else 0.0, float(not finite)], device=self.device
        )
        summary = accelerator.reduce(summary, reduction="sum")
        if summary[1] > 0:
            self.optimizer.zero_grad(set_to_none=True)
            bad = next((value for value in losses if not np.isfinite(value)), float("nan"))
            raise NonFiniteLossError(step + 1, self._non_finite_message(step + 1, bad))
        accelerator.clip_grad_norm_(self.lora.parameters(), TRAIN_MAX_GRAD_NORM)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(summary[0]) / accelerator.num_processes

    def _save(self, step: int) -> None:
        if self.is_main:
            self.last_checkpoint = save_checkpoint(
                self.run_dir, step, self.lora, self.optimizer, self.scheduler
            )

    def _validate(self, step: int) -> None:
        write_validation_images(
            self.components,
            self.lora,
            self.validation_inputs,
            self.run_dir / "validation" / f"step-{step}",
            self.device,
            self.config.validate_steps,
            is_noise=self.config.tiny,
        )

    def _request_stop(self) -> None:
        """First Ctrl-C / SIGTERM: stop after this step with a checkpoint (a second Ctrl-C: at once)."""
        if self.is_main:
            tqdm.write("stopping after this step with a checkpoint (Ctrl-C again to quit at once)")
        self._stop_requested = True

    def _good_checkpoint_text(self) -> str:
        if self.last_checkpoint is None:
            return "no checkpoint was saved yet"
        return f"the last good checkpoint is {self.last_checkpoint}"

    def _non_finite_message(self, step: int, value: float) -> str:
        return (
            f"the loss became {value} at step {step}; training stopped before updating the weights, and "
            f"{self._good_checkpoint_text()}. Try a lower --lr (now {self.config.lr:g}) or a longer "
            "--warmup, "
            "check the dataset's images, then continue with --resume."
        )

    def _out_of_memory_message(self, step: int) -> str:
        config = self.config
        hints = ["--memory 24gb (NF4 transformer, 8-bit AdamW)"] if config.memory != "24gb" else []
        if config.resolution > 512:
            hints.append("--resolution 512")
        if config.batch > 1:
            hints.append(
                f"--batch 1 --grad-accum {config.batch * config.grad_accum} (the same samples per step)"
            )
        hints.append("closing other programs that use the GPU")
        return (
            f"out of GPU memory at step {step} ({config.resolution} px, batch {config.batch}); "
            f"{self._good_checkpoint_text()}. Try " + ", ".join(hints) + "."
        )


class SampleOrder:
    """Which sample each micro-batch trains on: a fresh permutation of the dataset per epoch, the
    processes taking interleaved places in it. A function of the step, so resuming needs no state."""

    def __init__(self, count: int, seed: int, processes: int, process: int) -> None:
        self.count, self.seed, self.processes, self.process = count, seed, processes, process

    def index(self, step: int, micro: int, micro_batches: int) -> int:
        # the same numbering of a step's samples as the draws' slots: (micro, process)
        position = (step * micro_batches + micro) * self.processes + self.process
        epoch, offset = divmod(position, self.count)
        return int(self._permutation(epoch)[offset])

    @cache  # noqa: B019 - a few epochs' permutations per trainer
    def _permutation(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(self.count)


def fresh_lora(transformer, rank: int, seed: int) -> SeeThroughLoRA:
    """A new LoRA that leaves the model unchanged at first: ``down`` ~ N(0, 1/rank), ``up`` = 0."""
    lora = SeeThroughLoRA(rank=rank, **lora_shape_of(transformer))
    generator = torch.Generator("cpu").manual_seed(seed)
    with torch.no_grad():
        for name, parameter in lora.named_parameters():
            if name.endswith("down.weight"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) / rank)
            else:
                parameter.zero_()
    return lora


def _optimizer(lora: SeeThroughLoRA, config: TrainingConfig) -> torch.optim.Optimizer:
    options = {"lr": config.lr, "betas": (0.9, 0.999), "weight_decay": TRAIN_WEIGHT_DECAY, "eps": 1e-8}
    if config.uses_8bit_adam:
        try:
            import bitsandbytes
        except ImportError:
            raise TrainingError(
                "8-bit AdamW needs the optional package 'bitsandbytes': pip install 'seethrough[train]'"
            ) from None
        return bitsandbytes.optim.AdamW8bit(lora.parameters(), **options)
    return torch.optim.AdamW(lora.parameters(), **options)


def _check_device(device: str | None) -> None:
    if device is None and not torch.cuda.is_available():
        raise TrainingError(
            "no CUDA GPU found: training FLUX.1-dev needs one (pass --device cpu to train on the CPU anyway, "
            "very slowly, or --tiny to try the command)"
        )
    if device is not None and torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise TrainingError(f"--device {device}: CUDA is not available here; use --device cpu or --tiny")


def _default_precision(device: str | None) -> str:
    if device == "cpu" or (device is None and not torch.cuda.is_available()):
        return "no"
    return "bf16"
