"""The ``esper`` command: train a host while a controller grows seeds, compare runs, export.

Every command is added to its group in one place, at the end of this module; the command
modules (``esper.cli.rl``: the learned controller) know nothing of the groups. Nothing here
imports torch until a command runs, so ``--help`` is instant.
"""

from __future__ import annotations

import errno
import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import click

from esper import __version__
from esper.cli.options import RESUME_OVERRIDES, build_config, common_run_options, shared_option_names
from esper.cli.rl import eval_command, train_policy, train_ppo_command
from esper.cli.runs import run_train
from esper.data import task_descriptions
from esper.errors import EsperError, did_you_mean

__all__ = ["RESUME_OVERRIDES", "build_config", "cli", "common_run_options", "main", "train"]

EXIT_USAGE = 2
"""Exit code for bad input (click's own usage errors use it too)."""


class UserError(click.ClickException):
    """Bad input from the user: printed as ``Error: <message>``, exit code 2, no traceback."""

    exit_code = EXIT_USAGE


class EsperGroup(click.Group):
    """A command group that turns ``EsperError`` into a clean message and lists its commands
    when given an unknown one."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except EsperError as exc:
            raise UserError(str(exc)) from None
        except OSError as exc:
            fix = _DISK_ERRORS.get(exc.errno or 0)
            if fix is None:
                raise
            where = f" {exc.filename!r}" if exc.filename else ""
            raise UserError(f"cannot write{where}: {exc.strerror}; {fix}") from None

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        if name and not name.startswith("-") and self.get_command(ctx, name) is None:
            known = self.list_commands(ctx)
            ctx.fail(
                f"{ctx.command_path} has no command {name!r}; choose one of: {', '.join(known)}."
                + did_you_mean(name, known)
            )
        return super().resolve_command(ctx, args)


_DISK_ERRORS = {
    errno.ENOSPC: "free some space, or choose --out on another disk",
    errno.EDQUOT: "free some space, or choose --out on another disk",
    errno.EROFS: "choose a writable --out",
    errno.EACCES: "choose a folder you may write to (or fix its permissions)",
    errno.EPERM: "choose a folder you may write to (or fix its permissions)",
}
"""Errors of the disk rather than of Esper, and what to do about each."""


# ----------------------------------------------------------------------------- commands
@click.group(cls=EsperGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "-V", "--version", prog_name="esper", message="%(prog)s %(version)s")
def cli() -> None:
    """Esper: morphogenetic training for PyTorch.

    A host network trains while a controller grows "seed" modules into its slots: each seed
    germinates, trains behind the host, blends in, and is then fossilized (kept) or pruned.

    \b
    Examples:
      esper train heuristic                      # grow seeds on the default task (digits)
      esper train static --task digits-impaired  # the same host and budget, no seeds
      esper report runs/*                        # compare runs: table + comparison.png
      esper export runs/<run>                    # the grown model as a torch.export file
    """


_TRAIN_HELP = """Train a host on a task while a controller grows seeds into it.

Each run writes config.json, events.jsonl, metrics.csv, checkpoint.pt (every epoch),
summary.json and report.png into its run directory (--out).

\b
Examples:
  esper train heuristic
  esper train heuristic --task digits-impaired --epochs 20 --seed 1
  esper train static --task cifar10 --data-dir ~/data --device cuda
  esper train heuristic --config run.toml --epochs 10
  esper train heuristic --resume runs/20250101-120000-digits-heuristic --epochs 40
"""


def _train_help() -> str:
    tasks = [f"  {name}: {text}" for name, text in task_descriptions().items()]
    options = textwrap.wrap(", ".join(shared_option_names()), 76, break_on_hyphens=False)
    return (
        _TRAIN_HELP
        + "\n\b\nOptions every train command shares (see 'esper train heuristic --help'):\n  "
        + "\n  ".join(options)
        + "\n\n\b\nTasks (--task):\n"
        + "\n".join(tasks)
        + "\n"
    )


@click.group(cls=EsperGroup, help=_train_help())
def train() -> None:
    pass


@click.command("heuristic")
@common_run_options
def train_heuristic(**params: Any) -> None:
    """Grow seeds with the rule-based controller.

    It germinates a seed when validation accuracy plateaus and a slot is free (rotating
    blueprints, avoiding ones that were pruned), advances seeds through their gates,
    fossilizes contributors and prunes seeds that hurt or stall.
    """
    run_train(params, "heuristic")


@click.command("static")
@common_run_options
def train_static(**params: Any) -> None:
    """The host alone, no seeds (the baseline).

    The same host, task and budget as the growing controllers: the run every result is
    compared with.
    """
    run_train(params, "static")


@click.command("random")
@common_run_options
def train_random(**params: Any) -> None:
    """Random legal lifecycle actions (a sanity baseline).

    Every epoch it picks uniformly among the actions that make sense for the slots (seeded
    by --seed).
    """
    run_train(params, "random")


def _expand_run_dirs(paths: Sequence[str]) -> list[str]:
    """Each path as is, except a folder with no summary.json whose subfolders have one."""
    runs: list[str] = []
    for path in paths:
        folder = Path(path)
        inner = sorted(str(d) for d in folder.glob("*/") if (d / "summary.json").is_file())
        runs += inner if inner and not (folder / "summary.json").exists() else [path]
    return runs


def _beside_the_runs(runs: Sequence[str]) -> Path:
    """``comparison.png`` in the folder that holds every run (their deepest common parent)."""
    parents = [str(Path(run).absolute().parent) for run in runs]
    return Path(os.path.commonpath(parents)) / "comparison.png"


@click.command()
@click.argument("run_dirs", nargs=-1, required=True, type=click.Path(file_okay=False), metavar="RUN_DIR...")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PATH",
    help="Where to write the plot of every run's validation accuracy and parameters per epoch "
    "(default: comparison.png in the folder that holds the runs).",
)
@click.option(
    "--target-accuracy",
    type=click.FloatRange(0, 1),
    default=None,
    help="Accuracy for 'FLOPs to reach' (default: the final accuracy of static-large, the "
    "smallest static run at least as big as the grown runs).",
)
def report(run_dirs: tuple[str, ...], out: str | None, target_accuracy: float | None) -> None:
    """Compare runs: a summary table and plots.

    Prints one row per finished run (accuracy, final parameters, seeds, wall time, FLOPs) and
    plots every run's validation accuracy and parameters per epoch into --out. A directory that holds run
    directories (such as the --out of 'esper eval') stands for all of them. With static runs
    among them, it also prints each controller's parameters next to its accuracy, the static
    accuracy interpolated at the grown size (static-matched) and the training FLOPs to reach
    --target-accuracy, and plots accuracy against parameters and FLOPs into
    params_vs_accuracy.png beside --out.

    \b
    Examples:
      esper report runs/*-digits-impaired-static runs/*-digits-impaired-heuristic
      esper report evals/policy evals/random
    """
    from esper.karn.compare import compare_runs, format_comparison_table, write_comparison_plot

    runs = _expand_run_dirs(run_dirs)
    rows = compare_runs(runs)
    click.echo(format_comparison_table(rows), nl=False)
    path = write_comparison_plot(runs, out if out is not None else _beside_the_runs(runs))
    click.echo(f"comparison plot: {path}")
    if any(row["controller"] == "static" for row in rows):
        from esper.karn.tradeoff import compare_growth, format_growth_table, write_params_plot

        groups, comparisons = compare_growth(runs, target_accuracy)
        click.echo(format_growth_table(groups, comparisons), nl=False)
        plot = write_params_plot(groups, comparisons, Path(path).with_name("params_vs_accuracy.png"))
        click.echo(f"params vs accuracy plot: {plot}")


@click.command()
@click.argument("run_dir", type=click.Path(), metavar="RUN_DIR")
@click.option(
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Where to write the program (default: RUN_DIR/model.pt2); FILE's .json gets the metadata. "
    "Neither may replace a file other than an earlier export.",
)
def export(run_dir: str, out: str | None) -> None:
    """Export the grown model as a plain torch.export program.

    The run's final model is written with the seeds that shape its output baked in
    (fossilized ones, and blending/holding ones at their alpha). The program loads and
    predicts with torch alone: torch.export.load("model.pt2").module()(x). model.json beside
    it records the input shape, dtype and normalisation and the number of classes.

    \b
    Example:
      esper export runs/20250101-120000-digits-heuristic --out digits.pt2
    """
    import json

    from esper.tolaria.export import export_grown

    path = export_grown(run_dir, out)
    meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
    seeds = ", ".join(f"{s['slot']}:{s['blueprint']} ({s['stage']})" for s in meta["seeds"]) or "none"
    click.echo(
        f"exported {path} ({meta['params']} parameters; seeds: {seeds})\n"
        f"  input {meta['input_dtype']} {meta['input_shape']} -> logits {meta['output_shape']}\n"
        f"  metadata {path.with_suffix('.json')}"
    )


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The ``esper`` console script."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="esper")
    raise SystemExit(0)  # cli.main exits itself in standalone mode; this is for type checkers


@click.command("learned")
@common_run_options
def train_learned(**params: Any) -> None:
    """Grow seeds with the pretrained policy shipped with Esper.

    No PPO training needed.

    Which tasks and budgets it was trained for, and the command that retrains it, are in
    docs/results.md; a run whose slots or blueprints differ from its layout is refused.
    """
    run_train(params, "learned")


# ----------------------------------------------------------------------------- every command, here
cli.add_command(train)
for _command in (train_heuristic, train_static, train_random, train_learned, train_policy, train_ppo_command):
    train.add_command(_command)
for _command in (eval_command, report, export):
    cli.add_command(_command)

if __name__ == "__main__":
    main()
