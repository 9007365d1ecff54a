"""``inject_slots``: grow seeds inside any ``nn.Module``, at modules chosen by name (as PEFT does).

Each target module gets a forward hook that passes its output (or a tuple output's first
element) through a :class:`SeedSlot`. The slots live in the returned model's ``seed_slots``,
not in the user's model, so the model's own ``state_dict`` keys do not change and a pretrained
checkpoint of it still loads strictly into ``model.host``. An inactive slot costs one hook call
(~2 µs on CPU): the hook returns ``None``, which keeps the output, without calling the slot.

Layouts, read from the target's output: ``(B, C, H, W)`` -> a ``"cnn"`` slot of C channels;
``(B, T, C)`` -> a ``"transformer"`` slot of C channels; ``(B, C)`` -> a
:class:`~esper.kasmina.flat_slot.FlatSeedSlot` (transformer blueprints along the last dimension).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from esper.errors import InjectionError, did_you_mean
from esper.kasmina.flat_slot import FlatSeedSlot
from esper.kasmina.gates import QualityGates
from esper.kasmina.model import MorphogeneticModel
from esper.kasmina.slot import SeedSlot
from esper.kasmina.widening import WidthGrowth

__all__ = ["InjectedModel", "inject_slots"]

_LAYOUTS = {4: ("cnn", "(B, C, H, W)"), 3: ("transformer", "(B, T, C)"), 2: ("transformer", "(B, C)")}
# Module types whose class alone tells the output layout and width (no example_input needed).
_KNOWN_WIDTH: dict[type[nn.Module], str] = {nn.Conv2d: "out_channels", nn.BatchNorm2d: "num_features"}
_MAX_LISTED = 16


@dataclass(frozen=True, slots=True)
class _Target:
    """One target module and the slot its output passes through."""

    module: str
    slot_id: str
    rank: int
    channels: int

    @property
    def topology(self) -> str:
        return _LAYOUTS[self.rank][0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "module": self.module,
            "slot": self.slot_id,
            "topology": self.topology,
            "layout": _LAYOUTS[self.rank][1],
            "channels": self.channels,
        }


class _SlotHook:
    """A forward hook passing a target's output through its slot.

    A plain object holding the slot, not a closure: ``copy.deepcopy`` of the model copies the
    hook with the model and points it at the copied slot (a closure would keep the original).
    """

    def __init__(self, slot: SeedSlot) -> None:
        self.slot = slot

    def __call__(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
        slot = self.slot
        if not slot.active:  # None keeps the output: no slot call, bit-identical to the bare model
            return None
        if isinstance(output, Tensor):
            return slot(output)
        return (slot(output[0]), *output[1:])


class InjectedModel(MorphogeneticModel):
    """A :class:`MorphogeneticModel` around any ``nn.Module``; build it with :func:`inject_slots`.

    ``forward`` is the host's own; ``topology`` is the first slot's (each slot has its own, see
    ``slot.topology``); ``targets`` maps slot ids to the module names they follow.
    """

    host: nn.Module  # type: ignore[assignment]  # any module, not a HostBase

    def __init__(self, host: nn.Module, targets: Sequence[_Target], gates: QualityGates) -> None:
        # Not MorphogeneticModel.__init__, which reads the injection points of a HostBase.
        nn.Module.__init__(self)
        self.host = host
        self.gates = gates
        self.seed_slots = nn.ModuleDict({t.slot_id: _make_slot(t, gates) for t in targets})
        slots = [self.slot(t.slot_id) for t in targets]
        self._routing = tuple(slots)
        self._targets = tuple(targets)
        self._width = WidthGrowth(host)  # no width sites in an injected model (yet): never live
        # Last, after everything that can fail: a refused call leaves the host without hooks.
        for t, slot in zip(targets, slots, strict=True):
            host.get_submodule(t.module).register_forward_hook(_SlotHook(slot))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The host's forward; the target modules' hooks route their outputs through the slots."""
        return self.host(*args, **kwargs)

    @property
    def topology(self) -> str:
        """The first slot's topology (``"cnn"`` or ``"transformer"``); slots may differ."""
        return self.slots()[0].topology

    @property
    def targets(self) -> dict[str, str]:
        """Slot id -> qualified name of the module whose output it follows, in execution order."""
        return {t.slot_id: t.module for t in self._targets}

    def config(self) -> dict[str, Any]:
        """What was injected where (primitives). Not enough to rebuild: the host is user code."""
        cls = type(self.host)
        return {
            "injected": True,
            "host_class": f"{cls.__module__}.{cls.__qualname__}",
            "target_modules": [t.module for t in self._targets],
            "slots": [t.to_dict() for t in self._targets],
            "gates": asdict(self.gates),
        }


def _make_slot(target: _Target, gates: QualityGates) -> SeedSlot:
    if target.rank == 2:
        return FlatSeedSlot(target.slot_id, target.channels, gates=gates)
    return SeedSlot(target.slot_id, target.channels, target.topology, gates=gates)


def inject_slots(
    model: nn.Module,
    target_modules: str | Sequence[str],
    *,
    example_input: Tensor | tuple[Any, ...] | None = None,
    gates: QualityGates | None = None,
) -> MorphogeneticModel:
    """Put a seed slot after each target module of ``model``; ``model`` is changed in place.

    Args:
        model: any module; it becomes the returned model's ``host``.
        target_modules: a regular expression matching whole qualified names (``re.fullmatch``),
            or a list/tuple of names, each matching a name equal to it or ending in
            ``"." + name`` (every entry must match). The root module is never a target.
        example_input: a tensor, or a tuple of positional arguments, run once through ``model``
            under ``torch.no_grad()`` in eval mode to read each target's output layout and
            width; RNG state and train/eval modes are restored. Without it, each target's type
            must tell both (``Conv2d``, ``BatchNorm2d``).
        gates: quality gates shared by every slot.

    Returns:
        a model whose ``forward`` is ``model``'s and whose slot ids are the targets' names with
        ``.`` replaced by ``_`` (``blocks.1`` -> ``blocks_1``), in execution order.

    Raises:
        InjectionError: no match, only the root, clashing slot ids, or a target whose output is
            not a floating tensor (or a plain tuple starting with one) of rank 2-4. Nothing
            about ``model`` changes when a call is refused.
    """
    if not isinstance(model, nn.Module) or isinstance(model, MorphogeneticModel):
        raise InjectionError(
            f"inject_slots needs a plain nn.Module, got {type(model).__name__}"
            + (": it already has slots" if isinstance(model, MorphogeneticModel) else "")
        )
    _check_not_injected(model)
    names = _select(model, target_modules)
    targets = _describe_targets(model, names, example_input)
    try:
        return InjectedModel(model, targets, gates or QualityGates())
    except KeyError as exc:  # nn.ModuleDict refuses ids that shadow its own attributes
        raise InjectionError(f"a slot id is not usable as a module name: {exc}") from None


# ----------------------------------------------------------------- selecting targets
def _candidates(names: Sequence[str]) -> str:
    shown = list(names[:_MAX_LISTED])
    more = f" and {len(names) - _MAX_LISTED} more" if len(names) > _MAX_LISTED else ""
    return f"{shown}{more}"


def _select(model: nn.Module, target_modules: str | Sequence[str]) -> list[str]:
    """Qualified names of the targets, in ``named_modules`` order; every error at once."""
    names = [n for n, _ in model.named_modules() if n]  # "" is the root: never a target
    if isinstance(target_modules, str):
        try:
            pattern = re.compile(target_modules)
        except re.error as exc:
            raise InjectionError(
                f"target_modules {target_modules!r} is not a regular expression: {exc}"
            ) from None
        chosen = [n for n in names if pattern.fullmatch(n)]
        root = pattern.fullmatch("") is not None
        missing = [] if chosen else [(target_modules, root)]
    elif isinstance(target_modules, list | tuple) and target_modules and all(
        isinstance(e, str) for e in target_modules
    ):
        chosen = [n for n in names if any(n == e or n.endswith("." + e) for e in target_modules)]
        missing = [
            (e, e == "") for e in target_modules if not any(n == e or n.endswith("." + e) for n in names)
        ]
    else:
        raise InjectionError(
            "target_modules must be a regular expression (str) or a non-empty list/tuple of module "
            f"names, got {target_modules!r}"
        )
    if missing:
        raise InjectionError(
            " ".join(_no_match(e, root, names, type(model).__name__) for e, root in missing)
            + f" Modules of {type(model).__name__}: {_candidates(names)}"
        )
    _check_slot_ids(chosen)
    return chosen


def _no_match(entry: str, matches_root: bool, names: list[str], host: str) -> str:
    if matches_root:
        return f"target {entry!r} matches only the root module, which is never a target: pick submodules."
    return f"target {entry!r} matches no module of {host}." + did_you_mean(entry, names)


def _check_slot_ids(chosen: list[str]) -> None:
    owner: dict[str, str] = {}
    clashes = []
    for name in chosen:
        sid = name.replace(".", "_")
        if sid in owner:
            clashes.append(f"{owner[sid]!r} and {name!r} both give slot id {sid!r}")
        owner.setdefault(sid, name)
    if clashes:
        raise InjectionError("clashing slot ids: " + "; ".join(clashes) + ": target only one of each")


def _check_not_injected(model: nn.Module) -> None:
    for name, module in model.named_modules():
        if any(isinstance(h, _SlotHook) for h in module._forward_hooks.values()):
            raise InjectionError(
                f"module {name or type(model).__name__!r} already passes through an Esper slot: "
                "inject_slots was called on this model before; inject once, with every target"
            )


# ----------------------------------------------------------------- reading layouts
@dataclass(slots=True)
class _Seen:
    """What a module did during the example forward: call count and its first output."""

    calls: int
    features: tuple[int, ...] | str  # the shape a slot would see, or why there is none


def _features(output: Any) -> tuple[int, ...] | str:
    """The shape of the tensor a slot would see in ``output``, or why there is none."""
    first, where = output, ""
    if type(output) is tuple:
        if not output:
            return "an empty tuple"
        first, where = output[0], "a tuple starting with "
    if not isinstance(first, Tensor):
        return where + ("a " + type(first).__name__)
    if first.dim() not in _LAYOUTS:
        return f"{where}a {first.dim()}-D tensor of shape {tuple(first.shape)} (slots need rank 2-4)"
    if not first.is_floating_point():
        return f"{where}a {first.dtype} tensor (slots blend floating-point features)"
    return tuple(first.shape)


def _probe(model: nn.Module, example_input: Tensor | tuple[Any, ...]) -> dict[str, _Seen]:
    """Run ``example_input`` once (no grad, eval mode) and record every module's output."""
    args = example_input if isinstance(example_input, tuple) else (example_input,)
    seen: dict[str, _Seen] = {}  # insertion order = order of first call

    def recorder(name: str) -> Any:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if name in seen:
                seen[name].calls += 1
            else:
                seen[name] = _Seen(1, _features(output))

        return hook

    modes = [(m, m.training) for m in model.modules()]
    handles = [m.register_forward_hook(recorder(n)) for n, m in model.named_modules() if n]
    devices = sorted({t.device.index or 0 for t in (*model.parameters(), *model.buffers()) if t.is_cuda})
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=devices):
            model.eval()  # BatchNorm statistics stay as they are, dropout draws nothing
            model(*args)
    except Exception as exc:
        raise InjectionError(
            f"example_input did not run through {type(model).__name__}: {type(exc).__name__}: {exc}. "
            "Pass a tensor, or a tuple of positional arguments, that the model's forward accepts"
        ) from exc
    finally:
        for handle in handles:
            handle.remove()
        for module, training in modes:
            module.training = training
    return seen


def _describe_targets(
    model: nn.Module, names: list[str], example_input: Tensor | tuple[Any, ...] | None
) -> list[_Target]:
    """A target per name, in execution order when ``example_input`` shows it; every error at once."""
    if example_input is None:
        targets, errors = _targets_from_types(model, names)
    else:
        targets, errors = _targets_from_outputs(_probe(model, example_input), names, model)
    if errors:
        raise InjectionError("; ".join(errors))
    return targets


def _targets_from_types(model: nn.Module, names: list[str]) -> tuple[list[_Target], list[str]]:
    targets, errors = [], []
    for name in names:
        module = model.get_submodule(name)
        attr = next((a for cls, a in _KNOWN_WIDTH.items() if isinstance(module, cls)), None)
        if attr is None:
            errors.append(
                f"target {name!r} is a {type(module).__name__}, whose type does not tell its output "
                "layout and width: pass example_input (a batch the model accepts) to inject_slots"
            )
        else:
            targets.append(_Target(name, name.replace(".", "_"), 4, int(getattr(module, attr))))
    return targets, errors


def _targets_from_outputs(
    seen: dict[str, _Seen], names: list[str], model: nn.Module
) -> tuple[list[_Target], list[str]]:
    fits = {n for n, s in seen.items() if s.calls == 1 and isinstance(s.features, tuple)}
    usable = [n for n, _ in model.named_modules() if n in fits]
    targets, errors = [], []
    order = {n: i for i, n in enumerate(seen)}
    for name in sorted(names, key=lambda n: order.get(n, len(order))):
        record = seen.get(name)
        if record is None:
            problem = "was not called when example_input ran through the model"
        elif record.calls > 1:
            problem = f"was called {record.calls} times in one forward (a shared module); a slot needs one"
        elif isinstance(record.features, str):
            problem = f"returns {record.features}; a slot needs a tensor or a tuple starting with one"
        else:
            shape = record.features
            channels = shape[1] if len(shape) == 4 else shape[-1]
            targets.append(_Target(name, name.replace(".", "_"), len(shape), channels))
            continue
        errors.append(
            f"target {name!r} of {type(model).__name__} {problem}. Modules whose output fits: "
            f"{_candidates(_nearest(name, usable))}"
        )
    return targets, errors


def _nearest(name: str, usable: list[str]) -> list[str]:
    """The usable modules inside ``name``, else inside its parent, and so on up to the root."""
    prefix = name
    while prefix:
        inside = [n for n in usable if n.startswith(prefix + ".")]
        if inside:
            return inside
        prefix = prefix.rpartition(".")[0]
    return usable
