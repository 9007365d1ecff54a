"""The run configuration: one frozen dataclass, validated as a whole before training starts.

Configs flow one way: config file -> CLI flags (which override it) -> ``RunConfig`` -> the
component configs. Unknown keys and wrong types are errors, all reported at once.
"""

from __future__ import annotations

import json
import tomllib
import types
import typing
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, get_args, get_origin, get_type_hints

from esper.errors import ConfigError, did_you_mean

__all__ = ["AMP_MODES", "CONTROLLERS", "INPUT_DTYPES", "RESUMABLE", "RunConfig", "load_config_file"]

CONTROLLERS: tuple[str, ...] = ("heuristic", "static", "random", "learned", "policy")
AMP_MODES: tuple[str, ...] = ("auto", "none", "bf16", "fp16")
SEED_LIMIT = 2**63
"""Seeds are below 2**63: torch takes 64 bits, and derived seeds (seed + offsets) must fit too."""
RESUMABLE: frozenset[str] = frozenset(
    {
        "epochs",
        "out",
        "device",
        "compile",
        "compile_backend",
        "checkpoint_every",
        "data_dir",
        "text_file",
        "tensorboard",
        "quiet",
    }
)
"""The settings a resume may change: where and how fast it runs, not what it learns."""
INPUT_DTYPES: tuple[str, ...] = ("float32", "float64", "float16", "bfloat16", "int64", "int32", "uint8")
"""Torch dtype names an ``example_input_shape`` input may have (no torch import here)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines a training run (primitives only, so it goes into checkpoints).

    ``None`` means "the task's default" for ``epochs``, ``lr`` and ``batch_size``.
    """

    task: str = "digits"
    controller: str = "heuristic"
    epochs: int | None = None
    seed: int = 0
    device: str = "auto"
    amp: str = "auto"
    compile: bool = False
    compile_backend: str = "inductor"
    lr: float | None = None
    weight_decay: float = 1e-4
    batch_size: int | None = None
    grad_clip: float = 5.0
    checkpoint_every: int = 1
    out: str | None = None
    data_dir: str | None = None
    text_file: str | None = None
    tensorboard: bool = False
    quiet: bool = False
    slots: list[str] | None = None
    max_seed_params: int | None = None
    host_channels: int | None = None
    """The host's width (CNN base channels / transformer embedding width); None: the task's."""
    plateau_window: int = 3
    plateau_min_delta: float = 0.005
    germinate_after: int | None = 0
    """The heuristic germinates from this epoch on without waiting for a plateau (None: only on
    a plateau)."""
    max_in_flight: int = 2
    """The heuristic's seeds between germination and fossilization at once."""
    min_training_epochs: int = 3
    min_holding_epochs: int = 1
    embargo_epochs: int = 5
    blend_tempo_epochs: int = 5
    governor_spike_factor: float = 3.0
    governor_spike_margin: float = 0.1
    governor_window: int = 5
    blueprints: list[str] | None = None
    policy: str | None = None
    """Path to a ``policy.pt`` (controller "policy")."""
    world_size: int = 1
    """Data-parallel processes the run trains on: recorded from the launch (torchrun's
    ``WORLD_SIZE``), not chosen here. ``batch_size`` is per process."""
    model: str | None = None
    """``MODULE:FACTORY`` building the user's ``nn.Module`` (instead of ``task``'s host)."""
    data: str | None = None
    """``MODULE:FACTORY`` returning ``(train, val)`` batch iterables for ``model``."""
    target_modules: list[str] | None = None
    """Where ``model`` gets slots: one regular expression, or several module names."""
    example_input_shape: list[int] | None = None
    """One input's shape without the batch dimension (default: the first validation batch's)."""
    example_input_dtype: str = "float32"
    """The dtype of the ``example_input_shape`` input (``int64`` for token ids)."""

    def __post_init__(self) -> None:
        problems = _type_problems(self) + _value_problems(self)
        if problems:
            raise ConfigError("invalid run config:\n  - " + "\n  - ".join(problems))

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> RunConfig:
        """Build from a dict; unknown keys are reported together with every other problem."""
        known = [f.name for f in fields(cls)]
        unknown = [
            f"unknown key {k!r}." + did_you_mean(k, known) + f" Valid keys: {', '.join(known)}"
            for k in data
            if k not in known
        ]
        if unknown:
            good = {k: v for k, v in data.items() if k in known}
            try:
                cls(**good)
            except ConfigError as exc:
                unknown += str(exc).split("\n  - ")[1:]
            raise ConfigError("invalid run config:\n  - " + "\n  - ".join(unknown))
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        return RunConfig.from_mapping({**self.to_dict(), **changes})


def _type_problems(cfg: RunConfig) -> list[str]:
    hints = get_type_hints(RunConfig)
    problems = []
    for f in fields(cfg):
        value = getattr(cfg, f.name)
        if not _matches(value, hints[f.name]):
            problems.append(f"{f.name}: expected {_type_name(hints[f.name])}, got {value!r}")
    return problems


def _options(hint: Any) -> tuple[Any, ...]:
    """The members of a union type, or the type itself."""
    return get_args(hint) if get_origin(hint) in (typing.Union, types.UnionType) else (hint,)


def _matches(value: Any, hint: Any) -> bool:
    options = _options(hint)
    for option in options:
        if option is type(None) and value is None:
            return True
        if get_origin(option) is list and isinstance(value, list):
            item = get_args(option)[0]
            if all(type(v) is item for v in value):
                return True
        if option is float and isinstance(value, int | float) and not isinstance(value, bool):
            return True
        if option in (int, str, bool) and type(value) is option:
            return True
    return False


def _type_name(hint: Any) -> str:
    names = [str(a) if get_origin(a) else a.__name__.replace("NoneType", "null") for a in _options(hint)]
    return " or ".join(names)


def _value_problems(cfg: RunConfig) -> list[str]:
    p: list[str] = []
    if cfg.controller not in CONTROLLERS:
        p.append(f"controller: {cfg.controller!r} is not one of {list(CONTROLLERS)}")
    if cfg.controller == "policy" and not cfg.policy:
        p.append("policy: controller 'policy' needs the path of a policy.pt (policy=...)")
    if cfg.amp not in AMP_MODES:
        p.append(f"amp: {cfg.amp!r} is not one of {list(AMP_MODES)}")
    for name in (
        "epochs",
        "batch_size",
        "checkpoint_every",
        "plateau_window",
        "governor_window",
        "blend_tempo_epochs",
        "max_seed_params",
        "world_size",
        "host_channels",
        "max_in_flight",
    ):
        v = getattr(cfg, name)
        if isinstance(v, int) and v < 1:
            p.append(f"{name}: must be >= 1, got {v}")
    for name in ("min_training_epochs", "min_holding_epochs", "embargo_epochs", "germinate_after"):
        v = getattr(cfg, name)
        if isinstance(v, int) and v < 0:
            p.append(f"{name}: must be >= 0, got {v}")
    for name in ("lr", "weight_decay", "grad_clip", "plateau_min_delta", "governor_spike_margin"):
        v = getattr(cfg, name)
        if isinstance(v, int | float) and not (v >= 0 and v == v and v != float("inf")):
            p.append(f"{name}: must be a finite number >= 0, got {v}")
    if isinstance(cfg.lr, int | float) and cfg.lr == 0:
        p.append("lr: must be > 0")
    if isinstance(cfg.governor_spike_factor, int | float) and not cfg.governor_spike_factor > 1:
        p.append(f"governor_spike_factor: must be > 1, got {cfg.governor_spike_factor}")
    problems = _seed_problems(cfg) + _backend_problems(cfg) + _blueprint_problems(cfg)
    return p + problems + _user_model_problems(cfg)


def _seed_problems(cfg: RunConfig) -> list[str]:
    if type(cfg.seed) is int and not 0 <= cfg.seed < SEED_LIMIT:
        return [f"seed: must be in [0, 2**63), got {cfg.seed}"]
    return []


def _backend_problems(cfg: RunConfig) -> list[str]:
    """An unknown ``compile_backend`` (torch's registry; imported only for a non-default name)."""
    if not isinstance(cfg.compile_backend, str) or cfg.compile_backend == "inductor":
        return []
    import torch._dynamo

    known = torch._dynamo.list_backends(exclude_tags=())
    if cfg.compile_backend in known:
        return []
    return [
        f"compile_backend: {cfg.compile_backend!r} is not a torch.compile backend; the backends are "
        f"{', '.join(known)}." + did_you_mean(cfg.compile_backend, known)
    ]


def _blueprint_problems(cfg: RunConfig) -> list[str]:
    """Blueprint names that no topology registers (the registry is imported only when needed)."""
    if not isinstance(cfg.blueprints, list):
        return []
    from esper.kasmina.blueprints import TOPOLOGIES, BlueprintRegistry

    known = sorted({name for t in TOPOLOGIES for name in BlueprintRegistry.names(t)})
    return [
        f"blueprints: unknown blueprint {name!r}; the blueprints are {', '.join(known)}."
        + did_you_mean(name, known)
        for name in cfg.blueprints
        if name not in known
    ]


def _user_model_problems(cfg: RunConfig) -> list[str]:
    """``model``, ``data`` and ``target_modules`` come together; the task's options do not apply."""
    if cfg.model is None and cfg.data is None:
        extra = [n for n in ("target_modules", "example_input_shape") if getattr(cfg, n) is not None]
        return [f"{n}: only used with model=MODULE:FACTORY (--model)" for n in extra]
    p = [
        f"{n}: model and data come together; give {n}=MODULE:FACTORY"
        for n in ("model", "data")
        if getattr(cfg, n) is None
    ]
    if not cfg.target_modules:
        p.append("target_modules: a model needs target modules (--target-modules NAME), where slots go")
    if cfg.batch_size is not None:
        p.append("batch_size: the data factory builds the batches; set the batch size there")
    for name in ("data_dir", "text_file", "host_channels"):
        if getattr(cfg, name) is not None:
            p.append(f"{name}: an option of Esper's tasks; with model=... your factories decide it")
    shape = cfg.example_input_shape
    if isinstance(shape, list) and (not shape or any(isinstance(d, int) and d < 1 for d in shape)):
        p.append(f"example_input_shape: expected sizes >= 1 without the batch dimension, got {shape}")
    if cfg.example_input_dtype not in INPUT_DTYPES:
        p.append(f"example_input_dtype: {cfg.example_input_dtype!r} is not one of {list(INPUT_DTYPES)}")
    return p


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a JSON or TOML config file into a dict (validated later by ``RunConfig``)."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"config file {str(p)!r} is not UTF-8 text ({exc.reason} at byte {exc.start}); "
            f"pass a JSON or TOML file of settings"
        ) from None
    try:
        if p.suffix.lower() == ".toml":
            data = tomllib.loads(text)
        elif p.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            raise ConfigError(f"config file {str(p)!r} must end in .json or .toml")
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid {p.suffix[1:].upper()}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a table/object of settings")
    return data
