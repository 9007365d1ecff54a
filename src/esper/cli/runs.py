"""Running a training command: its config and controller, the run, and the printed summary."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from esper.cli.options import build_config
from esper.errors import plural

__all__ = ["print_summary", "run_train"]


def run_train(params: Mapping[str, Any], controller: str, *, policy: str | None = None) -> None:
    """Build the config and controller, train, and print the summary.

    Args:
        params: the command's parameters (see :func:`~esper.cli.options.build_config`).
        controller: the registered controller name.
        policy: the policy.pt of controller ``"policy"``.
    """
    from esper.recipes.train import default_run_dir, run_training
    from esper.tamiyo.factory import make_controller

    if policy is None:
        config = build_config(params, controller=controller)
    else:  # RunConfig takes controller "policy" only together with its policy path
        config = build_config(params).replace(controller=controller, policy=policy)
    resume = params.get("resume") is not None
    if config.out is None:
        config = config.replace(out=str(default_run_dir(config)))
    run_dir = Path(str(config.out))
    again = f"esper train {config.controller}" + (f" --policy {config.policy}" if config.policy else "")
    with _interrupt_hint(run_dir, again):  # RunDir removes a folder a refused run created
        summary = run_training(config, make_controller(config), resume=resume)
    print_summary(summary, run_dir)


@contextlib.contextmanager
def _interrupt_hint(run_dir: Path, command: str) -> Iterator[None]:
    """On Ctrl-C, say how to continue from the last checkpoint (with ``command --resume``)."""
    try:
        yield
    except KeyboardInterrupt:
        click.echo(
            f"\ninterrupted; the last finished epoch is checkpointed in {run_dir}. Continue with:\n"
            f"  {command} --resume {run_dir}",
            err=True,
        )
        sys.exit(130)


def print_summary(summary: Mapping[str, Any], run_dir: Path) -> None:
    """The run's summary in five lines."""
    from esper.karn.console import format_count

    def acc(key: str) -> str:
        value = summary.get(key)
        return f"{value:.4f}" if isinstance(value, float) else "-"

    lines = [
        f"{summary['task']} / {summary['controller']}: {plural(summary['epochs'], 'epoch')} "
        f"in {summary['wall_time_s']:.1f}s on {summary.get('device', '?')}",
        f"  val accuracy  final {acc('final_val_accuracy')}  best {acc('best_val_accuracy')}",
        f"  parameters    host {format_count(summary['host_params'])}  "
        f"seeds {format_count(summary['seed_params'])}",
        f"  seeds         germinated {summary['seeds_germinated']}  "
        f"fossilized {summary['seeds_fossilized']}  pruned {summary['seeds_pruned']}  "
        f"rollbacks {summary.get('rollbacks', 0)}",
        f"  run dir       {run_dir}  (report.png, summary.json, events.jsonl, checkpoint.pt)",
    ]
    click.echo("\n".join(lines))
