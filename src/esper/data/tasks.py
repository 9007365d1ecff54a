"""The task registry: every task by name, with the host sized for it and its training defaults."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from esper.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from esper.data.base import Task

# The builders import their data modules (and so torch) when called: names, descriptions and
# defaults are read by `esper --help`, which must start without torch.

DEFAULT_TASK = "digits"


@dataclass(frozen=True)
class _Entry:
    name: str
    description: str
    defaults: dict[str, Any]  # the get_task options this task takes, with their defaults
    build: _Builder


_Builder = Callable[[_Entry, dict[str, Any]], "Task"]
_ENTRIES: dict[str, _Entry] = {}


def _register(name: str, description: str, **defaults: Any) -> Callable[[_Builder], _Builder]:
    """Register the decorated builder under `name`; `defaults` are the options it takes."""

    def add(build: _Builder) -> _Builder:
        assert name not in _ENTRIES, f"task {name!r} registered twice"
        _ENTRIES[name] = _Entry(name, description, defaults, build)
        return build

    return add


def _image_task(
    entry: _Entry,
    options: dict[str, Any],
    splits: tuple[Any, Any],
    *,
    host_kwargs: dict[str, Any],
    input_shape: tuple[int, ...],
    num_classes: int,
    epochs: int,
    lr: float,
    normalization: dict[str, Any],
) -> Task:
    """A classification task with a CNNHost (the shape every image task shares)."""
    from esper.data.base import Task

    train, val = splits
    return Task(
        name=entry.name,
        description=entry.description,
        topology="cnn",
        host_factory="CNNHost",
        host_kwargs=host_kwargs,
        train=train,
        val=val,
        input_shape=input_shape,
        num_classes=num_classes,
        batch_size=options["batch_size"],
        default_epochs=epochs,
        default_lr=lr,
        options=options,
        normalization=normalization,
    )


def _digits_task(entry: _Entry, options: dict[str, Any], base_channels: int, epochs: int) -> Task:
    from esper.data import digits

    host_kwargs = {
        "num_classes": digits.NUM_CLASSES,
        "n_blocks": 2,
        "base_channels": base_channels,
        "in_channels": 1,
        "pool_layers": 2,  # 8x8 inputs allow two 2x2 pools (8 -> 4 -> 2)
    }
    return _image_task(
        entry,
        options,
        digits.load_digits_splits(),
        host_kwargs=host_kwargs,
        input_shape=digits.INPUT_SHAPE,
        num_classes=digits.NUM_CLASSES,
        epochs=epochs,
        lr=3e-3,
        normalization=digits.normalization(),
    )


@_register(
    "digits",
    "8x8 handwritten digits, shipped with Esper (no download), with a modest CNN (8-16 channels)",
    batch_size=64,
)
def _build_digits(entry: _Entry, options: dict[str, Any]) -> Task:
    return _digits_task(entry, options, base_channels=8, epochs=30)


@_register(
    "digits-impaired",
    "the same digits with an undersized CNN (2-4 channels) that growth has to rescue",
    batch_size=64,
)
def _build_digits_impaired(entry: _Entry, options: dict[str, Any]) -> Task:
    # The undersized host needs ~40 epochs to plateau; growth needs room after that.
    return _digits_task(entry, options, base_channels=2, epochs=60)


@_register(
    "cifar10",
    "CIFAR-10 from a local folder (data_dir), with crop and flip augmentation",
    data_dir=None,
    batch_size=128,
)
def _build_cifar10(entry: _Entry, options: dict[str, Any]) -> Task:
    from esper.data import cifar

    if options["data_dir"] is None:
        raise ConfigError(
            "task 'cifar10' needs data_dir, the folder holding 'cifar-10-batches-py' (or that "
            f"folder itself). Download the CIFAR-10 python version, {cifar.ARCHIVE_NAME}, from "
            f"{cifar.ARCHIVE_URL}, extract it (tar -xzf {cifar.ARCHIVE_NAME} -C DIR) and pass "
            "data_dir=DIR."
        )
    splits = cifar.load_cifar_splits(cifar.find_cifar_folder(options["data_dir"]))
    host_kwargs = {
        "num_classes": cifar.NUM_CLASSES,
        "n_blocks": 3,
        "base_channels": 32,
        "in_channels": 3,
        "pool_layers": 3,  # 32 -> 16 -> 8 -> 4
    }
    return _image_task(
        entry,
        options,
        splits,
        host_kwargs=host_kwargs,
        input_shape=cifar.INPUT_SHAPE,
        num_classes=cifar.NUM_CLASSES,
        epochs=25,
        lr=2e-3,
        normalization={"divide_by": 255.0, "mean": list(cifar.MEAN), "std": list(cifar.STD)},
    )


@_register(
    "charlm",
    "character-level language model on CPython's pydoc topics (built in) or a text_file",
    text_file=None,
    batch_size=32,
    block_size=64,
)
def _build_charlm(entry: _Entry, options: dict[str, Any]) -> Task:
    from esper.data import charlm
    from esper.data.base import Task

    block_size = options["block_size"]
    if options["text_file"] is None:
        text, source = charlm.builtin_corpus(), "the built-in corpus (pydoc topics)"
    else:
        text, source = charlm.read_text_file(options["text_file"]), repr(options["text_file"])
    vocab, train, val = charlm.char_splits(text, block_size, source)
    host_kwargs = {
        "vocab_size": len(vocab),
        "n_embd": 64,
        "n_head": 4,
        "n_layer": 2,
        "block_size": block_size,
        "dropout": 0.0,
    }
    return Task(
        name=entry.name,
        description=entry.description,
        topology="transformer",
        host_factory="TransformerHost",
        host_kwargs=host_kwargs,
        train=train,
        val=val,
        input_shape=(block_size,),
        num_classes=len(vocab),
        batch_size=options["batch_size"],
        default_epochs=20,
        default_lr=3e-3,
        options=options,
        vocab=vocab,
    )


def list_tasks() -> list[str]:
    """The registered task names, sorted."""
    return sorted(_ENTRIES)


def task_descriptions() -> dict[str, str]:
    """Task name -> one-line description, without loading any data."""
    return {name: _ENTRIES[name].description for name in list_tasks()}


def _positive_int(option: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{option}={value!r} is invalid: expected a positive integer.")
    return value


def _resolve_options(name: str, entry: _Entry, given: dict[str, Any]) -> dict[str, Any]:
    """The task's full options as primitives: given values checked, the rest from defaults."""
    stray = [key for key, value in given.items() if value is not None and key not in entry.defaults]
    if stray:
        raise ConfigError(
            f"task {name!r} does not take {', '.join(stray)}; it takes "
            f"{', '.join(entry.defaults)}. Drop {', '.join(stray)} or pick another task."
        )
    options = dict(entry.defaults)
    for key in entry.defaults:
        value = given[key]
        if value is None:
            continue
        if key in ("batch_size", "block_size"):
            options[key] = _positive_int(key, value)
        else:  # a path, made absolute so a checkpoint's options work from any directory
            options[key] = str(Path(value).expanduser().resolve())
    return options


def get_task(
    name: str = DEFAULT_TASK,
    *,
    data_dir: str | Path | None = None,
    text_file: str | Path | None = None,
    batch_size: int | None = None,
    block_size: int | None = None,
    host_channels: int | None = None,
) -> Task:
    """Build the task `name` (see `list_tasks()`); None for an option means its default.

    ``host_channels`` sets the host's width (CNN base channels, transformer embedding width).

    Raises:
        ConfigError: an unknown name, an option the task does not take, or a bad value.
        DatasetError: a dataset that must be provided by hand is missing.
    """
    if name not in _ENTRIES:
        raise ConfigError(
            f"unknown task {name!r}; the tasks are {', '.join(list_tasks())}."
            + did_you_mean(name, list_tasks())
        )
    entry = _ENTRIES[name]
    given = {
        "data_dir": data_dir,
        "text_file": text_file,
        "batch_size": batch_size,
        "block_size": block_size,
    }
    task = entry.build(entry, _resolve_options(name, entry, given))
    if host_channels is None:
        return task
    return task.with_host_channels(_positive_int("host_channels", host_channels))
