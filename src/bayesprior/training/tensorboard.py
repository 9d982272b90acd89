"""Optional TensorBoard event files of a training run: the per-epoch curves users of MONAI or Lightning expect.

    log = TensorBoardLog("tb/run0")          # refuses in one line when the tensorboard package is missing
    train(config, cases, run_dir=..., epoch_callback=log)
    log.close()

`torch.utils.tensorboard` is imported only here and only when asked for: tensorboard is an optional
dependency (``pip install tensorboard``), and importing it takes a second or more.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError

#: log.jsonl key -> TensorBoard tag
SCALARS = {"loss": "train/loss", "data": "train/data_term", "data_per_case": "train/data_per_case", "kl": "train/kl",
           "val_loss": "val/loss", "val_dsc": "val/dsc", "lr": "train/lr"}


def summary_writer_class() -> Any:
    """`torch.utils.tensorboard.SummaryWriter`. Raises `ConfigError` (one line) if tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--tensorboard needs the tensorboard package: pip install tensorboard") from None
    return SummaryWriter


class TensorBoardLog:
    """An epoch callback of `bayesprior.training.trainer.train` that writes each epoch's scalars to `log_dir`.

    Raises:
        ConfigError: the tensorboard package is not installed (one line, saying how to install it).
    """

    def __init__(self, log_dir: str | Path):
        self.log_dir = Path(log_dir)
        self._writer = summary_writer_class()(log_dir=str(self.log_dir))

    def __call__(self, epoch: int, entry: Mapping[str, Any]) -> None:
        for key, tag in SCALARS.items():
            if entry.get(key) is not None:
                self._writer.add_scalar(tag, float(entry[key]), epoch)
        self._writer.flush()  # a killed run keeps the curves of its finished epochs

    def close(self) -> None:
        self._writer.close()
