"""Errors of the model side: each says what is wrong and what to do about it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from seethrough_core.errors import SeeThroughError
from seethrough_core.generation_settings import SettingError

T = TypeVar("T")


class RequestError(SettingError):
    """A generation the pipeline cannot take (its arrays, or the loaded model's limits); ``field`` names
    the protocol field (e.g. ``masks``, ``descriptions[2]``). Setting rules raise the core's SettingError."""


class PromptTooLongError(RequestError):
    """The composed prompt has more T5 tokens than the model reads."""

    def __init__(self, field: str, message: str, token_count: int, limit: int) -> None:
        self.token_count = token_count
        self.limit = limit
        super().__init__(field, message)


class GenerationCancelled(SeeThroughError):  # noqa: N818 - the name is part of the pipeline contract
    """Raised by a step callback to stop a generation; the pipeline then skips the VAE decode."""


class WeightsNotFoundError(SeeThroughError, FileNotFoundError):
    """Model or LoRA weights are not on this machine (we never download them)."""


class WeightsMismatchError(SeeThroughError, ValueError):
    """Weights were found but are not the ones this pipeline needs (wrong model, wrong LoRA)."""


class LoRAFormatError(WeightsMismatchError):
    """A SeeThrough3D LoRA file that does not follow the released key layout; ``key`` is the first bad key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        super().__init__(f"{key}: {message}")


class SetupError(SeeThroughError, RuntimeError):
    """The pipeline cannot be set up as asked (device missing, unknown dtype or memory mode)."""


class SetupProblemsError(SetupError):
    """Several things keep the pipeline from loading; the message lists every one (``problems``)."""

    def __init__(self, problems: list[SeeThroughError]) -> None:
        self.problems = problems
        listed = "\n".join(f"  {number}. {problem}" for number, problem in enumerate(problems, 1))
        super().__init__(f"{len(problems)} problems, fix them all before starting again:\n{listed}")


class SetupChecks:
    """Runs every check of a set-up and keeps each failure, so all are reported at once."""

    def __init__(self) -> None:
        self.problems: list[SeeThroughError] = []

    def add(self, problem: SeeThroughError) -> None:
        self.problems.append(problem)

    def run(self, check: Callable[..., T], *args: Any) -> T | None:
        """``check(*args)``, or None when it raised a SeeThroughError (kept as a problem)."""
        try:
            return check(*args)
        except SeeThroughError as exc:
            self.problems.append(exc)
            return None

    def raise_any(self) -> None:
        """Nothing when all passed; the one problem as raised; several as SetupProblemsError."""
        if len(self.problems) == 1:
            raise self.problems[0]
        if self.problems:
            raise SetupProblemsError(self.problems)


class TrainingError(SeeThroughError):
    """Training cannot start or go on (bad option, dataset or memory); the message says what to do."""


class NonFiniteLossError(TrainingError):
    """The loss became NaN or infinite; ``step`` is the optimizer step at which it happened."""

    def __init__(self, step: int, message: str) -> None:
        self.step = step
        super().__init__(message)
