"""Every command offers exactly the choices and defaults of the code that acts on them.

The command line reads its lists from seethrough_core.vocabulary (it must not import torch or bpy);
these tests hold that table to the server's, the trainer's and the renderer's own checks and
defaults, so a choice added on one side and not the other fails here, not in an artist's run.
"""

from __future__ import annotations

import argparse
import inspect
from dataclasses import replace
from pathlib import Path

import pytest

from seethrough.batch.inputs import parse_seeds
from seethrough.cli import build_parser
from seethrough_core import vocabulary


def option(command: str, flag: str, subcommand: str | None = None) -> argparse.Action:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    command_parser = sub.choices[command]
    if subcommand is not None:
        inner = next(a for a in command_parser._actions if isinstance(a, argparse._SubParsersAction))
        command_parser = inner.choices[subcommand]
    return next(a for a in command_parser._actions if flag in a.option_strings)


def test_serve_offers_the_servers_memory_modes_quantizations_and_dtypes():
    from inference_server import pipeline, placement, quantize
    from inference_server.server import ServerConfig

    memory, quantization = option("serve", "--memory"), option("serve", "--quantization")
    assert tuple(memory.choices) == placement.MEMORY_MODES
    assert tuple(quantization.choices) == placement.QUANTIZATION_CHOICES
    assert set(quantization.choices) == {"auto", "none", *quantize.QUANTIZATIONS}
    assert set(option("serve", "--dtype").choices) == set(pipeline.DTYPES)
    load = inspect.signature(pipeline.SeeThroughPipeline.from_pretrained).parameters
    for flag, name in (("--memory", "memory"), ("--quantization", "quantization"), ("--dtype", "dtype")):
        if name in load:
            assert option("serve", flag).default == load[name].default, flag
    assert option("serve", "--max-queue").default == ServerConfig().max_pending


def test_every_choice_of_serve_is_accepted_by_the_memory_planner():
    import torch

    from inference_server.model_errors import SetupError
    from inference_server.placement import plan_memory

    for memory in option("serve", "--memory").choices:
        for quantization in option("serve", "--quantization").choices:
            try:
                plan_memory(memory, quantization, torch.device("cpu"))
            except SetupError as exc:  # a combination refused for its reason, never as an unknown name
                assert "must be one of" not in str(exc), (memory, quantization, exc)


def test_train_offers_the_trainers_losses_and_memory_modes():
    from inference_server.model_errors import TrainingError
    from inference_server.training.config import TrainingConfig, check_config

    fields = TrainingConfig.__dataclass_fields__
    loss, memory = option("train", "--loss"), option("train", "--memory")
    assert loss.default == fields["loss"].default and memory.default == fields["memory"].default
    base = TrainingConfig(data=(Path("data"),), out=Path("run"), tiny=True)
    for name, action in (("loss", loss), ("memory", memory)):
        for choice in action.choices:
            check_config(replace(base, **{name: choice}))
        with pytest.raises(TrainingError, match=f"--{name} must be one of"):
            check_config(replace(base, **{name: "no-such-choice"}))


@pytest.mark.parametrize(
    ("command", "subcommand"), [("render", None), ("batch", None), ("edit", None), ("dataset", "make")]
)
def test_every_rendering_command_offers_the_renderers_engines(command, subcommand):
    engine = option(command, "--engine", subcommand)
    assert tuple(engine.choices) == vocabulary.RENDER_ENGINES
    assert engine.default == vocabulary.DEFAULT_RENDER_ENGINE


def test_client_defaults_are_the_shared_ones():
    from inference_server.training.validation import VALIDATION_SEED

    assert parse_seeds(None, None) == [vocabulary.DEFAULT_SEED] == [VALIDATION_SEED]
    for command, subcommand in (("batch", None), ("edit", None), ("lora", "show"), ("lora", "set")):
        for flag in ("--server", "--timeout", "--server-public-key", "--client-key"):
            option(command, flag, subcommand)  # every command that talks to a server takes the group
        assert option(command, "--timeout", subcommand).default == vocabulary.DEFAULT_CLIENT_TIMEOUT_S
