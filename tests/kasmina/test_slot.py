"""SeedSlot: forward by stage, the hot-path contract, isolation, memory format and bad input."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from esper.errors import IllegalTransitionError, ShapeError, UnknownBlueprintError
from esper.kasmina.blend_ops import blend_add, blend_gate, blend_multiply
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.slot import SeedSlot
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.stages import SeedStage

from .helpers import (
    DTYPES,
    FAST_GATES,
    OpCounter,
    assert_unchanged,
    backward_through,
    drive,
    features,
    host_input,
    snapshot,
    tiny_cnn_host,
    tiny_model,
    tiny_transformer_host,
)

NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
# Residual seeds only: a bare slot has no host to widen (width blueprints: test_width.py).
CNN_BLUEPRINTS = [s.name for s in BlueprintRegistry.list_for_topology("cnn") if not s.is_width]
FORBIDDEN_IN_HOT_PATH = {"to", "_to_copy", "copy_", "clamp", "clamp_", "clamp_min", "clamp_max", "empty"}


def _slot(topology: str = "cnn", channels: int = 8, **kw) -> SeedSlot:
    return SeedSlot("r0c1", channels, topology, gates=FAST_GATES, **kw)


def _perturb(module: nn.Module | None, scale: float = 0.3) -> None:
    if module is None:
        return
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


def _reference(slot: SeedSlot, x: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """What the slot's blend should be, through the public blend ops."""
    assert slot.seed is not None
    s = slot.seed(x)
    if slot.alpha_algorithm == AlphaAlgorithm.ADD:
        return blend_add(x, s, alpha)
    if slot.alpha_algorithm == AlphaAlgorithm.MULTIPLY:
        return blend_multiply(x, s, alpha, seed_input=x)
    assert slot.gate is not None
    return blend_gate(x, s, alpha, slot.gate.get_alpha_for_blend(x))


# ----------------------------------------------------------------- forward by stage
@pytest.mark.parametrize("topology", ["cnn", "transformer"])
@pytest.mark.parametrize("dtype", DTYPES, ids=NAMES.get)
@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
def test_blending_forward_matches_the_blend_ops(algorithm, dtype, topology):
    model = tiny_model(topology)
    slot = model.slot("r0c1")
    drive(slot, SeedStage.BLENDING, "conv_small" if topology == "cnn" else "mlp_small", algorithm)
    _perturb(slot.seed)
    _perturb(slot.gate, scale=1.0)
    slot.set_alpha(0.375)  # exactly representable in every dtype
    model.to(dtype)
    assert slot.alpha_tensor.dtype == torch.float32
    assert all(p.dtype == dtype for p in slot.seed_parameters())
    x = features(slot).to(dtype)
    with torch.no_grad():
        out = slot(x)
        assert out.dtype == dtype
        assert torch.equal(out, _reference(slot, x, slot.alpha_tensor))
        assert not torch.equal(out, x)
        # The cached per-dtype alpha follows later changes in place.
        slot.set_alpha(0.625)
        assert torch.equal(slot(x), _reference(slot, x, 0.625))
        slot.set_alpha(0.0)
        assert torch.equal(slot(x), x)


@pytest.mark.parametrize("dtype", DTYPES, ids=NAMES.get)
def test_blending_forward_is_close_to_fp64_at_any_alpha(dtype):
    slot = _slot()
    drive(slot, SeedStage.BLENDING, "conv_small", AlphaAlgorithm.ADD)
    _perturb(slot.seed)
    slot.set_alpha(0.3)
    slot.to(dtype)
    x = features(slot).to(dtype)
    with torch.no_grad():
        out = slot(x)
        s64 = slot.seed.double()(x.double())
    ref = x.double() + 0.3 * (s64 - x.double())
    tol = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}[dtype]
    scale = ref.abs().max().item()
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * scale)


@pytest.mark.parametrize("to", ["bf16", "half", "double", "float"])
def test_alpha_buffer_stays_fp32(to):
    model = tiny_model("cnn")
    slot = model.slot("r0c0")
    drive(slot, SeedStage.BLENDING, "conv_small")
    slot.set_alpha(0.3)
    if to == "bf16":
        model.to(torch.bfloat16)
    else:
        getattr(model, to)()
    assert slot.alpha_tensor.dtype == torch.float32
    assert slot.alpha_tensor.dim() == 0
    assert slot.alpha_tensor.item() == torch.tensor(0.3).item()
    assert model.state_dict()["seed_slots.r0c0.alpha_tensor"].dtype == torch.float32
    slot.set_alpha(0.7)
    assert slot.alpha_tensor.item() == torch.tensor(0.7).item()


def test_germinated_seed_follows_the_model_dtype():
    model = tiny_model("cnn").to(torch.bfloat16)
    slot = model.germinate_seed("conv_small", slot="r0c0", alpha_algorithm=AlphaAlgorithm.GATE)
    assert all(p.dtype == torch.bfloat16 for p in slot.seed_parameters())
    assert slot.alpha_tensor.dtype == torch.float32


@pytest.mark.parametrize("stage", [SeedStage.DORMANT, SeedStage.GERMINATED, SeedStage.PRUNED])
def test_passive_stages_return_the_host_features_untouched(stage):
    slot = _slot()
    if stage != SeedStage.DORMANT:
        drive(slot, SeedStage.GERMINATED)
    if stage == SeedStage.PRUNED:
        slot.prune()
    assert slot.stage == stage and not slot.active
    x = features(slot)
    with OpCounter() as ops:
        out = slot(x)
    assert out is x
    assert ops.names == []


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_training_is_straight_through(dtype, topology):
    host = tiny_cnn_host() if topology == "cnn" else tiny_transformer_host()
    bare = copy.deepcopy(host)
    from esper.kasmina.host import MorphogeneticModel

    model = MorphogeneticModel(host, gates=FAST_GATES).to(dtype)
    bare.to(dtype)
    for slot in model.slots():
        drive(slot, SeedStage.TRAINING, "conv_small" if topology == "cnn" else "mlp")
        _perturb(slot.seed)  # a seed whose output differs from its input
    x = host_input(topology)
    if topology == "cnn":
        x = x.to(dtype)
    out, expected = model(x), bare(x)
    assert out.dtype == dtype
    assert torch.equal(out, expected)  # exactly the bare host
    upstream = torch.randn_like(out)
    out.backward(upstream)
    expected.backward(upstream)
    for (name, p), q in zip(model.host.named_parameters(), bare.parameters(), strict=True):
        assert torch.equal(p.grad, q.grad), name  # the seed changes no host gradient
    for slot in model.slots():
        for name, p in slot.seed.named_parameters():
            assert p.grad is not None and bool(p.grad.abs().sum() > 0), name


def test_training_seed_input_is_detached_even_without_isolation():
    slot = _slot(isolate_blend_input=False)
    drive(slot, SeedStage.TRAINING)
    h = features(slot).requires_grad_()
    slot(h).sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))


@pytest.mark.parametrize("isolate", [True, False])
def test_blend_isolation_controls_gradient_into_host_features(isolate):
    slot = _slot(isolate_blend_input=isolate)
    assert slot.isolate_blend_input is isolate
    drive(slot, SeedStage.BLENDING, "conv_small")  # zero-initialised body: seed(x) == x
    slot.set_alpha(0.25)
    h = features(slot).requires_grad_()
    slot(h).sum().backward()
    # d/dh lerp(h, seed(h), a) = (1 - a) + a * d seed/dh; the second term only without isolation.
    expected = 1.0 if not isolate else 0.75
    assert torch.equal(h.grad, torch.full_like(h, expected))
    assert all(p.grad is not None for p in slot.seed.parameters())


def test_isolation_defaults_by_topology_and_setter():
    cnn, lm = tiny_model("cnn"), tiny_model("transformer")
    assert all(s.isolate_blend_input for s in cnn.slots())
    assert not any(s.isolate_blend_input for s in lm.slots())
    slot = cnn.slot("r0c0")
    drive(slot, SeedStage.BLENDING)
    slot.set_alpha(0.25)
    slot.isolate_blend_input = False
    h = features(slot).requires_grad_()
    slot(h).sum().backward()
    assert torch.equal(h.grad, torch.ones_like(h))


def test_fossilized_seed_input_is_not_detached():
    slot = _slot(isolate_blend_input=True)
    drive(slot, SeedStage.FOSSILIZED, "conv_small")
    assert slot.alpha == 1.0
    h = features(slot).requires_grad_()
    slot(h).sum().backward()
    # At alpha 1 the host term vanishes: all of h's gradient comes through the seed.
    assert torch.equal(h.grad, torch.ones_like(h))


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
@pytest.mark.parametrize("blueprint", CNN_BLUEPRINTS)
def test_channels_last_is_kept_through_the_blend(blueprint, algorithm):
    slot = _slot()
    drive(slot, SeedStage.BLENDING, blueprint, algorithm)
    _perturb(slot.seed)
    _perturb(slot.gate)
    slot.set_alpha(0.375)
    x = features(slot)
    with torch.no_grad():
        out_cl = slot(x.to(memory_format=torch.channels_last))
        assert out_cl.is_contiguous(memory_format=torch.channels_last)
        assert slot.seed(x.to(memory_format=torch.channels_last)).is_contiguous(
            memory_format=torch.channels_last
        )
        torch.testing.assert_close(out_cl, slot(x), rtol=1e-5, atol=1e-5)


def test_force_alpha_overrides_without_changing_state():
    slot = _slot()
    drive(slot, SeedStage.BLENDING, "conv_small")
    _perturb(slot.seed)
    slot.set_alpha(0.5)
    x = features(slot)
    before = snapshot(slot)
    with torch.no_grad():
        with slot.force_alpha(0.0):
            assert torch.equal(slot(x), x)
        with slot.force_alpha(torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)):
            out = slot(x)
        assert torch.equal(out[0], x[0])
        assert torch.equal(out[1], slot.seed(x)[1])
        assert torch.equal(slot(x), blend_add(x, slot.seed(x), 0.5))
    assert_unchanged(slot, before)


# ----------------------------------------------------------------- alpha schedule through the slot
def test_blending_ramps_alpha_with_step_epoch():
    slot = _slot()
    drive(slot, SeedStage.TRAINING)
    backward_through(slot)
    slot.step_epoch()
    slot.state.blend_tempo_epochs = 4
    assert slot.advance_stage().passed
    assert slot.stage == SeedStage.BLENDING and slot.alpha == 0.0
    seen = []
    for _ in range(4):
        slot.step_epoch()
        seen.append(slot.alpha)
        assert slot.alpha_tensor.item() == torch.tensor(slot.alpha).item()
    assert seen == [0.25, 0.5, 0.75, 1.0]
    slot.step_epoch()
    assert slot.alpha == 1.0


def test_set_alpha_target_in_holding_goes_back_to_blending():
    slot = _slot()
    drive(slot, SeedStage.HOLDING, tempo=2)
    assert slot.alpha == 1.0
    slot.set_alpha_target(0.5, steps=2, alpha_curve=AlphaCurve.LINEAR)
    assert slot.stage == SeedStage.BLENDING
    assert not slot.advance_stage().passed  # G3: not at target yet
    slot.step_epoch()
    assert slot.alpha == 0.75
    slot.step_epoch()
    assert slot.alpha == 0.5 and slot.alpha_tensor.item() == 0.5
    assert slot.advance_stage().passed and slot.stage == SeedStage.HOLDING
    slot.set_alpha_target(0.25, steps=0)
    assert slot.alpha == 0.25 and slot.stage == SeedStage.BLENDING


@pytest.mark.parametrize(
    ("value", "expected"), [(0.3, 0.3), (-2.0, 0.0), (7.0, 1.0), (float("inf"), 1.0), (float("-inf"), 0.0)]
)
def test_set_alpha_clamps(value, expected):
    slot = _slot()
    drive(slot, SeedStage.BLENDING)
    slot.set_alpha(value)
    assert slot.alpha == expected
    assert slot.alpha_tensor.item() == torch.tensor(expected).item()


# ----------------------------------------------------------------- hot path
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_blending_add_forward_is_one_lerp_and_no_conversion(dtype):
    model = tiny_model("cnn")
    slot = model.slot("r0c1")
    drive(slot, SeedStage.BLENDING, "noop")
    slot.set_alpha(0.3)
    model.to(dtype)
    x = features(slot).to(dtype)
    slot(x)  # the first call in a new dtype may make the alpha copy
    slot.set_alpha(0.6)  # updated in place: still no conversion afterwards
    for _ in range(2):
        with OpCounter() as ops:
            slot(x)
        assert ops.names.count("lerp") == 1, ops.names
        assert not FORBIDDEN_IN_HOT_PATH & set(ops.names), ops.names
    # ... and through the whole model, the slot adds exactly that.
    images = host_input("cnn").to(dtype)
    with OpCounter() as bare:
        model.host(images)
    with OpCounter() as full:
        model(images)
    extra = list(full.names)
    for name in bare.names:
        extra.remove(name)
    assert sorted(extra) == sorted(ops.names)


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_dormant_slots_add_no_ops_over_the_bare_host(topology):
    model = tiny_model(topology)
    x = host_input(topology)
    with OpCounter() as bare:
        expected = model.host(x)
    with OpCounter() as full:
        out = model(x)
    assert full.names == bare.names
    assert torch.equal(out, expected)
    # Also once a seed has come and gone (PRUNED ... DORMANT) and while GERMINATED.
    slot = model.slot("r0c0")
    drive(slot, SeedStage.GERMINATED)
    with OpCounter() as germinated:
        model(x)
    assert germinated.names == bare.names
    slot.prune()
    while slot.stage != SeedStage.DORMANT:
        with OpCounter() as pruned:
            model(x)
        assert pruned.names == bare.names
        slot.step_epoch()


@pytest.mark.slow
def test_compiled_model_does_not_recompile_while_alpha_ramps():
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    try:
        model = tiny_model("cnn").eval()
        slot = model.slot("r0c1")
        drive(slot, SeedStage.BLENDING, "conv_small", tempo=5)
        _perturb(slot.seed)
        counter = CompileCounter()
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        x = host_input("cnn")
        with torch.no_grad():
            assert torch.equal(compiled(x), model(x))
            assert counter.frame_count == 1
            alphas = []
            while slot.alpha < 1.0:
                slot.step_epoch()
                alphas.append(slot.alpha)
                assert torch.equal(compiled(x), model(x))
            assert len(alphas) == 5
            assert counter.frame_count == 1  # no recompile as alpha ramps
            slot.set_alpha(0.125)
            assert torch.equal(compiled(x), model(x))
            assert counter.frame_count == 1
            assert slot.advance_stage().passed  # a stage change may recompile once
            assert torch.equal(compiled(x), model(x))
            assert counter.frame_count <= 2
    finally:
        torch._dynamo.reset()


# ----------------------------------------------------------------- bad input
def test_germinate_into_an_occupied_slot_names_slot_and_stage():
    slot = _slot()
    drive(slot, SeedStage.TRAINING)
    before = snapshot(slot)
    with pytest.raises(IllegalTransitionError, match=r"'r0c1'.*TRAINING") as err:
        slot.germinate("norm")
    assert isinstance(err.value, RuntimeError)
    assert_unchanged(slot, before)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"blueprint_id": "no_such_seed"},
        {"blueprint_id": "lora"},  # a transformer blueprint in a cnn slot
        {"blueprint_id": "norm", "blend_tempo_epochs": 0},
        {"blueprint_id": "norm", "blend_tempo_epochs": -3},
        {"blueprint_id": "norm", "blend_tempo_epochs": 2.5},
        {"blueprint_id": "norm", "blend_tempo_epochs": True},
        {"blueprint_id": "norm", "alpha_algorithm": 9},
        {"blueprint_id": "norm", "alpha_curve": 0},
        {"blueprint_id": "norm", "blueprint_kwargs": {"bogus": 1}},
    ],
)
def test_bad_germinate_arguments_leave_the_slot_empty(kwargs):
    slot = _slot()
    before = snapshot(slot)
    with pytest.raises((ValueError, TypeError)) as err:
        slot.germinate(**kwargs)
    if kwargs["blueprint_id"] != "norm":
        assert isinstance(err.value, UnknownBlueprintError)
        assert "conv_small" in str(err.value)  # lists the known names
    assert_unchanged(slot, before)
    assert slot.seed is None and slot.state.germinations == 0


@pytest.mark.parametrize(
    ("stage", "target", "error"),
    [
        (SeedStage.DORMANT, None, IllegalTransitionError),
        (SeedStage.DORMANT, SeedStage.TRAINING, IllegalTransitionError),
        (SeedStage.GERMINATED, SeedStage.BLENDING, IllegalTransitionError),
        (SeedStage.TRAINING, SeedStage.FOSSILIZED, IllegalTransitionError),
        (SeedStage.TRAINING, SeedStage.TRAINING, IllegalTransitionError),
        (SeedStage.BLENDING, SeedStage.TRAINING, IllegalTransitionError),
        (SeedStage.FOSSILIZED, None, IllegalTransitionError),
        (SeedStage.FOSSILIZED, SeedStage.PRUNED, IllegalTransitionError),
        (SeedStage.PRUNED, SeedStage.EMBARGOED, IllegalTransitionError),
        (SeedStage.TRAINING, SeedStage.UNKNOWN, IllegalTransitionError),
        (SeedStage.TRAINING, 99, ValueError),
        (SeedStage.TRAINING, "BLENDING", ValueError),
    ],
)
def test_illegal_transitions_raise_and_change_nothing(stage, target, error):
    slot = _slot()
    if stage == SeedStage.PRUNED:
        drive(slot, SeedStage.TRAINING)
        slot.prune()
    elif stage != SeedStage.DORMANT:
        drive(slot, stage)
    before = snapshot(slot)
    with pytest.raises(error) as err:
        slot.advance_stage(target)
    if error is IllegalTransitionError:
        assert "'r0c1'" in str(err.value) and stage.name in str(err.value)
    assert_unchanged(slot, before)


def test_set_alpha_nan_and_bad_targets_change_nothing():
    slot = _slot()
    drive(slot, SeedStage.BLENDING)
    slot.step_epoch()
    before = snapshot(slot)
    with pytest.raises(ValueError, match="alpha"):
        slot.set_alpha(float("nan"))
    assert_unchanged(slot, before)
    for target, steps in ((float("nan"), 2), (0.5, -1), (0.5, 1.5)):
        with pytest.raises(ValueError):
            slot.set_alpha_target(target, steps=steps)
        assert_unchanged(slot, before)
    training = _slot()
    drive(training, SeedStage.TRAINING)
    before = snapshot(training)
    with pytest.raises(IllegalTransitionError, match="TRAINING"):
        training.set_alpha_target(0.5, steps=2)
    assert_unchanged(training, before)


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_wrong_feature_shape_is_a_shape_error_giving_the_expected_shape(topology):
    slot = _slot(topology)
    drive(slot, SeedStage.BLENDING, "norm")
    bad = (
        [torch.randn(2, 5, 4, 4), torch.randn(2, 8, 4), torch.randn(2, 8)]
        if topology == "cnn"
        else [torch.randn(2, 5, 7), torch.randn(2, 5, 8, 1), torch.randn(8)]
    )
    before = snapshot(slot)
    for x in bad:
        with pytest.raises(ShapeError, match="C=8") as err:
            slot(x)
        assert isinstance(err.value, ValueError)
        assert str(tuple(x.shape)) in str(err.value)
    assert_unchanged(slot, before)


@pytest.mark.parametrize("kwargs", [{"topology": "rnn"}, {"channels": 0}, {"channels": -4}])
def test_bad_slot_constructor_arguments(kwargs):
    args = {"slot_id": "r0c0", "channels": 8, "topology": "cnn", **kwargs}
    with pytest.raises(ValueError):
        SeedSlot(**args)


def test_germinate_names_and_counts_seeds():
    slot = _slot()
    slot.germinate("norm", "my-seed")
    assert slot.state.seed_id == "my-seed" and slot.state.blueprint_id == "norm"
    assert slot.seed_params == 2 * 8
    slot.prune()
    for _ in range(FAST_GATES.embargo_epochs + 2):
        slot.step_epoch()
    assert slot.stage == SeedStage.DORMANT
    slot.germinate("conv_small")
    assert slot.state.germinations == 2
    assert slot.state.seed_id == "r0c1-conv_small-2"


# ----------------------------------------------------------------- devices (GPU tests skip without CUDA)
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
def test_slot_forward_on_device_matches_the_ops_in_every_dtype(algorithm, device):
    model = tiny_model("cnn")
    slot = model.slot("r0c1")
    drive(slot, SeedStage.BLENDING, "conv_small", algorithm)
    _perturb(slot.seed)
    _perturb(slot.gate)
    slot.set_alpha(0.375)
    model.to(device)
    assert slot.alpha_tensor.device.type == device and slot.alpha_tensor.dtype == torch.float32
    for dtype in (*DTYPES, torch.float32):  # and back: the alpha copies follow every change
        model.to(dtype)
        assert slot.alpha_tensor.dtype == torch.float32 and slot.alpha_tensor.item() == 0.375
        x = features(slot).to(device, dtype)
        with torch.no_grad():
            out = slot(x)
            assert out.dtype == dtype and out.device.type == device
            assert torch.equal(out, _reference(slot, x, slot.alpha_tensor))
    # fp32 weights under autocast, forward and backward through the whole model.
    images = host_input("cnn").to(device)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = model(images)
    out.float().square().mean().backward()
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in slot.seed_parameters())


@pytest.mark.parametrize("device", DEVICES)
def test_alpha_copy_per_dtype_on_device(device):
    model = tiny_model("cnn")
    slot, valued = model.slot("r0c1"), model.slot("r0c0")
    drive(slot, SeedStage.BLENDING, "noop")
    drive(valued, SeedStage.BLENDING, "conv_small")
    _perturb(valued.seed)
    model.to(device)
    for dtype in DTYPES:
        model.to(dtype)
        assert slot.alpha_tensor.dtype == torch.float32
        x = features(slot).to(device, dtype)
        v = features(valued).to(device, dtype)
        for s in (slot, valued):
            s.set_alpha(0.25)
        slot(x), valued(v)  # the first forward in a dtype may make its alpha copy
        for s in (slot, valued):
            s.set_alpha(0.75)  # in place: no new copy, no conversion on the next forward
        with OpCounter() as ops:
            slot(x)
        assert ops.names.count("lerp") == 1
        assert not FORBIDDEN_IN_HOT_PATH & set(ops.names), ops.names
        with torch.no_grad():
            assert torch.equal(valued(v), blend_add(v, valued.seed(v), 0.75))
            with valued.force_alpha(0.5):
                assert torch.equal(valued(v), blend_add(v, valued.seed(v), 0.5))
            assert torch.equal(valued(v), blend_add(v, valued.seed(v), 0.75))
        assert slot.alpha_tensor.item() == valued.alpha_tensor.item() == 0.75


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_non_finite_contribution_is_refused_and_changes_nothing(value: float) -> None:
    slot = _slot()
    slot.record_contribution(0.25)
    with pytest.raises(ValueError, match="finite"):
        slot.record_contribution(value)
    assert slot.state.metrics.counterfactual_contribution == 0.25
    assert slot.state.metrics.history == [0.25]
