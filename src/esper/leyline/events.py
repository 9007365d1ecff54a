"""Typed telemetry events: what a run records, as frozen dataclasses that serialise to primitives.

Every event carries ``epoch`` and turns into a dict of JSON primitives with an ``"event"`` key
naming its type (``to_dict``); :func:`event_from_dict` rebuilds the typed event, so a JSONL
log round-trips exactly. Enums are stored by name (``SeedStage.BLENDING`` -> ``"BLENDING"``)
so logs stay readable and survive renumbering.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field, fields
from enum import Enum
from typing import Any, ClassVar, TypeAlias, TypeVar

from esper.errors import EsperError, did_you_mean
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.stages import SeedStage

__all__ = [
    "EVENT_TYPES",
    "ActorRestarted",
    "AlphaChanged",
    "EpochEnd",
    "Event",
    "EventDecodeError",
    "PPOUpdate",
    "Reward",
    "Rollback",
    "RunFinished",
    "RunStarted",
    "SeedFossilized",
    "SeedGerminated",
    "SeedPruned",
    "SeedSnapshot",
    "StageChanged",
    "event_from_dict",
]


class EventDecodeError(EsperError, ValueError):
    """A dict that is not a valid serialised event (unknown type, missing/extra keys, bad value)."""


_E = TypeVar("_E", bound=Enum)


def _encode(value: Any) -> Any:
    """Turn a field value into JSON primitives (enums by name, mappings with str keys)."""
    if isinstance(value, Enum):
        return value.name
    if isinstance(value, SeedSnapshot):
        return value.to_dict()
    if isinstance(value, Mapping):
        return {str(k): _encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_encode(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"cannot serialise {type(value).__name__} value {value!r} in an event")


def _enum_by_name(enum: type[_E]) -> Callable[[Any], _E]:
    """A decoder that looks an enum member up by name, with a clear error."""

    def decode(name: Any) -> _E:
        try:
            return enum[name]
        except KeyError:
            known = [m.name for m in enum]
            raise EventDecodeError(
                f"unknown {enum.__name__} {name!r}; expected one of {known}." + did_you_mean(str(name), known)
            ) from None

    return decode


_stage = _enum_by_name(SeedStage)


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedSnapshot:
    """One slot's seed as seen at the end of an epoch (a value in ``EpochEnd.seeds``)."""

    stage: SeedStage
    alpha: float
    blueprint: str
    contribution: float | None = None
    params: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Primitives only; the stage by name."""
        return {f.name: _encode(getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SeedSnapshot:
        """Rebuild from :meth:`to_dict` output."""
        kwargs = _check_keys("seed snapshot", cls, data, ignore=())
        kwargs["stage"] = _stage(kwargs["stage"])
        return cls(**kwargs)


@dataclass(frozen=True, slots=True, kw_only=True)
class _EventBase:
    """Fields and serialisation shared by every event."""

    EVENT: ClassVar[str] = ""
    _DECODERS: ClassVar[Mapping[str, Callable[[Any], Any]]] = {}

    epoch: int

    def to_dict(self) -> dict[str, Any]:
        """JSON primitives only, with ``"event"`` naming the type."""
        out: dict[str, Any] = {"event": self.EVENT}
        for f in fields(self):
            out[f.name] = _encode(getattr(self, f.name))
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted(_EventBase):
    """A run began or resumed: what it is and how big the bare host is.

    ``epoch`` is the number of epochs already done: 0 for a fresh run, the checkpoint's epoch
    for a resumed one. ``config`` is the run config (its ``epochs`` entry, if any, sizes the
    console progress bar).
    """

    EVENT: ClassVar[str] = "run_started"

    config: dict[str, Any] = field(default_factory=dict)
    task: str
    controller: str
    seed: int
    device: str
    host_params: int


@dataclass(frozen=True, slots=True, kw_only=True)
class EpochEnd(_EventBase):
    """Metrics of one finished host epoch, with a snapshot of every occupied slot."""

    EVENT: ClassVar[str] = "epoch_end"
    _DECODERS: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        "seeds": lambda seeds: {str(k): SeedSnapshot.from_dict(v) for k, v in seeds.items()}
    }

    train_loss: float
    train_accuracy: float
    val_loss: float
    val_accuracy: float
    total_params: int
    seed_params: int
    lr: float
    wall_time_s: float
    train_flops: float = 0.0
    """Training FLOPs of the run so far (forward + backward, counted once per structure)."""
    seeds: dict[str, SeedSnapshot] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedGerminated(_EventBase):
    """A seed was created in a slot."""

    EVENT: ClassVar[str] = "seed_germinated"
    _DECODERS: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        "alpha_algorithm": _enum_by_name(AlphaAlgorithm),
        "alpha_curve": _enum_by_name(AlphaCurve),
    }

    slot: str
    blueprint: str
    seed_id: str
    params: int
    alpha_algorithm: AlphaAlgorithm
    alpha_curve: AlphaCurve
    tempo: int


@dataclass(frozen=True, slots=True, kw_only=True)
class StageChanged(_EventBase):
    """A seed moved along its lifecycle."""

    EVENT: ClassVar[str] = "stage_changed"
    _DECODERS: ClassVar[Mapping[str, Callable[[Any], Any]]] = {
        "from_stage": _stage,
        "to_stage": _stage,
    }

    slot: str
    seed_id: str
    from_stage: SeedStage
    to_stage: SeedStage


@dataclass(frozen=True, slots=True, kw_only=True)
class AlphaChanged(_EventBase):
    """A seed's blend weight moved (once per epoch while it ramps)."""

    EVENT: ClassVar[str] = "alpha_changed"

    slot: str
    seed_id: str
    alpha: float


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedPruned(_EventBase):
    """A seed was removed from its slot."""

    EVENT: ClassVar[str] = "seed_pruned"

    slot: str
    seed_id: str
    reason: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedFossilized(_EventBase):
    """A seed became a permanent part of the host."""

    EVENT: ClassVar[str] = "seed_fossilized"

    slot: str
    seed_id: str
    contribution: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Rollback(_EventBase):
    """The governor restored the state of ``restored_epoch`` (and may have pruned a slot)."""

    EVENT: ClassVar[str] = "rollback"

    reason: str
    restored_epoch: int
    pruned_slot: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished(_EventBase):
    """A run ended; ``summary`` is what summary.json holds."""

    EVENT: ClassVar[str] = "run_finished"

    summary: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class PPOUpdate(_EventBase):
    """Diagnostics of one PPO update round (``policy_loss``, ``approx_kl``, ``entropy/op``, ...).

    ``metrics`` values are floats or one level of nested dicts (e.g. entropy per head); sinks
    flatten nesting with slashes.
    """

    EVENT: ClassVar[str] = "ppo_update"

    round: int
    metrics: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class Reward(_EventBase):
    """The parts of one environment step's reward (e.g. ``accuracy_delta``, ``param_rent``)."""

    EVENT: ClassVar[str] = "reward"

    components: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True, kw_only=True)
class ActorRestarted(_EventBase):
    """A remote environment's worker died and was replaced; its episode was redone from its seed.

    ``epoch`` is the PPO round (as in ``PPOUpdate``); ``step`` is the episode step that was lost
    (0: the reset); ``attempt`` counts the restarts within that episode.
    """

    EVENT: ClassVar[str] = "actor_restarted"

    round: int
    env: int
    step: int
    seed: int | None
    reason: str
    attempt: int = 1


Event: TypeAlias = (
    RunStarted
    | EpochEnd
    | SeedGerminated
    | StageChanged
    | AlphaChanged
    | SeedPruned
    | SeedFossilized
    | Rollback
    | RunFinished
    | PPOUpdate
    | Reward
    | ActorRestarted
)

EVENT_TYPES: Mapping[str, type[Event]] = {
    cls.EVENT: cls
    for cls in (
        RunStarted,
        EpochEnd,
        SeedGerminated,
        StageChanged,
        AlphaChanged,
        SeedPruned,
        SeedFossilized,
        Rollback,
        RunFinished,
        PPOUpdate,
        Reward,
        ActorRestarted,
    )
}
"""Event name (the ``"event"`` key) -> event class."""


def _check_keys(what: str, cls: type, data: Mapping[str, Any], ignore: tuple[str, ...]) -> dict[str, Any]:
    """Return the dataclass fields of ``cls`` from ``data``; missing or unknown keys raise."""
    if not isinstance(data, Mapping):
        raise EventDecodeError(f"{what} must be a JSON object, got {type(data).__name__}.")
    names = [f.name for f in fields(cls)]
    required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
    given = set(data) - set(ignore)
    missing = sorted(required - given)
    unknown = sorted(given - set(names))
    if missing or unknown:
        raise EventDecodeError(
            f"{what} has missing keys {missing} and unknown keys {unknown}; expected {names}."
        )
    return {k: data[k] for k in names if k in data}


def event_from_dict(data: Mapping[str, Any]) -> Event:
    """Rebuild a typed event from :meth:`to_dict` output.

    Raises:
        EventDecodeError: unknown ``"event"`` type, missing or unknown keys, or a bad enum name.
    """
    name = data.get("event") if isinstance(data, Mapping) else None
    cls = EVENT_TYPES.get(name) if isinstance(name, str) else None
    if cls is None:
        known = sorted(EVENT_TYPES)
        raise EventDecodeError(
            f"unknown event type {name!r}; expected one of {known}." + did_you_mean(str(name), known)
        )
    kwargs = _check_keys(f"{name!r} event", cls, data, ignore=("event",))
    for key, decode in cls._DECODERS.items():
        if key in kwargs:
            try:
                kwargs[key] = decode(kwargs[key])
            except (AttributeError, TypeError) as err:
                raise EventDecodeError(f"{name!r} event has a bad {key!r}: {err}") from None
    return cls(**kwargs)
