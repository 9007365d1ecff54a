"""Registry-driven blueprint tests (timm style): every registered seed is tested for free.

Residual seeds are modules of their own and are tested alone; width blueprints grow the host,
so they are tested through a model (and in depth in ``test_width.py``).
"""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from esper.errors import UnknownBlueprintError, WidthGrowthError
from esper.kasmina.blueprints import TOPOLOGIES, BlueprintRegistry
from esper.kasmina.host import CNNHost, MorphogeneticModel, TransformerHost
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.stages import SeedStage

from .helpers import FAST_GATES, drive, host_input, tiny_cnn_host, tiny_transformer_host

SPECS = [spec for topology in TOPOLOGIES for spec in BlueprintRegistry.list_for_topology(topology)]
SPEC_IDS = [f"{s.topology}-{s.name}" for s in SPECS]
RESIDUAL = [s for s in SPECS if not s.is_width]
RESIDUAL_IDS = [f"{s.topology}-{s.name}" for s in RESIDUAL]
WIDTH = [s for s in SPECS if s.is_width]
WIDTH_IDS = [f"{s.topology}-{s.name}" for s in WIDTH]
REQUIRED = {
    "cnn": {"noop", "norm", "attention", "depthwise", "bottleneck", "conv_small", "conv_light", "conv_heavy"},
    "transformer": {"noop", "norm", "lora", "lora_large", "attention", "mlp_small", "mlp"},
}
REQUIRED_WIDTH = {"cnn": {"widen", "widen_half"}, "transformer": {"widen_mlp"}}
DIM = 8


def _input(topology: str, dim: int = DIM, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    shape = (2, dim, 4, 4) if topology == "cnn" else (2, 5, dim)
    return torch.randn(shape).to(dtype)


def _perturb(module: nn.Module, scale: float = 0.3) -> None:
    """Move every parameter off its initial value (so the seed is no longer the identity)."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_registry_holds_the_required_blueprints(topology):
    specs = BlueprintRegistry.list_for_topology(topology)
    names = [s.name for s in specs]
    assert REQUIRED[topology] <= set(names)
    assert {s.name for s in specs if s.is_width} == REQUIRED_WIDTH[topology]
    assert names == sorted(names) == BlueprintRegistry.names(topology)
    for spec in specs:
        assert spec.topology == topology
        assert isinstance(spec.description, str) and spec.description
        assert BlueprintRegistry.get(topology, spec.name) is spec


@pytest.mark.parametrize("spec", RESIDUAL, ids=RESIDUAL_IDS)
@pytest.mark.parametrize("dim", [1, 3, 4, 8, 12, 32])
def test_param_estimate_is_the_real_parameter_count(spec, dim):
    seed = spec.create(dim)
    assert spec.param_estimate(dim) == sum(p.numel() for p in seed.parameters())
    again = BlueprintRegistry.create(spec.topology, spec.name, dim)
    assert again.state_dict().keys() == seed.state_dict().keys()


@pytest.mark.parametrize("spec", WIDTH, ids=WIDTH_IDS)
@pytest.mark.parametrize("dim", [1, 2, 4, 8])
def test_width_param_estimate_is_exact_at_a_square_site(spec, dim):
    """The registry's figure holds where the producer's input and the reader's output are ``dim``
    wide (the middle block of a constant-width CNN, any transformer MLP); the slot's is exact."""
    if spec.topology == "cnn":
        host = CNNHost(num_classes=3, n_blocks=3, base_channels=dim, pool_layers=0, widths=[dim] * 3)
    else:
        host = TransformerHost(vocab_size=11, n_embd=2 * dim, n_head=1, n_layer=3, block_size=8)
        dim = 2 * dim
    model = MorphogeneticModel(host)
    slot = model.slot("r0c1")
    estimate = slot.param_estimate(spec.name)
    slot.germinate(spec.name)
    assert spec.param_estimate(dim) == estimate == slot.seed_params
    for other in ("r0c0", "r0c2"):  # the edges: exact per slot
        edge = model.slot(other)
        estimate = edge.param_estimate(spec.name)
        edge.germinate(spec.name)
        assert estimate == edge.seed_params
    with pytest.raises(WidthGrowthError, match="germinate it in a MorphogeneticModel"):
        spec.create(dim)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("spec", RESIDUAL, ids=RESIDUAL_IDS)
def test_starts_as_identity_and_runs_forward_backward(spec, dtype):
    seed = spec.create(DIM).to(dtype)
    x = _input(spec.topology, dtype=dtype)
    out = seed(x)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.equal(out, x)  # zero-initialised last affine layer: exactly the identity

    _perturb(seed)
    x.requires_grad_()
    out = seed(x)
    assert (out.dtype == dtype and not torch.equal(out, x)) or not list(seed.parameters())
    out.float().square().mean().backward()
    assert x.grad is not None and bool(x.grad.isfinite().all())
    for name, p in seed.named_parameters():
        assert p.grad is not None, name
        assert bool(p.grad.isfinite().all()), name
        assert bool(p.grad.abs().sum() > 0), f"{name} gets no gradient"


@pytest.mark.parametrize("spec", RESIDUAL, ids=RESIDUAL_IDS)
def test_state_dict_round_trips(spec):
    original = spec.create(DIM)
    _perturb(original)
    buffer = io.BytesIO()
    torch.save(original.state_dict(), buffer)
    buffer.seek(0)
    copy = spec.create(DIM)
    copy.load_state_dict(torch.load(buffer, weights_only=True))
    for (k1, v1), (k2, v2) in zip(original.state_dict().items(), copy.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2)
    x = _input(spec.topology)
    assert torch.equal(original(x), copy(x))


@pytest.mark.parametrize("spec", [s for s in RESIDUAL if s.topology == "cnn"], ids=lambda s: s.name)
def test_cnn_seed_keeps_channels_last(spec):
    seed = spec.create(DIM)
    _perturb(seed)
    x = _input("cnn").to(memory_format=torch.channels_last)
    assert seed(x).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("spec", [s for s in RESIDUAL if s.topology == "transformer"], ids=lambda s: s.name)
def test_transformer_seed_is_causal(spec):
    seed = spec.create(DIM)
    _perturb(seed)
    x = _input("transformer")
    changed = x.clone()
    changed[:, -1] += 5.0
    # Earlier positions never see a later one.
    assert torch.allclose(seed(x)[:, :-1], seed(changed)[:, :-1], atol=1e-6)


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
def test_seed_is_the_identity_inside_a_model_at_alpha_one(spec, algorithm):
    host = tiny_cnn_host() if spec.topology == "cnn" else tiny_transformer_host()
    model = MorphogeneticModel(host, gates=FAST_GATES).eval()
    x = host_input(spec.topology)
    with torch.no_grad():
        expected = host(x)
    if spec.is_width and algorithm != AlphaAlgorithm.ADD:
        with pytest.raises(WidthGrowthError, match="ADD only"):
            model.slot("r0c0").germinate(spec.name, alpha_algorithm=algorithm)
        assert model.slot("r0c0").seed is None and model.slot("r0c0").stage == SeedStage.DORMANT
        return
    for slot in model.slots():
        drive(slot, SeedStage.BLENDING, spec.name, algorithm, model=model)
        slot.set_alpha(1.0)
    assert all(s.stage == SeedStage.BLENDING and s.alpha == 1.0 for s in model.slots())
    with torch.no_grad():
        assert torch.equal(model(x), expected)


def test_unknown_blueprint_lists_the_known_ones():
    with pytest.raises(UnknownBlueprintError) as err:
        BlueprintRegistry.get("cnn", "conv_smal")
    assert isinstance(err.value, ValueError)
    message = str(err.value)
    for name in BlueprintRegistry.names("cnn"):
        assert name in message
    assert "Did you mean 'conv_small'?" in message
    with pytest.raises(UnknownBlueprintError, match="lora"):
        BlueprintRegistry.create("transformer", "lorax", 8)
    with pytest.raises(UnknownBlueprintError):
        BlueprintRegistry.create("transformer", "conv_small", 8)  # a cnn-only name


def test_bad_topology_and_dim_are_value_errors():
    with pytest.raises(ValueError, match="topology"):
        BlueprintRegistry.list_for_topology("rnn")
    with pytest.raises(ValueError, match="topology"):
        BlueprintRegistry.get("rnn", "noop")
    for dim in (0, -4, 2.0, True):
        with pytest.raises(ValueError, match="dim"):
            BlueprintRegistry.create("cnn", "conv_small", dim)


def test_register_adds_a_blueprint_and_refuses_duplicates(monkeypatch):
    monkeypatch.setattr(BlueprintRegistry, "_specs", dict(BlueprintRegistry._specs))

    @BlueprintRegistry.register("twice", "cnn", param_estimate=lambda c: 0, description="test seed")
    def twice(dim: int) -> nn.Module:
        return nn.Identity()

    assert "twice" in BlueprintRegistry.names("cnn")
    assert "twice" not in BlueprintRegistry.names("transformer")
    with pytest.raises(ValueError, match="already registered"):
        BlueprintRegistry.register("twice", "cnn", param_estimate=lambda c: 0)(twice)
    with pytest.raises(ValueError, match="already registered"):
        BlueprintRegistry.register("noop", "transformer", param_estimate=lambda c: 0)(twice)
    with pytest.raises(ValueError, match="topology"):
        BlueprintRegistry.register("x", "rnn", param_estimate=lambda c: 0)
