"""MorphogeneticModel: slots, routing, parameter groups, dtypes and bad input."""

from __future__ import annotations

import json

import pytest
import torch

from esper.errors import CheckpointError, IllegalTransitionError, ShapeError, UnknownSlotError
from esper.kasmina.gates import QualityGates
from esper.kasmina.host import MorphogeneticModel
from esper.kasmina.slot import SeedSlot
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.stages import SeedStage

from .helpers import (
    FAST_GATES,
    assert_model_unchanged,
    drive,
    host_input,
    model_snapshot,
    tiny_cnn_host,
    tiny_model,
)


def _perturb_seeds(model: MorphogeneticModel) -> None:
    with torch.no_grad():
        for p in model.get_seed_parameters():
            p.add_(torch.randn_like(p) * 0.3)


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_default_slots_are_every_injection_point(topology):
    model = tiny_model(topology)
    assert list(model.seed_slots) == list(model.host.segment_channels) == ["r0c0", "r0c1"]
    assert model.topology == topology
    for sid, slot in model.seed_slots.items():
        assert isinstance(slot, SeedSlot)
        assert slot.channels == model.host.segment_channels[sid]
        assert slot.stage == SeedStage.DORMANT and slot.seed is None and slot.alpha == 0.0
    assert [s.slot_id for s in model.slots()] == ["r0c0", "r0c1"]
    assert model.gates is FAST_GATES and all(s.gates is FAST_GATES for s in model.slots())


def test_chosen_slots_only():
    host = tiny_cnn_host()
    model = MorphogeneticModel(host, slots=["r0c1"])
    assert model.host is host
    assert list(model.seed_slots) == ["r0c1"]
    assert model.gates == QualityGates()
    with pytest.raises(UnknownSlotError, match="r0c1"):
        model.slot("r0c0")


def test_unknown_slot_in_constructor_lists_known_and_suggests():
    with pytest.raises(UnknownSlotError) as err:
        MorphogeneticModel(tiny_cnn_host(), slots=["r0c0", "r0c7"])
    message = str(err.value)
    assert isinstance(err.value, ValueError)
    assert "'r0c7'" in message and "r0c0" in message and "r0c1" in message
    assert "Did you mean" in message
    with pytest.raises(ValueError, match="distinct"):
        MorphogeneticModel(tiny_cnn_host(), slots=["r0c0", "r0c0"])


@pytest.mark.parametrize(
    "call",
    [
        lambda m: m.slot("r0x1"),
        lambda m: m.germinate_seed("conv_small", slot="r0c3"),
        lambda m: m.prune_seed(slot="rc01"),
        lambda m: m.get_seed_parameters("r0c11"),
    ],
    ids=["slot", "germinate_seed", "prune_seed", "get_seed_parameters"],
)
def test_unknown_slot_lists_known_with_did_you_mean(call):
    model = tiny_model("cnn")
    drive(model.slot("r0c0"), SeedStage.TRAINING)
    before = model_snapshot(model)
    with pytest.raises(UnknownSlotError) as err:
        call(model)
    assert isinstance(err.value, ValueError)
    assert "['r0c0', 'r0c1']" in str(err.value)
    assert "Did you mean 'r0c" in str(err.value)
    assert_model_unchanged(model, before)


def test_germinate_and_prune_through_the_model():
    model = tiny_model("cnn")
    params_before = {id(p) for p in model.parameters()}
    slot = model.germinate_seed("conv_small", "s1", slot="r0c1", alpha_algorithm=AlphaAlgorithm.GATE)
    assert slot is model.slot("r0c1") and slot.stage == SeedStage.GERMINATED
    assert slot.state.seed_id == "s1"
    seed_params = model.get_seed_parameters("r0c1")
    assert seed_params == list(slot.seed_parameters()) and len(seed_params) > 2  # seed + gate
    assert model.get_seed_parameters() == seed_params
    assert model.active_seed_params == slot.seed_params == sum(p.numel() for p in seed_params)
    # Optimizer-visible: model.parameters() is exactly the host's plus the seed's.
    assert {id(p) for p in model.parameters()} == params_before | {id(p) for p in seed_params}
    assert model.get_host_parameters() == list(model.host.parameters())
    with pytest.raises(IllegalTransitionError, match=r"'r0c1'.*GERMINATED"):
        model.germinate_seed("norm", slot="r0c1")
    assert model.prune_seed(slot="r0c1") is True
    assert model.prune_seed(slot="r0c1") is False
    assert model.prune_seed(slot="r0c0") is False
    assert {id(p) for p in model.parameters()} == params_before
    assert model.active_seed_params == 0 and model.get_seed_parameters() == []


def test_count_fossilized_seeds():
    model = tiny_model("transformer", gates=QualityGates(min_training_epochs=0))
    assert model.count_fossilized_seeds() == 0
    drive(model.slot("r0c0"), SeedStage.FOSSILIZED, "lora")
    drive(model.slot("r0c1"), SeedStage.HOLDING, "norm")
    assert model.count_fossilized_seeds() == 1


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_a_blending_seed_changes_the_output_only_where_it_sits(topology):
    model = tiny_model(topology).eval()
    x = host_input(topology)
    drive(model.slot("r0c1"), SeedStage.BLENDING)
    with torch.no_grad():
        bare = model.host(x)
        assert torch.equal(model(x), bare)  # alpha 0
        _perturb_seeds(model)
        model.slot("r0c1").set_alpha(0.5)
        assert not torch.equal(model(x), bare)
        model.slot("r0c1").set_alpha(0.0)
        assert torch.equal(model(x), bare)


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_wrong_model_input_is_a_shape_error_giving_the_expected_shape(topology):
    model = tiny_model(topology)
    drive(model.slot("r0c0"), SeedStage.BLENDING)
    before = model_snapshot(model)
    bad = (
        [torch.randn(2, 1, 8, 8), torch.randn(3, 8, 8)]
        if topology == "cnn"
        else [torch.randint(0, 11, (2, 9)), torch.randn(2, 6)]
    )
    expected = r"\(B, 3, H, W\)" if topology == "cnn" else r"\(B, T\) with T <= 8"
    for x in bad:
        with pytest.raises(ShapeError, match=expected) as err:
            model(x)
        assert isinstance(err.value, ValueError)
    assert_model_unchanged(model, before)


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_forward_backward_in_bf16_and_under_autocast(topology, algorithm):
    model = tiny_model(topology)
    for slot in model.slots():
        drive(slot, SeedStage.BLENDING, None, algorithm)
        slot.set_alpha(0.5)
    _perturb_seeds(model)
    x = host_input(topology)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(g.isfinite().all()) for g in grads)
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())

    model.zero_grad(set_to_none=True)
    model.to(torch.bfloat16)
    if topology == "cnn":
        x = x.to(torch.bfloat16)
    out = model(x)
    assert out.dtype == torch.bfloat16
    out.float().square().mean().backward()
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in model.parameters())
    assert all(s.alpha_tensor.dtype == torch.float32 for s in model.slots())


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_config_round_trip(topology):
    model = tiny_model(topology, slots=["r0c1"])
    config = model.config()
    assert json.loads(json.dumps(config)) == config  # primitives only
    rebuilt = MorphogeneticModel.from_config(config)
    assert rebuilt.config() == config
    assert type(rebuilt.host) is type(model.host)
    assert list(rebuilt.seed_slots) == ["r0c1"]
    assert rebuilt.gates == model.gates
    # config + state_dict is a whole checkpoint: the rebuilt model grows the same seed back.
    drive(model.slot("r0c1"), SeedStage.BLENDING)
    _perturb_seeds(model)
    model.slot("r0c1").set_alpha(0.5)
    rebuilt.load_state_dict(model.state_dict())
    assert rebuilt.slot("r0c1").state.blueprint_id == model.slot("r0c1").state.blueprint_id
    x = host_input(topology)
    model.eval(), rebuilt.eval()
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


@pytest.mark.parametrize(
    "mutate",
    [
        lambda c: c.pop("host"),
        lambda c: c.pop("slots"),
        lambda c: c["gates"].update(bogus=1),
        lambda c: c["host"].update(bogus=1),
    ],
    ids=["no-host", "no-slots", "bad-gates", "bad-host-arg"],
)
def test_from_config_malformed_is_a_checkpoint_error(mutate):
    config = tiny_model("cnn").config()
    mutate(config)
    with pytest.raises(CheckpointError):
        MorphogeneticModel.from_config(config)
