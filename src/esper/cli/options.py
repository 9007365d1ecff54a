"""The options every ``esper train ...`` command shares, and how they become a ``RunConfig``."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click

from esper.data import DEFAULT_TASK, list_tasks
from esper.errors import ConfigError, did_you_mean
from esper.tolaria.config import AMP_MODES, INPUT_DTYPES, SEED_LIMIT, RunConfig, load_config_file

__all__ = ["RESUME_OVERRIDES", "build_config", "common_run_options", "shared_option_names"]

F = TypeVar("F", bound=Callable[..., Any])

_CLI_FIELDS: dict[str, str] = {
    "task": "task",
    "epochs": "epochs",
    "seed": "seed",
    "out": "out",
    "device": "device",
    "amp": "amp",
    "compile": "compile",
    "data_dir": "data_dir",
    "text_file": "text_file",
    "lr": "lr",
    "batch_size": "batch_size",
    "max_seed_params": "max_seed_params",
    "host_channels": "host_channels",
    "tensorboard": "tensorboard",
    "quiet": "quiet",
    "model": "model",
    "data": "data",
    "target_modules": "target_modules",
    "example_input_shape": "example_input_shape",
    "example_input_dtype": "example_input_dtype",
}
"""Click parameter name -> ``RunConfig`` field, for the options of :func:`common_run_options`."""

RESUME_OVERRIDES: tuple[str, ...] = (
    "epochs",
    "device",
    "compile",
    "data_dir",
    "text_file",
    "tensorboard",
    "quiet",
)
"""Settings that ``--resume`` may change; the rest are the run's own and stay as saved."""


# ----------------------------------------------------------------------------- the run options
def _what_options() -> list[Callable[[F], F]]:
    """Options that say what the run is: task and data, length, seed, where it goes and came from."""
    tasks = list_tasks()
    return [
        click.option(
            "--task",
            type=click.Choice(tasks),
            default=None,
            help=f"What to train on (default: {DEFAULT_TASK}). See 'esper train --help' for the list.",
        ),
        click.option(
            "--epochs",
            type=click.IntRange(min=1),
            default=None,
            help="Host epochs to train (default: the task's). With --resume: the new total.",
        ),
        click.option(
            "--seed",
            type=click.IntRange(0, SEED_LIMIT - 1),
            default=None,
            help="Random seed (default 0). The same seed on the same machine gives the same metrics.",
        ),
        click.option(
            "--out",
            type=click.Path(file_okay=False),
            default=None,
            metavar="DIR",
            help="Run directory (default: runs/<timestamp>-<task>-<controller>).",
        ),
        click.option(
            "--resume",
            type=click.Path(file_okay=False),
            default=None,
            metavar="RUN_DIR",
            help="Continue the run in RUN_DIR from its last checkpoint, with its saved settings "
            f"(only --{', --'.join(o.replace('_', '-') for o in RESUME_OVERRIDES)} may change).",
        ),
        click.option(
            "--config",
            "config_file",
            type=click.Path(dir_okay=False),
            default=None,
            metavar="FILE",
            help="Settings from a JSON or TOML file (RunConfig keys); command-line flags override it.",
        ),
        click.option(
            "--data-dir",
            type=click.Path(file_okay=False),
            default=None,
            metavar="DIR",
            help="Folder holding the dataset, for tasks read from disk (cifar10: cifar-10-batches-py).",
        ),
        click.option(
            "--text-file",
            type=click.Path(dir_okay=False),
            default=None,
            metavar="FILE",
            help="UTF-8 text to train charlm on (default: CPython's built-in pydoc topics).",
        ),
    ]


def _split_names(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[str] | None:
    """``--target-modules a,b --target-modules c`` -> ``["a", "b", "c"]`` (None when not given)."""
    names = [n.strip() for v in value for n in v.split(",") if n.strip()]
    return names or None


def _parse_shape(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    """``"1,8,8"`` -> ``[1, 8, 8]``."""
    if value is None:
        return None
    try:
        shape = [int(d) for d in value.split(",")]
    except ValueError:
        raise click.BadParameter(f"expected sizes separated by commas, e.g. 1,8,8; got {value!r}") from None
    if any(d < 1 for d in shape):
        raise click.BadParameter(f"every size must be >= 1, got {value!r}")
    return shape


def _model_options() -> list[Callable[[F], F]]:
    """Options that grow the user's own model on their own data instead of a task."""
    return [
        click.option(
            "--model",
            default=None,
            metavar="MODULE:FACTORY",
            help="Grow your own model instead of a task's host: FACTORY() in MODULE (an importable "
            "module or a .py file) returns an nn.Module. Needs --data and --target-modules.",
        ),
        click.option(
            "--data",
            default=None,
            metavar="MODULE:FACTORY",
            help="With --model: FACTORY() returns (train, val), each an iterable of (inputs, targets) "
            "batches (e.g. DataLoaders).",
        ),
        click.option(
            "--target-modules",
            multiple=True,
            callback=_split_names,
            metavar="PATTERN",
            help="With --model: where slots go. One value is a regular expression over whole module "
            "names ('layer[23]'); several (comma-separated or repeated) are names, each matching a "
            "module of that name or ending in '.NAME'.",
        ),
        click.option(
            "--example-input-shape",
            callback=_parse_shape,
            metavar="D1,D2,...",
            help="With --model: one input's shape without the batch dimension (e.g. 1,8,8), read by "
            "injection and export (default: the first validation batch's).",
        ),
        click.option(
            "--example-input-dtype",
            type=click.Choice(INPUT_DTYPES),
            default=None,
            help="The dtype of --example-input-shape's input (default float32; int64 for token ids).",
        ),
    ]


def _how_options() -> list[Callable[[F], F]]:
    """Options that say how the run trains: device, precision, optimisation, budget, output."""
    return [
        click.option(
            "--device",
            default=None,
            metavar="DEVICE",
            help="'auto' (CUDA when available, else CPU; the default), 'cpu', 'cuda' or 'cuda:N'.",
        ),
        click.option(
            "--amp",
            type=click.Choice(AMP_MODES),
            default=None,
            help="Mixed precision: 'auto' (bf16 on CUDA that supports it, none on CPU; the default), "
            "'none', 'bf16', or 'fp16' (with a gradient scaler).",
        ),
        click.option(
            "--compile/--no-compile",
            default=None,
            help="Run the model through torch.compile (default: off; the first compile takes seconds).",
        ),
        click.option(
            "--lr",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="AdamW learning rate for host and seeds (default: the task's).",
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(min=1),
            default=None,
            help="Examples per batch (default: the task's).",
        ),
        click.option(
            "--max-seed-params",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="Parameter budget for all seeds together (default: unlimited).",
        ),
        click.option(
            "--host-channels",
            type=click.IntRange(min=1),
            default=None,
            metavar="N",
            help="Width of the task's host: CNN base channels, or the transformer's embedding "
            "width (default: the task's). Trains any static width for comparisons.",
        ),
        click.option(
            "--tensorboard/--no-tensorboard",
            default=None,
            help="Also write TensorBoard scalars to RUN_DIR/tensorboard (needs the tensorboard package).",
        ),
        click.option(
            "--quiet/--no-quiet",
            "-q",
            default=None,
            help="No live progress; print only the final summary.",
        ),
    ]


def common_run_options(command: F) -> F:
    """Add the options every ``esper train ...`` command shares (see :func:`build_config`)."""
    for option in reversed([*_what_options(), *_model_options(), *_how_options()]):
        command = option(command)
    return command


def shared_option_names() -> list[str]:
    """The flags of :func:`common_run_options` as help text spells them (``--compile/--no-compile``)."""
    probe = click.command("probe")(common_run_options(lambda **params: None))
    return [
        "/".join(o for o in p.opts + p.secondary_opts if o.startswith("--"))
        for p in probe.params
        if isinstance(p, click.Option)
    ]


def build_config(params: Mapping[str, Any], *, controller: str | None = None) -> RunConfig:
    """Turn the parameters of a :func:`common_run_options` command into a validated ``RunConfig``.

    A fresh run takes the ``--config`` file (if any), then the flags given on the command line
    over it, then ``controller``. With ``--resume`` the config saved in the run's checkpoint is
    used, and only :data:`RESUME_OVERRIDES` may change. Every problem is reported at once.

    Args:
        params: the command's parameters (``click.Context.params`` or the ``**kwargs``); an
            option that was not given is None.
        controller: the controller the command trains with (None: keep the file's/saved one).

    Raises:
        ConfigError: invalid settings, a bad file, or a resume that cannot be done as asked.
        CheckpointError: ``--resume`` of a missing or corrupt checkpoint.
    """
    given = {field: params[name] for name, field in _CLI_FIELDS.items() if params.get(name) is not None}
    if params.get("resume") is not None:
        return _resume_config(Path(params["resume"]), given, params.get("config_file"), controller)
    settings: dict[str, Any] = {}
    source = "the command line"
    if params.get("config_file") is not None:
        settings = load_config_file(params["config_file"])
        source = f"config file {params['config_file']!r} and the command line"
    settings.update(given)
    if controller is not None:
        settings["controller"] = controller
    return _validated(settings, source)


def _validated(settings: dict[str, Any], source: str) -> RunConfig:
    """``RunConfig.from_mapping`` plus the checks it cannot do (task, device, tensorboard)."""
    extra = _environment_problems(settings)
    try:
        config = RunConfig.from_mapping(settings)
    except ConfigError as exc:
        problems = str(exc).split("\n  - ")[1:] or [str(exc)]
        raise ConfigError(_problem_list(source, problems + extra)) from None
    if extra:
        raise ConfigError(_problem_list(source, extra))
    return config


def _problem_list(source: str, problems: list[str]) -> str:
    return f"invalid settings from {source}:\n  - " + "\n  - ".join(problems)


def _environment_problems(settings: Mapping[str, Any]) -> list[str]:
    from esper.tolaria.amp import resolve_device

    problems = []
    if "task" in settings and "model" in settings:
        problems.append("task: --task and --model are alternatives; give one (the task's host or your model)")
    task = settings.get("task", DEFAULT_TASK)
    if isinstance(task, str) and task not in list_tasks():
        problems.append(
            f"task: unknown task {task!r}; the tasks are {', '.join(list_tasks())}."
            + did_you_mean(task, list_tasks())
        )
    device = settings.get("device", "auto")
    if isinstance(device, str):
        try:
            resolve_device(device)
        except ValueError as exc:
            problems.append(f"device: {exc}")
    if settings.get("tensorboard") is True and importlib.util.find_spec("tensorboard") is None:
        problems.append(
            "tensorboard: the tensorboard package is not installed (pip install 'esper[tensorboard]')"
        )
    return problems


def _resume_config(
    run_dir: Path, given: dict[str, Any], config_file: str | None, controller: str | None
) -> RunConfig:
    from esper.recipes.run_dir import RunDir
    from esper.recipes.train import config_from_checkpoint
    from esper.tolaria.checkpoint import load_checkpoint

    if config_file is not None:
        raise ConfigError(
            "--config cannot be combined with --resume: a resumed run keeps the settings saved "
            "in its checkpoint (drop --config)"
        )
    fixed = [k for k in given if k not in RESUME_OVERRIDES]
    if fixed:
        raise ConfigError(
            f"--resume continues {str(run_dir)!r} with its saved settings, so "
            f"{', '.join(_flag(k) for k in fixed)} cannot change; with --resume only "
            f"{', '.join(_flag(k) for k in RESUME_OVERRIDES)} may be given"
        )
    config = config_from_checkpoint(run_dir, **given, out=str(run_dir))
    if controller is not None and config.controller != controller:
        raise ConfigError(
            f"{str(run_dir)!r} was trained with the {config.controller!r} controller; resume it with "
            f"'esper train {config.controller} --resume {run_dir}'"
        )
    done = int(load_checkpoint(run_dir).get("epoch", 0))
    # A run killed after its last checkpoint but before its summary is finished by a resume.
    if config.epochs is not None and done >= config.epochs and RunDir.is_summarised(run_dir):
        raise ConfigError(
            f"{str(run_dir)!r} has already trained {done} of its {config.epochs} epochs; pass "
            f"--epochs N with N > {done} to train it further"
        )
    return config


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")
