"""Checkpoints: save mid-lifecycle, load into a fresh seedless model, continue bit-identically."""

from __future__ import annotations

import copy

import pytest
import torch

from esper.errors import CheckpointError
from esper.kasmina.host import CNNHost, MorphogeneticModel, TransformerHost
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.stages import SeedStage

from .helpers import FAST_GATES, assert_model_unchanged, backward_through, drive, host_input, model_snapshot

CASES = [
    ("cnn", AlphaAlgorithm.ADD),
    ("cnn", AlphaAlgorithm.MULTIPLY),
    ("cnn", AlphaAlgorithm.GATE),
    ("transformer", AlphaAlgorithm.ADD),
    ("transformer", AlphaAlgorithm.MULTIPLY),
    ("transformer", AlphaAlgorithm.GATE),
]


def _host(topology: str) -> CNNHost | TransformerHost:
    if topology == "cnn":
        return CNNHost(num_classes=3, n_blocks=2, base_channels=4, in_channels=3)
    return TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=2, block_size=8)


def _loss(model: MorphogeneticModel, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    if out.dim() == 3:  # language model: next-token loss on the inputs themselves
        return torch.nn.functional.cross_entropy(out.flatten(0, 1), x.flatten())
    return torch.nn.functional.cross_entropy(out, torch.arange(out.shape[0]) % out.shape[1])


def _train(model: MorphogeneticModel, opt: torch.optim.Optimizer, batches: list[torch.Tensor]) -> None:
    for x in batches:
        opt.zero_grad(set_to_none=True)
        _loss(model, x).backward()
        opt.step()


def _grown(topology: str, algorithm: AlphaAlgorithm) -> MorphogeneticModel:
    """A model with a seed mid-BLENDING in r0c0 and one in TRAINING in r0c1."""
    model = MorphogeneticModel(_host(topology), gates=FAST_GATES)
    r0c0, r0c1 = model.slot("r0c0"), model.slot("r0c1")
    drive(r0c0, SeedStage.TRAINING, None, algorithm)
    r0c0.state.blend_tempo_epochs = 5
    r0c0.state.alpha_controller.alpha_curve = AlphaCurve.COSINE
    backward_through(r0c0)
    r0c0.step_epoch()
    assert r0c0.advance_stage().passed
    r0c0.step_epoch()
    r0c0.step_epoch()
    assert r0c0.stage == SeedStage.BLENDING and 0.0 < r0c0.alpha < 1.0
    drive(r0c1, SeedStage.TRAINING, "noop" if topology == "cnn" else "lora")
    return model


def _assert_same_tensors(a: MorphogeneticModel, b: MorphogeneticModel) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for k, v in sa.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, sb[k]), k
        else:
            assert v == sb[k], k


@pytest.mark.parametrize(("topology", "algorithm"), CASES, ids=[f"{t}-{a.name}" for t, a in CASES])
def test_resume_mid_blending_is_bit_identical(tmp_path, topology, algorithm):
    model = _grown(topology, algorithm)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(7)
    batches = [host_input(topology, 4, generator=g) for _ in range(6)]
    _train(model, opt, batches[:2])  # the seed's weights move off their initial values

    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "optim": opt.state_dict(), "config": model.config()}, path)
    data = torch.load(path, weights_only=True)

    fresh = MorphogeneticModel(_host(topology), slots=data["config"]["slots"], gates=FAST_GATES)
    assert all(s.seed is None for s in fresh.slots())
    fresh.load_state_dict(data["model"])
    for sid in ("r0c0", "r0c1"):
        a, b = model.slot(sid), fresh.slot(sid)
        assert b.stage == a.stage and b.alpha == a.alpha
        assert b.get_extra_state() == a.get_extra_state()
        assert type(b.seed) is type(a.seed) and (b.gate is None) == (a.gate is None)
        assert b.alpha_tensor.dtype == torch.float32
    _assert_same_tensors(model, fresh)

    x = batches[2]
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x), fresh(x))
    model.train(), fresh.train()

    for m in (model, fresh):
        m.slot("r0c0").step_epoch()
    assert fresh.slot("r0c0").alpha == model.slot("r0c0").alpha

    fresh_opt = torch.optim.SGD(fresh.parameters(), lr=0.05, momentum=0.9)
    fresh_opt.load_state_dict(data["optim"])
    _train(model, opt, batches[2:4])
    _train(fresh, fresh_opt, batches[2:4])
    for m in (model, fresh):  # the TRAINING seed moves on after the resume, too
        m.slot("r0c1").step_epoch()
        assert m.slot("r0c1").advance_stage().passed
        m.slot("r0c0").step_epoch()
    _train(model, opt, batches[4:])
    _train(fresh, fresh_opt, batches[4:])
    _assert_same_tensors(model, fresh)
    for sid in ("r0c0", "r0c1"):
        assert fresh.slot(sid).state.to_dict() == model.slot(sid).state.to_dict()


def test_resume_mid_training_keeps_pending_gradient_statistics(tmp_path):
    # A checkpoint taken after a backward but before step_epoch() must not lose that backward.
    model = MorphogeneticModel(_host("cnn"), gates=FAST_GATES)
    slot = model.slot("r0c0")
    drive(slot, SeedStage.TRAINING)
    backward_through(slot)
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    fresh = MorphogeneticModel(_host("cnn"), gates=FAST_GATES)
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    for m in (model, fresh):
        m.slot("r0c0").step_epoch()
    assert fresh.slot("r0c0").state.to_dict() == model.slot("r0c0").state.to_dict()
    assert fresh.slot("r0c0").state.metrics.grad_steps_finite == 1
    assert fresh.slot("r0c0").advance_stage().passed


def test_fossilized_and_pruned_slots_round_trip(tmp_path):
    gates = FAST_GATES
    model = MorphogeneticModel(_host("transformer"), gates=gates)
    drive(model.slot("r0c0"), SeedStage.FOSSILIZED, "attention")
    drive(model.slot("r0c1"), SeedStage.TRAINING, "mlp")
    model.slot("r0c1").prune("bad")
    model.slot("r0c1").step_epoch()
    torch.save(model.state_dict(), tmp_path / "ckpt.pt")
    fresh = MorphogeneticModel(_host("transformer"), gates=gates)
    fresh.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True))
    assert fresh.slot("r0c0").stage == SeedStage.FOSSILIZED and fresh.count_fossilized_seeds() == 1
    assert fresh.slot("r0c1").stage == SeedStage.EMBARGOED and fresh.slot("r0c1").seed is None
    assert fresh.slot("r0c1").state.metrics.prune_reason == "bad"
    _assert_same_tensors(model, fresh)
    x = host_input("transformer")
    assert torch.equal(model(x), fresh(x))


def test_loading_into_a_model_that_has_other_seeds_replaces_them():
    source = _grown("cnn", AlphaAlgorithm.ADD)
    target = MorphogeneticModel(_host("cnn"), gates=FAST_GATES)
    drive(target.slot("r0c0"), SeedStage.HOLDING, "conv_heavy", AlphaAlgorithm.GATE)
    target.load_state_dict(source.state_dict())
    _assert_same_tensors(source, target)
    assert target.slot("r0c0").gate is None and target.slot("r0c0").state.blueprint_id == "conv_small"
    x = host_input("cnn")
    source.eval(), target.eval()
    with torch.no_grad():
        assert torch.equal(source(x), target(x))


# ----------------------------------------------------------------- bad checkpoints
def _set(key: str, value: object):
    return lambda extra: extra.__setitem__(key, value)


# name -> how it damages the saved state of slot r0c1
_DAMAGE = {
    "stage-5": _set("stage", 5),  # not a SeedStage value
    "stage-99": _set("stage", 99),
    "stage-unknown": _set("stage", 0),
    "missing-key": lambda extra: extra.pop("metrics"),
    "missing-controller-key": lambda extra: extra["alpha_controller"].pop("alpha_mode"),
    "nan-alpha": lambda extra: extra["alpha_controller"].__setitem__("alpha", float("nan")),
    "unknown-blueprint": _set("blueprint_id", "no_such_seed"),
    "stage-without-blueprint": _set("blueprint_id", None),
    "dormant-with-blueprint": _set("stage", int(SeedStage.DORMANT)),
    "version": _set("version", 999),
    "bad-algorithm": _set("alpha_algorithm", 42),
}
CORRUPTIONS = ["missing", "not-a-dict", *_DAMAGE]


def _corrupt(name: str, state: dict) -> dict:
    state = copy.deepcopy(state)
    key = "seed_slots.r0c1._extra_state"
    if name == "missing":
        del state[key]
    elif name == "not-a-dict":
        state[key] = [1, 2, 3]
    else:
        _DAMAGE[name](state[key])
    return state


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_corrupted_slot_state_names_the_slot_and_changes_nothing(corruption):
    source = _grown("cnn", AlphaAlgorithm.MULTIPLY)
    state = _corrupt(corruption, source.state_dict())
    # The target has seeds of its own (a different blueprint in r0c0), so a half-done load shows.
    target = MorphogeneticModel(_host("cnn"), gates=FAST_GATES)
    drive(target.slot("r0c0"), SeedStage.BLENDING, "conv_light", AlphaAlgorithm.GATE)
    drive(target.slot("r0c1"), SeedStage.GERMINATED, "norm")
    before = model_snapshot(target)
    with pytest.raises(CheckpointError, match="'r0c1'") as err:
        target.load_state_dict(state)
    assert isinstance(err.value, ValueError)
    assert_model_unchanged(target, before)


@pytest.mark.parametrize("problem", ["wrong-shape", "missing-weight", "unexpected-key"])
def test_mismatched_weights_raise_and_change_nothing(problem):
    source = _grown("cnn", AlphaAlgorithm.ADD)
    state = dict(source.state_dict())
    key = "seed_slots.r0c0.seed.body.weight"
    if problem == "wrong-shape":
        state[key] = torch.zeros(3, 3, 1, 1)
    elif problem == "missing-weight":
        del state[key]
    else:
        state["seed_slots.r0c0.seed.extra"] = torch.zeros(1)
    target = MorphogeneticModel(_host("cnn"), gates=FAST_GATES)
    drive(target.slot("r0c0"), SeedStage.BLENDING, "conv_light", AlphaAlgorithm.GATE)
    before = model_snapshot(target)
    with pytest.raises(CheckpointError):
        target.load_state_dict(state)
    assert_model_unchanged(target, before)


def test_checkpoint_from_a_model_with_other_slots_is_refused():
    source = MorphogeneticModel(_host("cnn"), slots=["r0c1"], gates=FAST_GATES)
    target = MorphogeneticModel(_host("cnn"), gates=FAST_GATES)
    before = model_snapshot(target)
    with pytest.raises(CheckpointError, match="'r0c0'"):
        target.load_state_dict(source.state_dict())
    assert_model_unchanged(target, before)
