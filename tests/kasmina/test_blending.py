"""GatedBlend (the GATE algorithm's per-sample gate) and the blend catalog."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.kasmina.blending import BlendCatalog, GatedBlend


@pytest.mark.parametrize(
    ("topology", "x_shape", "gate_shape"),
    [("cnn", (3, 8, 4, 4), (3, 1, 1, 1)), ("transformer", (3, 5, 8), (3, 1, 1))],
)
def test_gate_is_per_sample_in_unit_interval_and_starts_at_one_half(topology, x_shape, gate_shape):
    blend = GatedBlend(8, topology)
    x = torch.randn(x_shape)
    gate = blend.get_alpha_for_blend(x)
    assert gate.shape == gate_shape
    assert torch.equal(gate, torch.full(gate_shape, 0.5))  # zero-initialised output layer
    assert torch.equal(blend(x), gate)


@settings(max_examples=30, deadline=None)
@given(scale=st.floats(1e-3, 1e4), topology=st.sampled_from(["cnn", "transformer"]), seed=st.integers(0, 99))
def test_gate_stays_in_unit_interval_for_any_weights(scale, topology, seed):
    g = torch.Generator().manual_seed(seed)
    blend = GatedBlend(8, topology)
    with torch.no_grad():
        for p in blend.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * scale)
    x = torch.randn((4, 8, 3, 3) if topology == "cnn" else (4, 5, 8), generator=g) * scale
    gate = blend.get_alpha_for_blend(x)
    assert bool(((gate >= 0) & (gate <= 1)).all())
    assert gate.shape[0] == 4 and gate.numel() == 4


def test_gate_depends_on_each_sample_and_learns():
    blend = GatedBlend(8, "cnn")
    with torch.no_grad():
        blend.fc2.weight.normal_()
    x = torch.randn(2, 8, 4, 4)
    x[1] *= 10
    gate = blend.get_alpha_for_blend(x)
    assert gate[0].item() != gate[1].item()
    gate.sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in blend.parameters())


def test_gate_follows_module_dtype():
    blend = GatedBlend(8, "transformer").to(torch.bfloat16)
    gate = blend.get_alpha_for_blend(torch.randn(2, 5, 8, dtype=torch.bfloat16))
    assert gate.dtype == torch.bfloat16


def test_nominal_schedule():
    blend = GatedBlend(4, total_steps=4)
    assert [blend.get_alpha(s) for s in (-1, 0, 1, 2, 4, 9)] == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]


@pytest.mark.parametrize(
    "kwargs",
    [{"channels": 0}, {"channels": 8, "topology": "rnn"}, {"channels": 8, "total_steps": 0}],
)
def test_bad_arguments_are_value_errors(kwargs):
    with pytest.raises(ValueError):
        GatedBlend(**kwargs)


def test_catalog_creates_and_lists():
    assert "gated" in BlendCatalog.list_algorithms()
    blend = BlendCatalog.create("gated", channels=8, topology="transformer")
    assert isinstance(blend, GatedBlend) and blend.topology == "transformer"
    with pytest.raises(ValueError, match="gated"):
        BlendCatalog.create("gatted", channels=8)
