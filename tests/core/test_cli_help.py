"""`seethrough CMD --help`: every option says what it does and what it is when not given."""

from __future__ import annotations

import argparse

import pytest

from seethrough.cli import COMMANDS, build_parser
from seethrough.options import ClientOptionError, client_options


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _states_default(action: argparse.Action) -> bool:
    text = action.help or ""
    if "default" in text:
        return True
    value = action.default
    if value in (None, [], ""):
        return False
    return str(value) in text or (isinstance(value, float) and f"{value:g}" in text)


def _problems(parser: argparse.ArgumentParser) -> list[str]:
    missing = []
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        if isinstance(action, argparse._SubParsersAction):  # e.g. `seethrough keys create`
            for name, sub in action.choices.items():
                missing += [f"{name} {problem}" for problem in _problems(sub)]
            continue
        if not (action.help or "").strip():
            missing.append(f"{action.dest}: no help")
        elif (
            action.option_strings
            and action.nargs != 0
            and not action.required
            and not _states_default(action)
        ):
            missing.append(f"{action.option_strings[0]}: no default in {action.help!r}")
    return missing


@pytest.mark.parametrize("command", [c.name for c in COMMANDS])
def test_every_option_states_its_meaning_and_default(command):
    missing = _problems(_subparsers()[command])
    assert not missing, f"seethrough {command} --help: " + "; ".join(missing)


COMMAND_LINES = {
    "upscale": ["upscale", "x.png", "--to", "480x240", "--out", "o"],
    "batch": ["batch", "x.json", "--out", "o"],
}


@pytest.mark.parametrize("command", sorted(COMMAND_LINES))
@pytest.mark.parametrize(("option", "message"), [("--timeout", "more than 0"), ("--retry-for", "at least 0")])
def test_a_timeout_or_retry_out_of_range_is_refused_by_name(command, option, message):
    args = build_parser().parse_args([*COMMAND_LINES[command], option, "-1"])
    with pytest.raises(ClientOptionError, match=f"{option} must be {message}"):
        client_options(args)
