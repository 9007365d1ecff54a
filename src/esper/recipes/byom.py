"""Bring your own model: a run over the user's ``nn.Module`` and data (``--model`` / ``--data``).

It mirrors :func:`esper.tolaria.build.engine_for_task`: the model factory builds the host
(seeded by ``config.seed``), ``esper.inject_slots`` puts slots after ``target_modules``, the
data factory gives ``(train, val)`` batch iterables, and the engine trains them. Everything is
built and checked (the first validation batch runs through the model and the loss) before
the recipe creates the run directory, so bad input leaves nothing behind.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from esper.kasmina.gates import QualityGates
from esper.kasmina.inject import inject_slots
from esper.kasmina.model import MorphogeneticModel
from esper.nissa.telemetry import Telemetry
from esper.tolaria.amp import resolve_device
from esper.tolaria.build import engine_settings, seed_everything
from esper.tolaria.config import RunConfig
from esper.tolaria.data import BatchError, unpack_batch
from esper.tolaria.engine import Engine
from esper.tolaria.export import InputSpec
from esper.tolaria.trainer import cross_entropy_loss
from esper.tolaria.user_code import FactoryError, call_model_factory, load_factory, normalize_factory_path

__all__ = [
    "DEFAULT_EPOCHS",
    "DEFAULT_LR",
    "UserRun",
    "absolute_factory_paths",
    "engine_for_user_run",
    "prepare_user_run",
    "run_label",
]

DEFAULT_EPOCHS = 10
DEFAULT_LR = 1e-3


@dataclass(frozen=True)
class UserRun:
    """A user's model with its slots, their data, and the input spec export needs."""

    name: str
    model: MorphogeneticModel
    train: Iterable[Any]
    val: Iterable[Any]
    spec: InputSpec


def run_label(model_path: str) -> str:
    """A short name for a ``MODULE:FACTORY`` model (``resnet.make_net``), for run folders."""
    module, _, factory = model_path.rpartition(":")
    stem = Path(module).stem if module.endswith(".py") else module.rpartition(".")[2]
    return f"{stem}.{factory}"


def absolute_factory_paths(config: RunConfig) -> RunConfig:
    """``config`` with ``.py`` factory files as absolute paths (a run rebuilds from anywhere)."""
    if config.model is None or config.data is None:
        return config
    return config.replace(
        model=normalize_factory_path(config.model), data=normalize_factory_path(config.data)
    )


def prepare_user_run(config: RunConfig) -> UserRun:
    """Build and check the user's model and data for ``config`` (no I/O, no run directory).

    Raises:
        FactoryError: a factory that does not import or returns the wrong type.
        BatchError: validation batches that do not fit the model (or its loss).
        InjectionError: target modules that match nothing usable.
    """
    assert config.model is not None and config.data is not None and config.target_modules
    seed_everything(config.seed)  # the model's initial weights, and every later draw
    host = call_model_factory(config.model)
    train, val = _call_data_factory(config.data)
    inputs, targets = _first_batch(val, config.data)
    outputs = _check_fits(host, inputs, targets, config)
    example = _example(config, inputs)
    gates = QualityGates(
        min_training_epochs=config.min_training_epochs,
        min_holding_epochs=config.min_holding_epochs,
        embargo_epochs=config.embargo_epochs,
    )
    targets_spec = config.target_modules[0] if len(config.target_modules) == 1 else config.target_modules
    model = inject_slots(host, targets_spec, example_input=example, gates=gates)
    name = run_label(config.model)
    spec = InputSpec(
        tuple(example.shape[1:]), str(example.dtype).removeprefix("torch."), outputs.shape[-1], name
    )
    return UserRun(name, model, train, val, spec)


def engine_for_user_run(config: RunConfig, run: UserRun, telemetry: Telemetry | None = None) -> Engine:
    """The engine training ``run``'s model on its data (defaults: AdamW, cross-entropy, accuracy)."""
    device = resolve_device(config.device)
    return Engine(
        run.model,
        run.train,
        run.val,
        engine_settings(config, DEFAULT_EPOCHS, DEFAULT_LR, run.spec.num_classes, device),
        telemetry=telemetry,
        device=device,
    )


def _call_data_factory(spec: str) -> tuple[Iterable[Any], Iterable[Any]]:
    factory = load_factory(spec, "--data")
    try:
        data = factory()
    except Exception as exc:
        raise FactoryError(f"--data {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not (isinstance(data, tuple | list) and len(data) == 2):
        what = f"a {type(data).__name__}" + (
            f" of length {len(data)}" if isinstance(data, tuple | list) else ""
        )
        raise FactoryError(
            f"--data {spec!r} returned {what}; expected (train, val), two iterables of "
            "(inputs, targets) batches such as DataLoaders"
        )
    for part, name in zip(data, ("train", "val"), strict=True):
        if not isinstance(part, Iterable):
            raise FactoryError(
                f"--data {spec!r}: its {name} data is a {type(part).__name__}, not an iterable of batches"
            )
    return data[0], data[1]


def _first_batch(val: Iterable[Any], spec: str) -> tuple[Tensor, Tensor]:
    """The first validation batch (validation data is read in order: this draws no randomness)."""
    batch = next(iter(val), None)
    if batch is None:
        raise BatchError(f"--data {spec!r}: the validation data yields no batches")
    try:
        inputs, targets = unpack_batch(batch)
    except BatchError as exc:
        raise BatchError(f"--data {spec!r}: {exc}") from None
    if not isinstance(inputs, Tensor):
        raise BatchError(
            f"--data {spec!r}: batch inputs are a {type(inputs).__name__}; the CLI needs a tensor "
            "(for several inputs, use esper.Grower from your own loop)"
        )
    return inputs, targets


def _describe(t: Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')} {tuple(t.shape)}"


def _check_fits(host: nn.Module, inputs: Tensor, targets: Tensor, config: RunConfig) -> Tensor:
    """Run one batch through the model and the loss; returns the output (no trace left)."""
    modes = [(m, m.training) for m in host.modules()]
    outputs: Any = None
    try:
        with torch.no_grad(), torch.random.fork_rng():
            host.eval()  # BatchNorm statistics stay as they are
            outputs = host(inputs)
            if not isinstance(outputs, Tensor):
                raise TypeError(f"the model returned a {type(outputs).__name__}, not a logits tensor")
            cross_entropy_loss(outputs, targets)
            return outputs
    except Exception as exc:
        got = f" (output {_describe(outputs)})" if isinstance(outputs, Tensor) else ""
        raise BatchError(
            f"the first validation batch of --data {config.data!r} (inputs {_describe(inputs)}, targets "
            f"{_describe(targets)}) does not fit --model {config.model!r}{got}"
            f": {type(exc).__name__}: {exc}. Expected inputs its forward takes and integer class "
            "targets for cross-entropy on its logits: (B, C) with (B,), or (B, T, C) with (B, T)"
        ) from exc
    finally:
        for module, training in modes:
            module.training = training


def _example(config: RunConfig, inputs: Tensor) -> Tensor:
    """The injection's example input: ``example_input_shape`` zeros, else two rows of the batch."""
    if config.example_input_shape is None:
        return inputs[:2]
    return torch.zeros((2, *config.example_input_shape), dtype=getattr(torch, config.example_input_dtype))
