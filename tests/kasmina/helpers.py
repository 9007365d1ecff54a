"""Plain helpers shared by the Kasmina tests: tiny hosts, driving a slot to a stage, snapshots."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor

from esper.kasmina.gates import QualityGates
from esper.kasmina.host import CNNHost, MorphogeneticModel, TransformerHost
from esper.kasmina.slot import SeedSlot
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.stages import SeedStage

FAST_GATES = QualityGates(min_training_epochs=1, min_holding_epochs=1, embargo_epochs=2)
"""Short waiting periods so the lifecycle tests stay quick."""

DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def tiny_cnn_host() -> CNNHost:
    """Two conv blocks (4 and 8 channels) over 3x8x8 images; slots r0c0 and r0c1."""
    return CNNHost(num_classes=3, n_blocks=2, base_channels=4, in_channels=3)


def tiny_transformer_host() -> TransformerHost:
    """Two blocks of width 8 over sequences of up to 8 tokens; slots r0c0 and r0c1."""
    return TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=2, block_size=8)


def host_input(topology: str, batch: int = 2, *, generator: torch.Generator | None = None) -> Tensor:
    """A model input for the tiny host of ``topology``."""
    if topology == "cnn":
        return torch.randn(batch, 3, 8, 8, generator=generator)
    return torch.randint(0, 11, (batch, 6), generator=generator)


def tiny_model(topology: str = "cnn", gates: QualityGates = FAST_GATES, **kw: Any) -> MorphogeneticModel:
    host = tiny_cnn_host() if topology == "cnn" else tiny_transformer_host()
    return MorphogeneticModel(host, gates=gates, **kw)


def features(slot: SeedSlot, batch: int = 2, *, generator: torch.Generator | None = None) -> Tensor:
    """Random host features that fit ``slot``: (B, C, 4, 4) for cnn, (B, 5, C) for transformer."""
    shape = (batch, slot.channels, 4, 4) if slot.topology == "cnn" else (batch, 5, slot.channels)
    return torch.randn(*shape, generator=generator)


def backward_through(slot: SeedSlot, x: Tensor | None = None) -> None:
    """One forward/backward through the slot alone (what a training step does to it)."""
    x = (features(slot) if x is None else x).detach().requires_grad_()
    slot(x).float().square().mean().backward()


def drive(
    slot: SeedSlot,
    stage: SeedStage,
    blueprint: str | None = None,
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
    *,
    tempo: int = 2,
    x: Tensor | None = None,
    model: MorphogeneticModel | None = None,
) -> SeedSlot:
    """Germinate ``blueprint`` in an empty slot and walk it through the gates up to ``stage``.

    The default blueprint has parameters: ``conv_small`` (cnn) or ``mlp_small`` (transformer).
    With ``model``, the TRAINING backward runs through the whole model (``x`` is then a model
    input): width seeds compute only on the host's route.
    """
    if blueprint is None:
        blueprint = "conv_small" if slot.topology == "cnn" else "mlp_small"
    order = (
        SeedStage.GERMINATED,
        SeedStage.TRAINING,
        SeedStage.BLENDING,
        SeedStage.HOLDING,
        SeedStage.FOSSILIZED,
    )
    slot.germinate(blueprint, alpha_algorithm=algorithm, blend_tempo_epochs=tempo)
    for nxt in order[1 : order.index(stage) + 1]:
        if nxt == SeedStage.BLENDING:
            if model is None:
                backward_through(slot, x)
            else:
                model(host_input(slot.topology) if x is None else x).float().square().mean().backward()
            for _ in range(slot.gates.min_training_epochs):
                slot.step_epoch()
        elif nxt == SeedStage.HOLDING:
            for _ in range(tempo):
                slot.step_epoch()
        elif nxt == SeedStage.FOSSILIZED:
            for _ in range(slot.gates.min_holding_epochs):
                slot.step_epoch()
            slot.record_contribution(1.0)
        result = slot.advance_stage()
        assert result.passed, result
        assert slot.stage == nxt
    slot.zero_grad(set_to_none=True)
    return slot


def snapshot(slot: SeedSlot) -> dict[str, Any]:
    """A deep copy of everything a refused call must leave alone."""
    params = list(slot.seed_parameters())
    return {
        "state": copy.deepcopy(slot.state.to_dict()),
        "stage": slot.stage,
        "alpha": slot.alpha,
        "alpha_tensor": slot.alpha_tensor.clone(),
        "alpha_dtype": slot.alpha_tensor.dtype,
        "seed": slot.seed,
        "gate": slot.gate,
        "param_ids": [id(p) for p in params],
        "param_values": [p.detach().clone() for p in params],
        "active": slot.active,
    }


def assert_unchanged(slot: SeedSlot, before: dict[str, Any]) -> None:
    after = snapshot(slot)
    assert after["state"] == before["state"]
    assert after["stage"] == before["stage"]
    assert after["alpha"] == before["alpha"]
    assert torch.equal(after["alpha_tensor"], before["alpha_tensor"])
    assert after["alpha_dtype"] == before["alpha_dtype"]
    assert after["seed"] is before["seed"]
    assert after["gate"] is before["gate"]
    assert after["param_ids"] == before["param_ids"]
    assert len(after["param_values"]) == len(before["param_values"])
    for a, b in zip(after["param_values"], before["param_values"], strict=True):
        assert torch.equal(a, b)
    assert after["active"] == before["active"]


def model_snapshot(model: MorphogeneticModel) -> dict[str, Any]:
    """Every tensor and slot state of a model, plus the identity of its parameters."""
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items() if isinstance(v, Tensor)},
        "extra": copy.deepcopy({k: v for k, v in model.state_dict().items() if not isinstance(v, Tensor)}),
        "param_ids": [id(p) for p in model.parameters()],
        "slots": {sid: snapshot(s) for sid, s in model.seed_slots.items()},  # type: ignore[arg-type]
    }


def assert_model_unchanged(model: MorphogeneticModel, before: dict[str, Any]) -> None:
    after = model_snapshot(model)
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, v in before["tensors"].items():
        assert torch.equal(after["tensors"][k], v), k
    assert after["extra"] == before["extra"]
    assert after["param_ids"] == before["param_ids"]
    for sid, snap in before["slots"].items():
        assert_unchanged(model.slot(sid), snap)


class OpCounter:
    """A dispatch mode that records the name of every aten op run inside it."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        names: list[str] = []

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                names.append(func.overloadpacket.__name__)
                return func(*args, **(kwargs or {}))

        self.names = names
        self._mode = _Mode()

    def __enter__(self) -> OpCounter:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._mode.__exit__(*exc)
