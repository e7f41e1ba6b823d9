"""The run's log of loss and learning rate per optimizer step: ``RUN/log.csv``, and TensorBoard if asked."""

from __future__ import annotations

import csv
from pathlib import Path

from ..model_errors import TrainingError

LOG_FILE = "log.csv"
COLUMNS = ("step", "loss", "lr", "seconds")


class RunLog:
    """Appends one row per step; on resume, drops the rows after the checkpoint it continues from."""

    def __init__(self, run: Path, start_step: int, tensorboard: bool = False) -> None:
        self.path = Path(run) / LOG_FILE
        rows = read_log(self.path) if self.path.is_file() else []
        kept = [row for row in rows if int(row["step"]) <= start_step]
        with open(self.path, "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(kept)
        self.writer = _tensorboard_writer(Path(run) / "tensorboard") if tensorboard else None

    def add(self, step: int, loss: float, lr: float, seconds: float) -> None:
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerow([step, f"{loss:.8g}", f"{lr:.8g}", f"{seconds:.4f}"])
        if self.writer is not None:
            self.writer.add_scalar("loss", loss, step)
            self.writer.add_scalar("lr", lr, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_log(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise TrainingError(
            "--tensorboard needs the 'tensorboard' package: pip install 'seethrough[train]' "
            "(the CSV log RUN/log.csv is always written)"
        ) from None
    return SummaryWriter(str(folder))
