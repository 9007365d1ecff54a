"""OptimizerSet: seeds join on germinate and leave on prune; the host's optimizer state is untouched."""

from __future__ import annotations

import pytest
import torch
from tolaria_kit import backward_once, grow

from esper import CNNHost, MorphogeneticModel, QualityGates
from esper.leyline.stages import SeedStage
from esper.tolaria.optim import OptimizerSet

X = torch.randn(4, 1, 8, 8)


def _model() -> MorphogeneticModel:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    return MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))


def _step(model: MorphogeneticModel, opts: OptimizerSet) -> None:
    opts.zero_grad()
    backward_once(model, X)
    for opt in opts.all():
        opt.step()


def _host_state(opts: OptimizerSet) -> dict[int, dict[str, torch.Tensor]]:
    return {id(p): dict(s) for p, s in opts.host.state.items()}


def test_host_and_seed_parameters_are_in_separate_optimizers() -> None:
    model = _model()
    opts = OptimizerSet(model, lr=1e-3, weight_decay=0.0)
    host_ids = {id(p) for g in opts.host.param_groups for p in g["params"]}
    assert host_ids == {id(p) for p in model.get_host_parameters()}
    assert opts.seeds == {}


def test_a_seed_joins_on_germinate_without_touching_the_host_state() -> None:
    model = _model()
    opts = OptimizerSet(model, lr=1e-3, weight_decay=0.0)
    _step(model, opts)
    before = _host_state(opts)
    copies = {pid: {k: v.clone() for k, v in s.items()} for pid, s in before.items()}
    host_opt = opts.host

    model.germinate_seed("conv_light", slot="r0c1")
    opts.sync(model)

    assert set(opts.seeds) == {"r0c1"}
    seed_ids = [id(p) for g in opts.seeds["r0c1"].param_groups for p in g["params"]]
    assert seed_ids == [id(p) for p in model.get_seed_parameters("r0c1")]
    assert opts.host is host_opt
    after = _host_state(opts)
    assert after.keys() == before.keys()
    for pid, state in after.items():
        for key, tensor in state.items():
            assert tensor is before[pid][key]  # the very same state tensors ...
            assert torch.equal(tensor, copies[pid][key])  # ... with the same values


def test_a_seed_leaves_on_prune_and_the_host_state_stays() -> None:
    model = _model()
    opts = OptimizerSet(model, lr=1e-3, weight_decay=0.0)
    grow(model, "r0c0", "conv_light", SeedStage.BLENDING, X)
    opts.sync(model)
    _step(model, opts)
    assert opts.seeds["r0c0"].state  # the seed's optimizer has state
    before = _host_state(opts)

    assert model.prune_seed(slot="r0c0")
    opts.sync(model)

    assert opts.seeds == {}
    after = _host_state(opts)
    assert all(after[pid][k] is before[pid][k] for pid in before for k in before[pid])


def test_sync_keeps_an_optimizer_whose_parameters_did_not_change() -> None:
    model = _model()
    opts = OptimizerSet(model, lr=1e-3, weight_decay=0.0)
    grow(model, "r0c1", "conv_small", SeedStage.TRAINING, X)
    opts.sync(model)
    seed_opt = opts.seeds["r0c1"]
    _step(model, opts)
    opts.sync(model)
    assert opts.seeds["r0c1"] is seed_opt


def test_a_fossilized_seed_keeps_its_optimizer_and_keeps_training() -> None:
    model = _model()
    opts = OptimizerSet(model, lr=1e-2, weight_decay=0.0)
    grow(model, "r0c0", "conv_light", SeedStage.HOLDING, X)
    opts.sync(model)
    _step(model, opts)
    seed_opt = opts.seeds["r0c0"]
    state = {id(p): dict(s) for p, s in seed_opt.state.items()}

    slot = model.slot("r0c0")
    slot.record_contribution(0.1)
    assert slot.advance_stage(SeedStage.FOSSILIZED).passed
    opts.sync(model)

    assert opts.seeds["r0c0"] is seed_opt
    assert {id(p): dict(s) for p, s in seed_opt.state.items()}.keys() == state.keys()
    weights = [p.detach().clone() for p in model.get_seed_parameters("r0c0")]
    _step(model, opts)
    assert any(not torch.equal(w, p) for w, p in zip(weights, model.get_seed_parameters("r0c0"), strict=True))


def test_state_dict_round_trip_rebuilds_the_seed_optimizers() -> None:
    model = _model()
    opts = OptimizerSet(model, lr=1e-3, weight_decay=0.0)
    grow(model, "r0c1", "conv_light", SeedStage.BLENDING, X)
    opts.sync(model)
    _step(model, opts)
    saved = opts.state_dict()

    fresh = OptimizerSet(model, lr=1e-3, weight_decay=0.0)
    fresh.load_state_dict(saved, model)
    assert set(fresh.seeds) == {"r0c1"}
    a, b = opts.seeds["r0c1"].state_dict()["state"], fresh.seeds["r0c1"].state_dict()["state"]
    assert all(torch.equal(a[i]["exp_avg"], b[i]["exp_avg"]) for i in a)


def test_loading_state_for_other_seeds_is_an_error() -> None:
    model = _model()
    opts = OptimizerSet(model, lr=1e-3, weight_decay=0.0)
    saved = opts.state_dict()
    model.germinate_seed("conv_light", slot="r0c0")
    with pytest.raises(ValueError, match="optimizer state has seeds"):
        opts.load_state_dict(saved, model)
