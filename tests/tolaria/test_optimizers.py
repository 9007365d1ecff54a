"""SeedGroups: a seed's parameter group joins on germinate and leaves (with its state) on prune;
the host's groups and state are untouched; a scheduler keeps stepping across growth."""

from __future__ import annotations

import math

import pytest
import torch
from tolaria_kit import backward_once, grow

from esper import CNNHost, MorphogeneticModel, QualityGates
from esper.errors import ConfigError
from esper.leyline.stages import SeedStage
from esper.tolaria.optim import SLOT_KEY, SeedGroups, adamw, host_groups

X = torch.randn(4, 1, 8, 8)


def _model() -> MorphogeneticModel:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    return MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))


def _adamw(model: MorphogeneticModel, lr: float = 1e-3) -> SeedGroups:
    return SeedGroups(adamw(lr, 0.0)(host_groups(model.get_host_parameters())), model, None)


def _sgd(model: MorphogeneticModel, scheduler: bool = False) -> SeedGroups:
    opt = torch.optim.SGD(model.get_host_parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10) if scheduler else None
    return SeedGroups(opt, model, sched)


def _step(model: MorphogeneticModel, groups: SeedGroups) -> None:
    groups.optimizer.zero_grad()
    backward_once(model, X)
    groups.optimizer.step()


def _host_state(groups: SeedGroups, model: MorphogeneticModel) -> dict[int, dict[str, torch.Tensor]]:
    return {id(p): dict(groups.optimizer.state[p]) for p in model.get_host_parameters()}


@pytest.mark.parametrize("build", [_adamw, _sgd])
def test_a_seed_joins_and_leaves_without_touching_the_host_state(build) -> None:
    model = _model()
    groups = build(model)
    _step(model, groups)
    before = _host_state(groups, model)
    copies = {pid: {k: v.clone() for k, v in s.items()} for pid, s in before.items()}
    host_group = groups.optimizer.param_groups[0]

    grow(model, "r0c1", "conv_light", SeedStage.BLENDING, X)
    assert groups.sync(model)
    seed_group = groups.seed_groups()["r0c1"]
    assert [id(p) for p in seed_group["params"]] == [id(p) for p in model.get_seed_parameters("r0c1")]
    _step(model, groups)
    assert all(p in groups.optimizer.state for p in seed_group["params"])  # the seed has state now

    assert model.prune_seed(slot="r0c1")
    assert groups.sync(model)
    assert groups.seed_groups() == {}
    assert len(groups.optimizer.param_groups) == 1 and groups.optimizer.param_groups[0] is host_group
    assert all(p not in groups.optimizer.state for p in seed_group["params"])  # its state is gone
    held = {id(p) for g in groups.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()}  # exactly the live parameters
    # The host's state went on through the seed's life (one more step), and is its own.
    assert _host_state(groups, model).keys() == copies.keys()


def test_germinating_keeps_the_host_state_tensors_themselves() -> None:
    model = _model()
    groups = _adamw(model)
    _step(model, groups)
    before = _host_state(groups, model)
    copies = {pid: {k: v.clone() for k, v in s.items()} for pid, s in before.items()}
    model.germinate_seed("conv_light", slot="r0c1")
    groups.sync(model)
    for pid, state in _host_state(groups, model).items():
        for key, tensor in state.items():
            assert tensor is before[pid][key] and torch.equal(tensor, copies[pid][key])


def test_sync_keeps_a_group_whose_parameters_did_not_change() -> None:
    model = _model()
    groups = _adamw(model)
    grow(model, "r0c1", "conv_small", SeedStage.TRAINING, X)
    groups.sync(model)
    group = groups.seed_groups()["r0c1"]
    _step(model, groups)
    assert not groups.sync(model)
    assert groups.seed_groups()["r0c1"] is group


def test_a_fossilized_seed_keeps_its_group_and_keeps_training() -> None:
    model = _model()
    groups = _adamw(model, lr=1e-2)
    grow(model, "r0c0", "conv_light", SeedStage.HOLDING, X)
    groups.sync(model)
    _step(model, groups)
    group = groups.seed_groups()["r0c0"]
    slot = model.slot("r0c0")
    slot.record_contribution(0.1)
    assert slot.advance_stage(SeedStage.FOSSILIZED).passed
    groups.sync(model)
    assert groups.seed_groups()["r0c0"] is group
    weights = [p.detach().clone() for p in model.get_seed_parameters("r0c0")]
    _step(model, groups)
    assert any(not torch.equal(w, p) for w, p in zip(weights, model.get_seed_parameters("r0c0"), strict=True))


def test_a_cosine_schedule_keeps_stepping_across_growth_and_the_seed_follows_it() -> None:
    model = _model()
    groups = _sgd(model, scheduler=True)
    sched = groups.scheduler
    assert sched is not None
    expected = [0.1 * (1 + math.cos(math.pi * t / 10)) / 2 for t in range(11)]
    for t in range(1, 4):
        _step(model, groups)
        sched.step()
        assert groups.lr() == pytest.approx(expected[t])
    model.germinate_seed("conv_light", slot="r0c1")
    groups.sync(model)
    assert len(sched.base_lrs) == 2
    for t in range(4, 8):
        _step(model, groups)
        sched.step()
        lrs = [g["lr"] for g in groups.optimizer.param_groups]
        assert lrs == pytest.approx([expected[t], expected[t]])  # the seed's group follows the host's
    model.prune_seed(slot="r0c1")
    groups.sync(model)
    assert len(sched.base_lrs) == 1
    _step(model, groups)
    sched.step()
    assert groups.lr() == pytest.approx(expected[8])


def test_state_dict_round_trip_rebuilds_the_seed_groups_in_order() -> None:
    model = _model()
    groups = _adamw(model)
    grow(model, "r0c1", "conv_light", SeedStage.BLENDING, X)
    groups.sync(model)
    grow(model, "r0c0", "norm", SeedStage.TRAINING, X)
    groups.sync(model)  # groups join in the order seeds arrive
    _step(model, groups)
    saved = groups.state_dict()
    assert saved["seed_order"] == ["r0c1", "r0c0"]

    fresh = _adamw(model)
    fresh.load_state_dict(saved, model)
    assert [g.get(SLOT_KEY) for g in fresh.optimizer.param_groups] == [None, "r0c1", "r0c0"]
    a, b = groups.optimizer.state_dict()["state"], fresh.optimizer.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)


def test_loading_state_for_other_seeds_is_an_error() -> None:
    model = _model()
    groups = _adamw(model)
    saved = groups.state_dict()
    model.germinate_seed("conv_light", slot="r0c0")
    with pytest.raises(ValueError, match="optimizer state has seed groups"):
        groups.load_state_dict(saved, model)


def test_an_optimizer_that_does_not_hold_the_host_is_refused_by_name() -> None:
    model = _model()
    other = torch.nn.Linear(2, 2)
    with pytest.raises(ConfigError, match=r"does not hold .* host parameters \(blocks\.0\.0\.weight"):
        SeedGroups(torch.optim.SGD(other.parameters(), lr=0.1), model, None)


def test_an_optimizer_built_over_a_grown_model_keeps_its_seed_and_loses_it_on_prune() -> None:
    model = _model()
    grow(model, "r0c1", "conv_light", SeedStage.BLENDING, X)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)  # the seed is in the user's one group
    groups = SeedGroups(opt, model, None)
    assert len(opt.param_groups) == 1 and groups.seed_groups() == {}
    _step(model, groups)
    seed = list(model.get_seed_parameters("r0c1"))
    assert model.prune_seed(slot="r0c1")
    assert groups.sync(model)
    held = {id(p) for g in opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()} and all(p not in opt.state for p in seed)
