"""``SeedSlot``: one injection point where a seed germinates, learns, blends and is kept or pruned.

The lifecycle lives in named methods (``germinate``, ``advance_stage``, ``prune``,
``step_epoch``, ``set_alpha``, ``set_alpha_target``); ``forward`` never changes state. Every
refused call raises before it mutates anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from esper.errors import CheckpointError, IllegalTransitionError, ShapeError, WidthGrowthError
from esper.kasmina.blending import GatedBlend
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.gates import (
    GateResult,
    QualityGates,
    SeedMetrics,
    enum_value,
    gate_failures,
    gate_name,
    resolve_target,
)
from esper.kasmina.grad_monitor import GradientMonitor
from esper.kasmina.isolation import ste_forward
from esper.kasmina.slot_state import SlotState
from esper.kasmina.width import WidthSeed, site_params
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.stages import SeedStage, is_failure_stage

if TYPE_CHECKING:  # widening.py imports the blueprints, which this module also needs first
    from esper.kasmina.widening import WidthGrowth

__all__ = ["GateResult", "QualityGates", "SeedMetrics", "SeedSlot"]

# Forward modes, fixed at each stage change so the forward is a couple of int compares.
_PASS, _INCUBATE, _BLEND = 0, 1, 2
# Module-level aliases: an enum-member lookup in the forward costs more than the compare.
_ADD, _MULTIPLY = AlphaAlgorithm.ADD, AlphaAlgorithm.MULTIPLY
_is_compiling = torch.compiler.is_compiling


class SeedSlot(nn.Module):
    """An injection point in a host that can hold one seed.

    Args:
        slot_id: id such as ``"r0c1"``.
        channels: feature width at this point (``C`` of ``(B, C, H, W)`` or ``(B, T, C)``).
        topology: ``"cnn"`` or ``"transformer"``.
        gates: quality-gate thresholds.
        isolate_blend_input: detach the seed's input in BLENDING and HOLDING (default: True
            for CNN hosts, False for transformer hosts, whose seeds co-adapt).
        width_growth: the model's width growth (see :mod:`esper.kasmina.widening`); without
            it the slot takes residual seeds only.

    A width seed (``widen``, ``widen_mlp``, ...) leaves the slot's own forward the identity:
    the host routes its new units (``grow_width``, ``blend_width``) while ``widening`` is True.
    """

    alpha_tensor: Tensor
    _like: Tensor
    seed: nn.Module | None
    gate: GatedBlend | None

    def __init__(
        self,
        slot_id: str,
        channels: int,
        topology: str = "cnn",
        *,
        gates: QualityGates | None = None,
        isolate_blend_input: bool | None = None,
        width_growth: WidthGrowth | None = None,
    ) -> None:
        super().__init__()
        if topology not in ("cnn", "transformer"):
            raise ValueError(f"topology must be 'cnn' or 'transformer', got {topology!r}")
        if channels < 1:
            raise ValueError(f"slot {slot_id!r} needs channels >= 1, got {channels!r}")
        self.slot_id = slot_id
        self.channels = channels
        self.topology = topology
        self.gates = gates or QualityGates()
        self._isolate = topology == "cnn" if isolate_blend_input is None else isolate_blend_input
        self.state = SlotState()
        self.register_module("seed", None)
        self.register_module("gate", None)
        # The checkpointed alpha: a 0-dim fp32 buffer updated in place (kept fp32 by _apply).
        self.register_buffer("alpha_tensor", torch.zeros(()))
        # Follows model.to(device/dtype): where and in what dtype new seeds are built.
        self.register_buffer("_like", torch.zeros(()), persistent=False)
        self._alpha_cache: dict[torch.dtype, Tensor] = {}
        self._alpha_override: Tensor | None = None
        self._grads = GradientMonitor()
        self._mode = _PASS
        self.active = False
        self._detach_input = True
        self._width_growth = width_growth
        self._width_mode = _PASS
        self._width_detach = True
        self.widening = False
        """True while a width seed computes (TRAINING, BLENDING, HOLDING): the host routes it."""
        if width_growth is not None:
            width_growth.add_slot(self)

    # ----------------------------------------------------------------- read-only views
    @property
    def stage(self) -> SeedStage:
        """Lifecycle stage (DORMANT when empty)."""
        return self.state.stage

    @property
    def alpha(self) -> float:
        """Current blend weight in [0, 1]."""
        return self.state.alpha_controller.alpha

    @property
    def alpha_controller(self) -> Any:
        """The alpha schedule (an :class:`~esper.kasmina.alpha_controller.AlphaController`)."""
        return self.state.alpha_controller

    @property
    def alpha_algorithm(self) -> AlphaAlgorithm:
        return self.state.alpha_algorithm

    @property
    def isolate_blend_input(self) -> bool:
        """Whether the seed's input is detached in BLENDING and HOLDING."""
        return self._isolate

    @isolate_blend_input.setter
    def isolate_blend_input(self, value: bool) -> None:
        self._isolate = bool(value)
        self._refresh_mode()

    @property
    def seed_params(self) -> int:
        """Parameters of the seed and its gate (0 when empty)."""
        return sum(p.numel() for p in self.seed_parameters())

    def blueprint_names(self) -> list[str]:
        """Blueprints this slot can hold: the names :meth:`germinate` accepts (width blueprints
        only where the host can widen at this slot)."""
        widen = self._can_widen()
        return [b.name for b in BlueprintRegistry.list_for_topology(self.topology) if widen or not b.is_width]

    def _can_widen(self) -> bool:
        if self._width_growth is None:
            return False
        try:
            self._width_growth.site(self.slot_id)
        except WidthGrowthError:
            return False
        return True

    def seed_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the seed and, for GATE, its gate network."""
        for module in (self.seed, self.gate):
            if module is not None:
                yield from module.parameters()

    # ----------------------------------------------------------------- lifecycle
    def germinate(
        self,
        blueprint_id: str,
        seed_id: str | None = None,
        *,
        alpha_algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
        alpha_curve: AlphaCurve = AlphaCurve.LINEAR,
        blend_tempo_epochs: int = 5,
        blueprint_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """Build a seed from ``blueprint_id`` in this empty slot; the slot becomes GERMINATED."""
        if self.state.stage != SeedStage.DORMANT:
            raise IllegalTransitionError(
                f"slot {self.slot_id!r} is {self.state.stage.name}, not DORMANT: germinate "
                f"needs an empty slot (prune the seed, wait out the embargo, or pick another slot)"
            )
        algorithm, curve = enum_value(AlphaAlgorithm, alpha_algorithm), enum_value(AlphaCurve, alpha_curve)
        if (
            isinstance(blend_tempo_epochs, bool)
            or not isinstance(blend_tempo_epochs, int)
            or (blend_tempo_epochs < 1)
        ):
            raise ValueError(f"blend_tempo_epochs must be an int >= 1, got {blend_tempo_epochs!r}")
        kwargs = dict(blueprint_kwargs or {})
        seed = self._build(blueprint_id, kwargs, algorithm)
        st = self.state
        self._install(seed, algorithm)
        st.width = _width_record(seed)
        st.germinations += 1
        st.seed_id = seed_id or f"{self.slot_id}-{blueprint_id}-{st.germinations}"
        st.blueprint_id, st.blueprint_kwargs = blueprint_id, kwargs
        st.alpha_algorithm, st.blend_tempo_epochs = algorithm, blend_tempo_epochs
        st.metrics = SeedMetrics()
        st.alpha_controller.hold_at(0.0)  # a new seed starts at alpha 0, whatever was set before
        st.alpha_controller.alpha_curve = curve
        self._write_alpha(0.0)
        self._set_stage(SeedStage.GERMINATED)

    def advance_stage(self, target_stage: SeedStage | None = None) -> GateResult:
        """Move to ``target_stage`` (default: the next stage) if its gate passes.

        A failed gate changes nothing and lists the failed checks. A target that is not a
        legal move from the current stage raises :class:`IllegalTransitionError`.
        """
        verdict = self.check_advance(target_stage)
        target = verdict.target_stage
        if target == SeedStage.PRUNED:
            self.prune("advance_stage(PRUNED)")
            return verdict
        if not verdict.passed:
            return verdict
        if target == SeedStage.FOSSILIZED and isinstance(self.seed, WidthSeed):
            assert self._width_growth is not None
            self._width_growth.fossilize(self.slot_id, self.seed, self.alpha)  # now host units
            self._uninstall()
        if target == SeedStage.BLENDING:
            ctl = self.state.alpha_controller
            ctl.hold_at(ctl.alpha)
            ctl.retarget(alpha_target=1.0, alpha_steps_total=self.state.blend_tempo_epochs)
            self._write_alpha(ctl.alpha)
        self._set_stage(target)
        return verdict

    def check_advance(self, target_stage: SeedStage | None = None) -> GateResult:
        """Dry run of :meth:`advance_stage`: the gate's verdict, without moving.

        Illegal targets raise exactly as :meth:`advance_stage` does.
        """
        current = self.state.stage
        target = resolve_target(self.slot_id, current, target_stage)
        if target == SeedStage.PRUNED:
            return GateResult(True, "prune", target)
        failed = self._check_gate(current, target)
        return GateResult(not failed, gate_name(current, target), target, tuple(failed))

    def set_alpha_target(
        self, alpha_target: float, *, steps: int, alpha_curve: AlphaCurve | None = None
    ) -> None:
        """Ramp alpha to ``alpha_target`` over ``steps`` epochs (BLENDING, or HOLDING -> BLENDING)."""
        stage = self.state.stage
        if stage not in (SeedStage.BLENDING, SeedStage.HOLDING):
            raise IllegalTransitionError(
                f"slot {self.slot_id!r} is {stage.name}: set_alpha_target needs BLENDING or HOLDING"
            )
        probe = self.state.alpha_controller.to_dict()
        ctl = type(self.state.alpha_controller).from_dict(probe)
        ctl.hold_at(ctl.alpha)
        ctl.retarget(alpha_target=alpha_target, alpha_steps_total=steps, alpha_curve=alpha_curve)
        self.state.alpha_controller = ctl  # validated on a copy first: a bad value changes nothing
        self._write_alpha(ctl.alpha)
        if stage == SeedStage.HOLDING:
            self._set_stage(SeedStage.BLENDING)

    def prune(self, reason: str = "") -> bool:
        """Remove the seed; True if one was removed, False if there was none (empty or failed).

        Pruning a FOSSILIZED seed raises :class:`IllegalTransitionError`.
        """
        stage = self.state.stage
        if stage == SeedStage.FOSSILIZED:
            raise IllegalTransitionError(
                f"slot {self.slot_id!r} holds a FOSSILIZED seed, which is permanent and cannot be pruned"
            )
        if stage == SeedStage.DORMANT or is_failure_stage(stage):
            return False
        self._uninstall()
        self.state.metrics.prune_reason = reason
        self.state.blueprint_id, self.state.blueprint_kwargs = None, {}
        self.state.width = None
        self.state.alpha_controller.hold_at(0.0)
        self._write_alpha(0.0)
        self._set_stage(SeedStage.PRUNED)
        return True

    def step_epoch(self) -> None:
        """One host epoch: tick the alpha ramp while BLENDING and the embargo after a prune.

        Materialises the gradient statistics gathered during backward (one host sync).
        """
        st = self.state
        stage = st.stage
        st.epochs_in_stage += 1
        if self.seed is not None:
            st.metrics.epochs_total += 1
        if stage == SeedStage.TRAINING:
            self._collect_grad_stats()
        elif stage == SeedStage.BLENDING:
            st.alpha_controller.step()
            self._write_alpha(st.alpha_controller.alpha)
        elif stage == SeedStage.PRUNED:
            st.embargo_remaining = self.gates.embargo_epochs
            self._set_stage(SeedStage.EMBARGOED)
        elif stage == SeedStage.EMBARGOED:
            st.embargo_remaining = max(st.embargo_remaining - 1, 0)
            if st.embargo_remaining == 0:
                self._set_stage(SeedStage.RESETTING)
        elif stage == SeedStage.RESETTING:
            st.seed_id, st.metrics = None, SeedMetrics()
            self._set_stage(SeedStage.DORMANT)

    def set_alpha(self, value: float) -> None:
        """Hold alpha at ``value`` clamped to [0, 1] (cancels a ramp); NaN is a ValueError."""
        self.state.alpha_controller.hold_at(value)
        self._write_alpha(self.state.alpha_controller.alpha)

    def record_contribution(self, value: float) -> None:
        """Set the seed's measured counterfactual contribution and append it to its history.

        Raises:
            ValueError: ``value`` is NaN or infinite (an infinite one would pass the fossilize
                gate); nothing changes.
        """
        if not math.isfinite(value):
            raise ValueError(
                f"slot {self.slot_id!r}: a contribution must be a finite float, got {value!r}; "
                f"measure it on a model whose outputs are finite"
            )
        self.state.metrics.counterfactual_contribution = float(value)
        self.state.metrics.history.append(float(value))

    @contextmanager
    def force_alpha(self, alpha: Tensor | float) -> Iterator[None]:
        """Use ``alpha`` (a float, 0-dim or per-sample tensor) as the blend weight inside the block.

        For counterfactual evaluation: nothing about the slot's state changes.
        """
        weight = torch.as_tensor(alpha, dtype=torch.float32, device=self.alpha_tensor.device)
        previous, self._alpha_override = self._alpha_override, weight.clamp(0.0, 1.0)
        try:
            yield
        finally:
            self._alpha_override = previous

    # ----------------------------------------------------------------- forward (hot path)
    def forward(self, host_features: Tensor) -> Tensor:
        """Host features in, host-or-blended features out, same shape, dtype and memory format."""
        mode = self._mode
        if mode == _PASS:
            return host_features
        self._check_features(host_features)
        # A dict read, not ``self.seed``: nn.Module.__getattr__ costs ~0.7 µs per call on CPU.
        seed = self._modules["seed"]
        assert seed is not None  # _mode is _PASS whenever the slot is empty
        if mode == _INCUBATE:
            return ste_forward(host_features, seed(host_features.detach()))
        seed_in = host_features.detach() if self._detach_input else host_features
        seed_out = seed(seed_in)
        dtype = host_features.dtype
        if seed_out.dtype != dtype:
            seed_out = seed_out.to(dtype)
        # Steady state in eager: alpha is cached in this dtype, one dict read; else _weight.
        weight = None
        if self._alpha_override is None and not _is_compiling():
            weight = self._alpha_cache.get(dtype)
        if weight is None:
            weight = self._weight(host_features)
        algorithm = self.state.alpha_algorithm
        if algorithm == _ADD:
            return torch.lerp(host_features, seed_out, weight)
        if algorithm == _MULTIPLY:
            return host_features * (1.0 + weight * torch.tanh(seed_out - seed_in))
        assert self.gate is not None
        gate = self.gate.get_alpha_for_blend(seed_in)
        if gate.dtype != host_features.dtype:
            gate = gate.to(host_features.dtype)
        return torch.lerp(host_features, seed_out, weight * gate)

    def grow_width(self, x: Tensor) -> Tensor:
        """A width seed's new units from its producer's input ``x`` (detached unless blending
        co-adapts, as for residual seeds)."""
        seed = self._modules["seed"]
        assert isinstance(seed, WidthSeed)
        return seed.grow_units(x.detach() if self._width_detach else x)

    def blend_width(self, out: Tensor, units: Tensor) -> Tensor:
        """The reader's output ``out`` plus the new units' term: straight through in TRAINING
        (``out`` exactly, gradients reach the seed), times alpha in BLENDING and HOLDING."""
        seed = self._modules["seed"]
        assert isinstance(seed, WidthSeed)
        term = seed.read_units(units)
        if term.dtype != out.dtype:
            term = term.to(out.dtype)
        if self._width_mode == _INCUBATE:
            return ste_forward(out, term)
        weight = None
        if self._alpha_override is None and not _is_compiling():
            weight = self._alpha_cache.get(out.dtype)
        if weight is None:
            weight = self._weight(out)
            if weight.dim() not in (0, out.dim()):  # per-sample (B, 1, 1, 1) alpha on (B, classes)
                weight = weight.view(-1, *([1] * (out.dim() - 1)))
        return out + weight * term

    def param_estimate(self, blueprint_id: str) -> int:
        """Parameters ``blueprint_id`` would add here: exact, width blueprints included."""
        spec = BlueprintRegistry.get(self.topology, blueprint_id)
        if spec.width_units is not None and self._width_growth is not None:
            try:
                site = self._width_growth.site(self.slot_id)
            except WidthGrowthError:  # this host cannot widen here: the registry's figure
                return spec.param_estimate(self.channels)
            return site_params(site, spec.width_units(self.channels))
        return spec.param_estimate(self.channels)

    def _weight(self, x: Tensor) -> Tensor:
        """The lerp weight: an override, else alpha cached in ``x``'s dtype (no per-call cast)."""
        override = self._alpha_override
        if override is not None:
            return override if override.dim() == 0 or override.dtype == x.dtype else override.to(x.dtype)
        if _is_compiling():
            return self.alpha_tensor  # a graph input: in-place updates need no recompile
        weight = self._alpha_cache.get(x.dtype)
        if weight is None:  # first time this dtype is seen: one small allocation
            weight = self.alpha_tensor.to(x.dtype)
            self._alpha_cache[x.dtype] = weight
        return weight

    def _check_features(self, x: Tensor) -> None:
        cnn = self.topology == "cnn"
        shape = x.shape  # one torch.Size per call (each ``x.shape`` builds a new one)
        if len(shape) != (4 if cnn else 3) or shape[1 if cnn else -1] != self.channels:
            layout = "(B, C, H, W)" if self.topology == "cnn" else "(B, T, C)"
            raise ShapeError(
                f"slot {self.slot_id!r} expects features {layout} with C={self.channels}, "
                f"got shape {tuple(x.shape)}"
            )

    # ----------------------------------------------------------------- internals

    def _check_gate(self, current: SeedStage, target: SeedStage) -> list[str]:
        """Failed checks for ``current -> target`` (empty list: the gate passes)."""
        events, finite = self._grads.pending()  # read, not folded in: a gate changes nothing
        return gate_failures(
            self.gates,
            self.state,
            current,
            target,
            has_seed=self.seed is not None,
            needs_gradients=bool(self._incubated_params()),
            pending_grad_steps=(events, finite),
        )

    def _set_stage(self, stage: SeedStage) -> None:
        if self.state.stage == SeedStage.TRAINING and stage != SeedStage.TRAINING:
            self._collect_grad_stats()
            self._grads.detach()
        self.state.stage = stage
        self.state.epochs_in_stage = 0
        if stage == SeedStage.TRAINING:
            self._grads.attach(self._incubated_params())
        self._refresh_mode()

    def _refresh_mode(self) -> None:
        stage = self.state.stage
        if self.seed is None or stage in (SeedStage.DORMANT, SeedStage.GERMINATED):
            mode = _PASS
        elif stage == SeedStage.TRAINING:
            mode = _INCUBATE
        elif stage in (SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED):
            mode = _BLEND
        else:
            mode = _PASS
        width = isinstance(self.seed, WidthSeed)  # its units travel the host's route, not forward
        self._mode, self._width_mode = (_PASS, mode) if width else (mode, _PASS)
        self._detach_input = self._isolate and stage != SeedStage.FOSSILIZED
        self._width_detach = mode == _INCUBATE or self._detach_input
        self.active = self._mode != _PASS
        widening = self._width_mode != _PASS
        if widening != self.widening:
            self.widening = widening
            if self._width_growth is not None:
                self._width_growth.refresh()

    def _build(self, blueprint_id: str, kwargs: dict[str, Any], algorithm: AlphaAlgorithm) -> nn.Module:
        """A new seed for this slot; raises (changing nothing) when the blueprint cannot go here."""
        spec = BlueprintRegistry.get(self.topology, blueprint_id)
        if spec.width_units is None:
            return spec.create(self.channels, **kwargs)
        if self._width_growth is None:
            raise WidthGrowthError(
                f"slot {self.slot_id!r}: blueprint {blueprint_id!r} grows the host's width, and this "
                f"slot has no host; germinate it in a MorphogeneticModel slot"
            )
        if algorithm != AlphaAlgorithm.ADD:
            raise WidthGrowthError(
                f"slot {self.slot_id!r}: width blueprint {blueprint_id!r} adds its units' term with "
                f"alpha, so it blends with ADD only, got {AlphaAlgorithm(algorithm).name}"
            )
        return self._width_growth.build(self.slot_id, blueprint_id, self.channels, kwargs)

    def _install(self, seed: nn.Module, algorithm: AlphaAlgorithm) -> None:
        like = self._like
        self.seed = seed.to(device=like.device, dtype=like.dtype)
        self.gate = None
        if algorithm == AlphaAlgorithm.GATE:
            gate = GatedBlend(self.channels, self.topology)
            self.gate = gate.to(device=like.device, dtype=like.dtype)

    def _uninstall(self) -> None:
        self._grads.detach()
        self.seed = None
        self.gate = None

    def _write_alpha(self, value: float) -> None:
        """Update the alpha buffer and its per-dtype copies in place (no allocation)."""
        with torch.no_grad():
            self.alpha_tensor.fill_(value)
            for cached in self._alpha_cache.values():
                cached.fill_(value)

    def _incubated_params(self) -> list[nn.Parameter]:
        """Trainable parameters that TRAINING reaches: the seed's own.

        Not the GATE network: it joins when blending starts, so it gets no gradient before.
        """
        return [] if self.seed is None else [p for p in self.seed.parameters() if p.requires_grad]

    def _collect_grad_stats(self) -> None:
        """Fold the gradient counts gathered since the last call into the metrics."""
        events, finite = self._grads.pending()
        if events:
            self.state.metrics.grad_steps += events
            self.state.metrics.grad_steps_finite += finite
            self._grads.reset()

    # ----------------------------------------------------------------- module plumbing
    def _apply(self, fn: Any, recurse: bool = True) -> SeedSlot:
        """Follow ``.to()``/``.half()`` but keep the alpha buffer fp32 and drop stale copies."""
        alpha = self.alpha_tensor
        super()._apply(fn, recurse)
        if self.alpha_tensor.dtype != torch.float32:
            # The fp32 original, moved: converting back from bf16/fp16 would round the value.
            self.alpha_tensor = alpha.to(self.alpha_tensor.device)
        self._alpha_cache.clear()
        return self

    def get_extra_state(self) -> dict[str, Any]:
        """Stage, blueprint, alpha schedule and metrics as primitives.

        Gradient statistics gathered since the last ``step_epoch()`` are included, so that a
        checkpoint taken mid-epoch loses no backward.
        """
        state = self.state.to_dict()
        events, finite = self._grads.pending()
        state["metrics"]["grad_steps"] += events
        state["metrics"]["grad_steps_finite"] += finite
        return state

    def _parse_extra_state(self, state: Any) -> SlotState:
        """A checkpointed state checked against this slot; CheckpointError names the slot."""
        new = SlotState.from_dict(state, self.slot_id)
        if new.blueprint_id is not None:
            try:
                spec = BlueprintRegistry.get(self.topology, new.blueprint_id)
            except ValueError as exc:
                raise CheckpointError(
                    f"checkpoint state for slot {self.slot_id!r} is corrupted: {exc}"
                ) from None
            if spec.is_width != (new.width is not None):
                raise CheckpointError(
                    f"checkpoint state for slot {self.slot_id!r} is corrupted: blueprint "
                    f"{new.blueprint_id!r} with width record {new.width!r}"
                )
        return new

    def set_extra_state(self, state: Any) -> None:
        """Restore the slot from a checkpoint, rebuilding its seed (before its weights load)."""
        new = self._parse_extra_state(state)
        self._grads.detach()
        same_seed = (
            self.seed is not None
            and self.state.blueprint_id == new.blueprint_id
            and self.state.blueprint_kwargs == new.blueprint_kwargs
            and self.state.alpha_algorithm == new.alpha_algorithm
            and self._width_seed_fits(new)
        )
        merged = new.stage == SeedStage.FOSSILIZED and new.width is not None  # in the host now
        if new.blueprint_id is None or merged:
            self._uninstall()
        elif not same_seed:
            self._install(self._rebuild(new), new.alpha_algorithm)
        self.state = new
        self._write_alpha(new.alpha_controller.alpha)
        if new.stage == SeedStage.TRAINING:
            self._grads.attach(self._incubated_params())
        self._refresh_mode()

    def _width_seed_fits(self, new: SlotState) -> bool:
        """For a width seed: whether the installed one has the checkpoint's shapes."""
        seed = self.seed
        if not isinstance(seed, WidthSeed):
            return new.width is None
        assert self._width_growth is not None
        return (
            new.width is not None
            and seed.units == new.width["units"]
            and seed.fits(self._width_growth.site(self.slot_id))
        )

    def _rebuild(self, new: SlotState) -> nn.Module:
        """The checkpoint's seed, freshly built (its tensors load next)."""
        assert new.blueprint_id is not None
        try:
            seed = self._build(new.blueprint_id, dict(new.blueprint_kwargs), new.alpha_algorithm)
        except WidthGrowthError as exc:
            raise CheckpointError(f"checkpoint state for slot {self.slot_id!r} does not fit: {exc}") from exc
        if _width_record(seed) != new.width:
            raise CheckpointError(
                f"checkpoint state for slot {self.slot_id!r} records width {new.width}, but the "
                f"blueprint builds {_width_record(seed)} here"
            )
        return seed

    def extra_repr(self) -> str:
        return (
            f"slot_id={self.slot_id!r}, channels={self.channels}, stage={self.stage.name}, "
            f"blueprint={self.state.blueprint_id!r}, alpha={self.alpha:.3f}"
        )


def _width_record(seed: nn.Module) -> dict[str, int] | None:
    """What a width seed grows (kept in the slot state for checkpoints); None for residual seeds."""
    if not isinstance(seed, WidthSeed):
        return None
    return {"base": seed.base_units, "units": seed.units}
