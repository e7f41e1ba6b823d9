"""`seethrough train` on the tiny real FLUX classes: the loss falls, checkpoints serve, resume and
--init-lora continue exactly, the loss weights and the random draws follow their definitions."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from process_support import run_command
from training_support import two_box_masks, write_dataset, write_rendered_layout

from inference_server.lora import SeeThroughLoRA, read_seethrough_lora, save_seethrough_lora
from inference_server.model_errors import LoRAFormatError, NonFiniteLossError, TrainingError
from inference_server.pipeline import SeeThroughPipeline
from inference_server.tiny import TINY_LORA_RANK
from inference_server.training.amodal_weights import amodal_balanced_weights
from inference_server.training.block_checkpointing import checkpointed_runners
from inference_server.training.checkpoints import LORA_FILE, latest_checkpoint
from inference_server.training.config import TrainingConfig
from inference_server.training.flow_loss import draw_micro_batch, training_sigmas
from inference_server.training.loss_model import LoRALossModel
from inference_server.training.run_log import read_log
from inference_server.training.trainer import Trainer
from inference_server.transformer import EAGER_RUNNERS
from seethrough.cli import main
from seethrough.serve_command import _pipeline_loader, add_serve_arguments
from seethrough_core.dataset_format import METADATA_NAME
from seethrough_core.server_process import free_loopback_port as free_port

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data") / "set", count=2)


def config(dataset: Path, out: Path, **overrides) -> TrainingConfig:
    """A quick tiny run: rank of the tiny model, the samples' own 256 px, one sample per step, no
    activation recomputation."""
    options = dict(
        data=(dataset,),
        out=out,
        tiny=True,
        rank=TINY_LORA_RANK,
        steps=4,
        warmup=0,
        batch=1,
        checkpoint_every=2,
        gradient_checkpointing=False,
        resolution=256,
    )
    options.update(overrides)
    return TrainingConfig(**options)


def logged(run: Path) -> list[tuple[int, float, float]]:
    return [(int(row["step"]), float(row["loss"]), float(row["lr"])) for row in read_log(run / "log.csv")]


# ----------------------------------------------------------------- definitions (fast)


def test_amodal_balanced_weights_on_two_boxes():
    amodal, visible = two_box_masks(64)  # box 0 in front, fully visible; box 1 partly behind it
    coverage = torch.from_numpy(visible > 0).float()
    ratios = torch.tensor([1.0, float(visible[1].sum() / amodal[1].sum())])
    assert 0.3 < ratios[1] < 0.9
    weights = amodal_balanced_weights(coverage, ratios, strength=2.0)

    background = weights[0, 0]
    assert torch.allclose(weights.mean(), torch.tensor(1.0))
    assert torch.allclose(weights[visible[0] > 0], background)  # a fully visible object: no boost
    assert torch.allclose(weights[visible[1] > 0] / background, 1 + 2.0 * (1 - ratios[1]))
    hidden_part = (amodal[1] > 0) & (visible[1] == 0)
    assert torch.allclose(weights[hidden_part], background)  # what is hidden is the occluder's pixels
    assert torch.equal(amodal_balanced_weights(coverage, ratios, strength=0.0), torch.ones(64, 64))


def test_caption_dropout_and_noise_levels_follow_the_reference():
    sigmas = training_sigmas(SeeThroughPipeline.tiny().scheduler.config)
    assert len(sigmas) == 1000 and sigmas.max() == 1.0 and torch.isclose(sigmas.min(), torch.tensor(0.001))
    draws = [draw_micro_batch(3, step, slot, sigmas, 0.1) for step in range(2500) for slot in range(2)]
    dropped = np.mean([draw.drop_caption for draw in draws])
    assert 0.085 < dropped < 0.115  # 5000 draws: 10% within about 3 standard deviations
    levels = np.array([draw.sigma for draw in draws])
    assert 0.48 < levels.mean() < 0.52 and levels.min() >= 0.001 and levels.max() <= 1.0
    assert not any(draw_micro_batch(3, s, 0, sigmas, 0.0).drop_caption for s in range(200))
    assert all(draw_micro_batch(3, s, 0, sigmas, 1.0).drop_caption for s in range(200))
    assert draw_micro_batch(3, 7, 1, sigmas, 0.1) == draw_micro_batch(3, 7, 1, sigmas, 0.1)
    assert draw_micro_batch(3, 7, 1, sigmas, 0.1) != draw_micro_batch(3, 7, 2, sigmas, 0.1)


def test_a_dataset_sample_without_a_field_is_named(tmp_path, dataset, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    line = json.loads((dataset / METADATA_NAME).read_text().splitlines()[0])
    del line["visibility"]
    (broken / METADATA_NAME).write_text(json.dumps(line) + "\n")
    code = main(["train", "--tiny", "--data", str(broken), "--out", str(tmp_path / "run"), "--rank", "4"])
    assert code == 2
    assert "lacks the field(s) visibility" in capsys.readouterr().err


def test_bad_options_are_named_before_anything_loads(tmp_path, capsys):
    code = main(["train", "--tiny", "--data", "x", "--out", str(tmp_path), "--lr", "-1", "--batch", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert "--lr must be a positive number" in err and "--batch must be at least 1" in err


def test_init_lora_of_the_wrong_rank_or_layout_names_the_first_bad_key(tmp_path, dataset):
    model = SeeThroughPipeline.tiny().transformer
    wrong_rank = tmp_path / "rank8.safetensors"
    save_seethrough_lora(SeeThroughLoRA.random(model.inner_dim, 8, 2, 2, seed=1), wrong_rank)
    with pytest.raises(LoRAFormatError, match="rank 8.*--rank 8") as error:
        Trainer(config(dataset, tmp_path / "a", init_lora=wrong_rank), show_progress=False)
    assert error.value.key == "transformer_blocks.0.attn.processor.q_loras.0.down.weight"

    wrong_layout = tmp_path / "three_blocks.safetensors"
    save_seethrough_lora(SeeThroughLoRA.random(model.inner_dim, 4, 3, 2, seed=1), wrong_layout)
    with pytest.raises(LoRAFormatError) as error:
        Trainer(config(dataset, tmp_path / "b", init_lora=wrong_layout), show_progress=False)
    assert error.value.key.startswith("transformer_blocks.2.")


def test_the_amodal_balanced_loss_weighs_the_hidden_objects_pixels(tmp_path, dataset):
    flow = Trainer(config(dataset, tmp_path / "flow"), show_progress=False)
    balanced = Trainer(
        config(dataset, tmp_path / "balanced", loss="amodal-balanced", amodal_weight=3.0), show_progress=False
    )
    sample = balanced.dataset[0]
    assert sample.visibility.tolist() == pytest.approx([1.0, 0.8125])  # from the dataset: 3/16 hidden
    assert sample.visible.shape == (2, 32, 32)  # coverage on the 256 px sample's latent grid
    draw = flow.draw(0, 0)
    plain, weighted = flow.evaluate_loss(0, draw), balanced.evaluate_loss(0, draw)
    assert np.isfinite(weighted) and abs(weighted - plain) > 1e-4 * plain


@pytest.mark.slow
def test_gradient_checkpointing_gives_the_same_gradients(tmp_path, dataset):
    trainer = Trainer(config(dataset, tmp_path / "run"), show_progress=False)
    model = trainer.components.transformer
    lora = SeeThroughLoRA.random(model.inner_dim, TINY_LORA_RANK, 2, 2, seed=3).requires_grad_(True)
    gradients = []
    for runners in (EAGER_RUNNERS, checkpointed_runners()):
        loss_model = LoRALossModel(model, lora, runners, trainer.dataset.empty_prompt, None)
        loss_model(trainer.dataset[0], trainer.draw(0, 0)).backward()
        gradients.append(torch.cat([p.grad.flatten() for p in lora.parameters()]))
        lora.zero_grad(set_to_none=True)
    assert gradients[0].abs().max() > 0
    assert torch.allclose(gradients[0], gradients[1], rtol=1e-4, atol=1e-7)


def test_training_the_real_model_without_a_gpu_says_what_to_do(tmp_path, dataset, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(TrainingError, match="no CUDA GPU found.*--tiny"):
        Trainer(TrainingConfig(data=(dataset,), out=tmp_path, model="black-forest-labs/FLUX.1-dev"))


# ----------------------------------------------------------------- training runs (seconds each)


@pytest.mark.slow
def test_forty_steps_overfit_a_fixed_batch(tmp_path, dataset):
    fixed = []

    def measure(step: int, trainer: Trainer) -> None:
        if step <= 10 or step > 30:
            fixed.append(sum(trainer.evaluate_loss(i, draws[i]) for i in range(2)) / 2)

    setup = Trainer(config(dataset, tmp_path / "probe", steps=1), show_progress=False)
    draws = [setup.draw(0, 0), setup.draw(1, 0)]  # two noise levels, fixed for every measurement
    run = config(dataset, tmp_path / "run", steps=40, lr=2e-3, caption_dropout=0.0, checkpoint_every=40)
    Trainer(run, on_step=measure, show_progress=False).run()
    first, last = np.mean(fixed[:10]), np.mean(fixed[-10:])
    assert last < 0.99 * first, (first, last)  # measured 3.4% lower; 1e-6 lr moves it by 1e-5
    assert latest_checkpoint(tmp_path / "run").name == "checkpoint-40"


@pytest.fixture(scope="module")
def short_run(tmp_path_factory, dataset) -> Path:
    """4 steps, checkpoints at 2 and 4, validation images at 2 and 4, with warm-up (the lr moves)."""
    root = tmp_path_factory.mktemp("runs")
    rendered = write_rendered_layout(root / "street")
    run = config(
        dataset, root / "run", lr=1e-2, warmup=3, validate_every=2, validate=(rendered,), validate_steps=2
    )
    result = Trainer(run, show_progress=False).run()
    assert result.step == 4 and not result.interrupted
    return root / "run"


@pytest.mark.slow
def test_checkpoints_log_and_validation_images(short_run):
    assert [name.name for name in sorted(short_run.glob("checkpoint-*"))] == ["checkpoint-2", "checkpoint-4"]
    rows = logged(short_run)
    assert [step for step, _, _ in rows] == [1, 2, 3, 4]
    assert [lr for _, _, lr in rows] == pytest.approx([0.0, 1e-2 / 3, 2e-2 / 3, 1e-2])  # linear warm-up
    for step in (2, 4):
        assert (short_run / "validation" / f"step-{step}" / "street.png").is_file()


@pytest.mark.slow
def test_the_saved_lora_loads_in_serve_tiny_and_changes_its_output(short_run, make_request):
    lora = short_run / "checkpoint-4" / LORA_FILE
    parser = argparse.ArgumentParser()
    add_serve_arguments(parser)
    served = _pipeline_loader(parser.parse_args(["--tiny", "--lora", str(lora)]), "cpu")()
    assert served.identity["lora"] == str(lora)
    plain = _pipeline_loader(parser.parse_args(["--tiny"]), "cpu")()
    request = make_request()
    trained_image = served(**request).image
    assert not np.array_equal(trained_image, plain(**request).image)
    plain.set_condition_lora(None)
    assert not np.array_equal(trained_image, plain(**request).image)  # not just the base model either


@pytest.mark.slow
def test_resume_continues_at_the_right_step_with_the_same_learning_rate(tmp_path, dataset, short_run):
    run = tmp_path / "run"
    first = config(dataset, run, steps=2, lr=1e-2, warmup=3)
    Trainer(first, show_progress=False).run()
    resumed = Trainer(config(dataset, run, lr=1e-2, warmup=3, resume=True), show_progress=False)
    assert resumed.start_step == 2
    assert resumed.run().step == 4
    straight = logged(short_run)
    for (step, loss, lr), (step_0, loss_0, lr_0) in zip(logged(run), straight, strict=True):
        assert (step, lr) == (step_0, pytest.approx(lr_0))
        assert loss == pytest.approx(loss_0, rel=1e-4, abs=1e-6)  # same weights, optimizer state, draws


@pytest.mark.slow
def test_init_lora_starts_from_the_given_weights(tmp_path, dataset):
    model = SeeThroughPipeline.tiny().transformer
    given = SeeThroughLoRA.random(model.inner_dim, TINY_LORA_RANK, 2, 2, seed=11, std=0.3)
    path = tmp_path / "given.safetensors"
    save_seethrough_lora(given, path)
    trainer = Trainer(config(dataset, tmp_path / "run", steps=1, init_lora=path), show_progress=False)
    for key, value in given.release_state_dict().items():
        assert torch.equal(trainer.lora.release_state_dict()[key].cpu(), value)

    sample = trainer.dataset[trainer.order.index(0, 0, 1)]
    independent = LoRALossModel(model, given, EAGER_RUNNERS, trainer.dataset.empty_prompt, None)
    with torch.no_grad():
        expected = float(independent(sample, trainer.draw(0, 0)))
    fresh = Trainer(config(dataset, tmp_path / "fresh", steps=1), show_progress=False)
    fresh.run()
    trainer.run()
    (_, step_0_loss, _), (_, fresh_loss, _) = logged(tmp_path / "run")[0], logged(tmp_path / "fresh")[0]
    assert step_0_loss == pytest.approx(expected, rel=1e-5)
    assert abs(fresh_loss - expected) > 1e-4  # the given weights matter


@pytest.mark.slow
def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, dataset):
    run = tmp_path / "run"
    trainer = Trainer(config(dataset, run, steps=5, lr=1e36, checkpoint_every=1), show_progress=False)
    with pytest.raises(NonFiniteLossError) as error:
        trainer.run()
    step = error.value.step
    assert step >= 2
    assert latest_checkpoint(run).name == f"checkpoint-{step - 1}"
    assert f"at step {step}" in str(error.value) and f"checkpoint-{step - 1}" in str(error.value)


@pytest.mark.slow
def test_ctrl_c_saves_a_resumable_checkpoint(tmp_path, dataset):
    def interrupt(step: int, trainer: Trainer) -> None:
        if step == 1:
            os.kill(os.getpid(), signal.SIGINT)

    run = tmp_path / "run"
    previous = signal.getsignal(signal.SIGINT)
    result = Trainer(
        config(dataset, run, steps=4, checkpoint_every=10), on_step=interrupt, show_progress=False
    ).run()
    assert signal.getsignal(signal.SIGINT) is previous
    assert (result.step, result.interrupted, result.checkpoint.name) == (1, True, "checkpoint-1")
    resumed = Trainer(config(dataset, run, steps=2, resume=True), show_progress=False)
    assert resumed.start_step == 1 and resumed.run().step == 2


def launch(tmp_path: Path, launcher: list[str], *train_args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", *launcher, "-m", "seethrough", "train", "--tiny", *train_args]
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    return run_command(command, timeout=300, env=env, cwd=tmp_path)


@pytest.mark.slow
def test_accelerate_launch_runs_the_command_in_one_process(tmp_path, dataset):
    run = tmp_path / "run"
    args = ["--rank", "4", "--steps", "2", "--batch", "1", "--checkpoint-every", "1", "--warmup", "0"]
    accelerate = ["accelerate.commands.launch", "--cpu", "--num_processes", "1", "--num_machines", "1"]
    accelerate += ["--mixed_precision", "no", "--dynamo_backend", "no"]
    done = launch(tmp_path, accelerate, "--data", str(dataset), "--out", str(run), *args)
    assert done.returncode == 0, done.stderr[-3000:]
    assert latest_checkpoint(run).name == "checkpoint-2"
    assert len(logged(run)) == 2


@pytest.mark.slow
def test_two_processes_train_as_one_with_twice_the_batch(tmp_path, dataset):
    """Data parallel: each process runs one sample, their gradients are averaged. On CPUs accelerate
    launches several processes only through MPI, so torchrun starts them here; the trainer reads the
    same environment either way (accelerate launch --multi_gpu on GPUs)."""
    options = ["--rank", "4", "--steps", "2", "--warmup", "0", "--lr", "1e-2", "--no-gradient-checkpointing"]
    options += ["--batch", "1", "--checkpoint-every", "2"]
    parallel = tmp_path / "parallel"
    torchrun = ["torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1"]
    torchrun += ["--master_port", str(free_port())]
    done = launch(tmp_path, torchrun, "--data", str(dataset), "--out", str(parallel), *options)
    assert done.returncode == 0, done.stderr[-3000:]
    single = tmp_path / "single"
    Trainer(config(dataset, single, steps=2, lr=1e-2, batch=2, resolution=512), show_progress=False).run()

    for (step, loss, lr), (step_1, loss_1, lr_1) in zip(logged(parallel), logged(single), strict=True):
        assert (step, lr) == (step_1, pytest.approx(lr_1))
        assert loss == pytest.approx(loss_1, rel=1e-4)
    weights = [read_seethrough_lora(run / "checkpoint-2" / LORA_FILE, SeeThroughPipeline.tiny().transformer)
               for run in (parallel, single)]  # fmt: skip
    for key, value in weights[0].release_state_dict().items():
        assert torch.allclose(value, weights[1].release_state_dict()[key], rtol=1e-4, atol=1e-6), key
