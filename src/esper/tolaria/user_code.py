"""A user's own model and data, named as ``MODULE:FACTORY``, and rebuilding an injected model.

``MODULE`` is an importable module (``mypkg.models``) or the path of a ``.py`` file
(``examples/resnet.py``); ``FACTORY`` is a callable in it, called with no arguments. A run
records these paths (a file as its absolute path), so that ``--resume``, ``esper export`` and
``esper.load_grown(run_dir)`` can build the same model again.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from esper.errors import CheckpointError, ConfigError
from esper.kasmina.gates import QualityGates
from esper.kasmina.model import MorphogeneticModel

__all__ = ["FactoryError", "call_model_factory", "load_factory", "normalize_factory_path", "reinject"]


class FactoryError(ConfigError):
    """A ``MODULE:FACTORY`` path that does not import, or a factory that returns the wrong thing."""


def normalize_factory_path(spec: str) -> str:
    """``spec`` with a ``.py`` file made absolute (so a run rebuilds it from any directory)."""
    module, sep, factory = spec.rpartition(":")
    if sep and module.endswith(".py"):
        return f"{Path(module).expanduser().resolve()}:{factory}"
    return spec


def load_factory(spec: str, option: str) -> Callable[[], Any]:
    """The callable ``spec`` (``MODULE:FACTORY``) names; ``option`` names it in errors (``--model``)."""
    module_name, sep, attr = spec.rpartition(":")
    if not sep or not module_name or not attr:
        raise FactoryError(
            f"{option} {spec!r} is not MODULE:FACTORY; expected e.g. 'mypkg.models:make_net' or "
            "'path/to/file.py:make_net'"
        )
    module = _import(module_name, spec, option)
    factory = getattr(module, attr, None)
    if factory is None:
        public = sorted(n for n, v in vars(module).items() if callable(v) and not n.startswith("_"))
        raise FactoryError(
            f"{option} {spec!r}: {module_name!r} has no attribute {attr!r}; its callables: {public}"
        )
    if not callable(factory):
        raise FactoryError(f"{option} {spec!r}: {attr!r} is a {type(factory).__name__}, not a callable")
    return factory


def _import(module_name: str, spec: str, option: str) -> ModuleType:
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise FactoryError(f"{option} {spec!r}: no file {str(path)!r}")
        # One module per file path: importing the same file twice gives the same classes.
        key = "esper_user_" + hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
        if key in sys.modules:
            return sys.modules[key]
        loader_spec = importlib.util.spec_from_file_location(key, path)
        assert loader_spec is not None and loader_spec.loader is not None
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[key] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[key]
            raise FactoryError(
                f"{option} {spec!r}: {str(path)!r} failed to import: {type(exc).__name__}: {exc}"
            ) from exc
        return module
    try:
        return importlib.import_module(module_name)
    except Exception as exc:  # user code: any error while importing it is theirs to see
        raise FactoryError(
            f"{option} {spec!r}: module {module_name!r} does not import ({type(exc).__name__}: {exc}); "
            "give an importable module or the path of a .py file"
        ) from exc


def call_model_factory(spec: str, option: str = "--model") -> nn.Module:
    """Call the model factory ``spec`` names; it must return an ``nn.Module``."""
    factory = load_factory(spec, option)
    try:
        model = factory()
    except Exception as exc:
        raise FactoryError(f"{option} {spec!r} raised {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise FactoryError(f"{option} {spec!r} returned a {type(model).__name__}; expected a torch.nn.Module")
    if isinstance(model, MorphogeneticModel):
        raise FactoryError(
            f"{option} {spec!r} returned a model that already has slots; return the plain "
            "nn.Module and give --target-modules (Esper injects the slots)"
        )
    return model


def reinject(
    model: nn.Module | None,
    model_config: Mapping[str, Any],
    run_config: Mapping[str, Any] | None,
    example: torch.Tensor | None,
    where: str,
) -> MorphogeneticModel:
    """An injected model of a checkpoint, rebuilt empty (load its ``state_dict`` next).

    Args:
        model: a freshly built instance of the user's model, or None to build it with the
            factory the run recorded (``run_config["model"]``).
        model_config: the checkpoint's ``model_config`` (what was injected where).
        run_config: the checkpoint's run config (None for checkpoints written by a user's loop).
        example: an input batch that reads the targets' layouts (None: from their types).
        where: the checkpoint, for errors.
    """
    from esper.kasmina.inject import inject_slots

    if isinstance(model, MorphogeneticModel):
        return model
    if model is None:
        spec = None if run_config is None else run_config.get("model")
        if not spec:
            raise CheckpointError(
                f"{where} holds a model injected into {model_config.get('host_class')!r} with no "
                "recorded model factory; build it afresh and pass it: esper.load_grown(path, model=MyNet())"
            )
        try:
            model = call_model_factory(str(spec), "the run's model")
        except FactoryError as exc:
            raise CheckpointError(
                f"cannot rebuild the model of {where}: {exc}. Restore that module, or build the model "
                "yourself and pass it: esper.load_grown(path, model=MyNet())"
            ) from exc
    names = [str(n) for n in model_config["target_modules"]]
    exact = "|".join(re.escape(n) for n in names)  # the same modules, not every name ending so
    return inject_slots(model, exact, example_input=example, gates=QualityGates(**model_config["gates"]))
