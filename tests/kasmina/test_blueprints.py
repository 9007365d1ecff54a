"""Registry-driven blueprint tests (timm style): every registered seed is tested for free."""

from __future__ import annotations

import io

import pytest
import torch
from torch import nn

from esper.errors import UnknownBlueprintError
from esper.kasmina.blueprints import TOPOLOGIES, BlueprintRegistry
from esper.kasmina.host import MorphogeneticModel
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.stages import SeedStage

from .helpers import FAST_GATES, drive, host_input, tiny_cnn_host, tiny_transformer_host

SPECS = [spec for topology in TOPOLOGIES for spec in BlueprintRegistry.list_for_topology(topology)]
SPEC_IDS = [f"{s.topology}-{s.name}" for s in SPECS]
REQUIRED = {
    "cnn": {"noop", "norm", "attention", "depthwise", "bottleneck", "conv_small", "conv_light", "conv_heavy"},
    "transformer": {"noop", "norm", "lora", "lora_large", "attention", "mlp_small", "mlp"},
}
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
    assert names == sorted(names) == BlueprintRegistry.names(topology)
    for spec in specs:
        assert spec.topology == topology
        assert isinstance(spec.description, str) and spec.description
        assert BlueprintRegistry.get(topology, spec.name) is spec


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
@pytest.mark.parametrize("dim", [1, 3, 4, 8, 12, 32])
def test_param_estimate_is_the_real_parameter_count(spec, dim):
    seed = spec.create(dim)
    assert spec.param_estimate(dim) == sum(p.numel() for p in seed.parameters())
    again = BlueprintRegistry.create(spec.topology, spec.name, dim)
    assert again.state_dict().keys() == seed.state_dict().keys()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
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


@pytest.mark.parametrize("spec", SPECS, ids=SPEC_IDS)
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


@pytest.mark.parametrize("spec", [s for s in SPECS if s.topology == "cnn"], ids=lambda s: s.name)
def test_cnn_seed_keeps_channels_last(spec):
    seed = spec.create(DIM)
    _perturb(seed)
    x = _input("cnn").to(memory_format=torch.channels_last)
    assert seed(x).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("spec", [s for s in SPECS if s.topology == "transformer"], ids=lambda s: s.name)
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
    for slot in model.slots():
        drive(slot, SeedStage.BLENDING, spec.name, algorithm)
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
