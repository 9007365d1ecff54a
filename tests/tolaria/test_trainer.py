"""Trainer: epoch metrics, counterfactuals (one batched pass == separate passes), AMP steps."""

from __future__ import annotations

import pytest
import torch
from tolaria_kit import backward_once, grow
from torch.nn.functional import cross_entropy

from esper import CNNHost, MorphogeneticModel, QualityGates, TransformerHost
from esper.kasmina.slot import SeedSlot
from esper.leyline.stages import SeedStage
from esper.tolaria.optim import SeedGroups, adamw, host_groups
from esper.tolaria.trainer import Trainer, _forced_alphas, counterfactual_slots

CPU = torch.device("cpu")


def _loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))


def _correct(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, int]:
    return (logits.argmax(-1) == y).sum(), y.numel()


def _trainer(model: MorphogeneticModel, amp: str = "none", lr: float = 1e-2) -> Trainer:
    groups = SeedGroups(adamw(lr, 0.0)(host_groups(model.get_host_parameters())), model, None)
    return Trainer(model, groups, loss_fn=_loss, metric_fn=_correct, device=CPU, amp=amp, grad_clip=1.0)


def _cnn() -> MorphogeneticModel:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    return MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))


def _batches(n: int = 3, b: int = 16, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(b, 1, 8, 8, generator=g), torch.randint(0, 10, (b,), generator=g)) for _ in range(n)]


def _blend_at_half(model: MorphogeneticModel, slot_id: str, x: torch.Tensor) -> SeedSlot:
    """A BLENDING seed whose alpha ramp is half way (tempo 2, one tick)."""
    model.germinate_seed("conv_light", slot=slot_id, blend_tempo_epochs=2)
    slot = model.slot(slot_id)
    slot.advance_stage()
    backward_once(model, x)
    slot.advance_stage()
    slot.step_epoch()
    assert slot.stage == SeedStage.BLENDING and slot.alpha == pytest.approx(0.5)
    return slot


def _influential_seeds(model: MorphogeneticModel) -> None:
    """Seeds start as the identity; give them weights that change the output."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in model.get_seed_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.7)


def _grown_model() -> tuple[MorphogeneticModel, list[SeedSlot]]:
    model = _cnn()
    x = torch.randn(4, 1, 8, 8)
    grow(model, "r0c0", "conv_heavy", SeedStage.HOLDING, x)
    _blend_at_half(model, "r0c1", x)
    _influential_seeds(model)
    model.eval()
    return model, [model.slot("r0c0"), model.slot("r0c1")]


def test_counterfactual_slots_are_the_blended_ones() -> None:
    model, slots = _grown_model()
    assert counterfactual_slots(model) == slots


def test_batched_counterfactual_logits_equal_separate_passes() -> None:
    model, slots = _grown_model()
    (x, _), b, k = _batches(1)[0], 16, len(slots) + 1
    with torch.no_grad():
        with _forced_alphas(slots, b, k):
            batched = model(x.repeat(k, 1, 1, 1)).view(k, b, -1)  # (K, B, classes)
        torch.testing.assert_close(batched[0], model(x), rtol=1e-5, atol=1e-6)
        for i, slot in enumerate(slots):
            with slot.force_alpha(0.0):
                separate = model(x)
            torch.testing.assert_close(batched[i + 1], separate, rtol=1e-5, atol=1e-6)
            assert not torch.allclose(separate, batched[0])  # the seed matters


def test_counterfactual_contributions_equal_separate_passes() -> None:
    model, slots = _grown_model()
    with torch.no_grad():
        # Labels the model gets right as is, so removing a seed costs accuracy.
        batches = [(x, model(x).argmax(-1)) for x, _ in _batches(4)]

    @torch.no_grad()
    def accuracy() -> float:
        hits = sum(int((model(x).argmax(-1) == y).sum()) for x, y in batches)
        return hits / sum(y.numel() for _, y in batches)

    expected = {}
    as_is = accuracy()
    for slot in slots:
        with slot.force_alpha(0.0):
            expected[slot.slot_id] = as_is - accuracy()

    got = _trainer(model).counterfactuals(batches, slots)
    assert got.keys() == expected.keys()
    for sid, value in expected.items():
        assert got[sid] == pytest.approx(value, abs=1e-12)
    assert any(v > 0 for v in got.values())
    assert model.slot("r0c1").alpha == pytest.approx(0.5)  # nothing about the slots changed


def test_counterfactuals_of_a_transformer_equal_separate_passes() -> None:
    host = TransformerHost(vocab_size=11, n_embd=16, n_head=2, n_layer=2, block_size=8)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))
    x = torch.randint(0, 11, (4, 8))
    grow(model, "r0c0", "mlp_small", SeedStage.HOLDING, x)
    _influential_seeds(model)
    model.eval()
    slot = model.slot("r0c0")
    with torch.no_grad():
        batches = [(x, model(x).argmax(-1))]
        with slot.force_alpha(0.0):
            without = (model(x).argmax(-1) == batches[0][1]).double().mean().item()
    got = _trainer(model).counterfactuals(batches, [slot])
    assert got["r0c0"] == pytest.approx(1.0 - without, abs=1e-12)


def test_no_slots_no_counterfactual_pass() -> None:
    assert _trainer(_cnn()).counterfactuals(iter(()), []) == {}


def test_evaluate_reports_mean_loss_and_accuracy() -> None:
    model = _cnn()
    batches = _batches(3)
    metrics = _trainer(model).evaluate(model, batches)
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(x) for x, _ in batches])
    y = torch.cat([y for _, y in batches])
    assert metrics.loss == pytest.approx(cross_entropy(logits, y).item(), rel=1e-5)
    assert metrics.accuracy == pytest.approx((logits.argmax(-1) == y).double().mean().item())


def test_train_epoch_updates_host_and_seed() -> None:
    model = _cnn()
    grow(model, "r0c1", "conv_light", SeedStage.TRAINING, torch.randn(2, 1, 8, 8))
    trainer = _trainer(model)
    trainer.groups.sync(model)
    host_before = [p.detach().clone() for p in model.get_host_parameters()]
    seed_before = [p.detach().clone() for p in model.get_seed_parameters()]
    metrics = trainer.train_epoch(model, _batches(2))
    assert metrics.loss > 0 and 0.0 <= metrics.accuracy <= 1.0
    assert any(not torch.equal(a, p) for a, p in zip(host_before, model.get_host_parameters(), strict=True))
    assert any(not torch.equal(a, p) for a, p in zip(seed_before, model.get_seed_parameters(), strict=True))


def test_empty_split_is_an_error() -> None:
    with pytest.raises(ValueError, match="no batches"):
        _trainer(_cnn()).evaluate(_cnn(), [])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_autocast_train_step_on_a_tiny_model(amp: str) -> None:
    model = _cnn()
    grow(model, "r0c0", "conv_light", SeedStage.BLENDING, torch.randn(2, 1, 8, 8))
    trainer = _trainer(model, amp=amp)
    trainer.groups.sync(model)
    assert trainer.scaler.is_enabled() is (amp == "fp16")
    before = [p.detach().clone() for p in model.parameters()]

    metrics = trainer.train_epoch(model, _batches(2, b=8))
    val = trainer.evaluate(model, _batches(1, b=8, seed=2))

    assert torch.isfinite(torch.tensor([metrics.loss, val.loss])).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32
    assert all(torch.isfinite(p).all() for p in model.parameters())
    changed = [not torch.equal(a, p) for a, p in zip(before, model.parameters(), strict=True)]
    assert sum(changed) >= len(changed) // 2
    state = trainer.state_dict()
    assert set(state) == {"optimizer", "scaler"}
    if amp == "fp16":
        assert state["scaler"]["scale"] > 1.0
