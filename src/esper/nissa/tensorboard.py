"""TensorBoard scalars from epoch and PPO events (tensorboard is an optional dependency)."""

from __future__ import annotations

import json
import os
from numbers import Real
from typing import TYPE_CHECKING

from esper.leyline.events import EpochEnd, Event, PPOUpdate, RunStarted
from esper.nissa.scalars import Scalar, epoch_scalars, ppo_scalars

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

__all__ = ["TensorBoardSink"]


def _make_writer(logdir: str) -> SummaryWriter:
    """Import SummaryWriter only when a TensorBoard sink is asked for."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as err:
        raise ImportError(
            "TensorBoardSink needs the tensorboard package: pip install 'esper[tensorboard]'"
        ) from err
    return SummaryWriter(log_dir=logdir)


class TensorBoardSink:
    """Writes numeric scalars with slash keys: ``epoch_end`` at step ``epoch``
    (``val_accuracy``, ``seed/r0c1/alpha``, ...) and ``ppo_update`` at step ``round``
    (``ppo/approx_kl``, ...); the run config goes in as text. Other events are ignored.

    Raises:
        ImportError: tensorboard is not installed (the message says how to install it).
    """

    def __init__(self, logdir: str | os.PathLike[str]) -> None:
        self.logdir = os.fspath(logdir)
        self._writer = _make_writer(self.logdir)

    def _scalars(self, values: dict[str, Scalar], step: int) -> None:
        """Log the numeric values (strings such as a seed's stage name are skipped)."""
        for key, value in values.items():
            if isinstance(value, Real) and not isinstance(value, bool):
                self._writer.add_scalar(key, float(value), global_step=step)

    def emit(self, event: Event) -> None:
        """Record the scalars of an epoch or PPO update."""
        if isinstance(event, EpochEnd):
            values = epoch_scalars(event)
            del values["epoch"]
            self._scalars(values, event.epoch)
        elif isinstance(event, PPOUpdate):
            self._scalars(ppo_scalars(event), event.round)
        elif isinstance(event, RunStarted):
            config = json.dumps(event.config, indent=2, sort_keys=True, default=str)
            self._writer.add_text("run/config", f"```\n{config}\n```", global_step=event.epoch)

    def close(self) -> None:
        """Flush and close the event file."""
        self._writer.flush()
        self._writer.close()
