"""Blend operators against fp64 references, over every dtype / alpha-shape / autocast combination.

Tolerances: the inputs are first rounded to their own dtype and the fp64 reference is computed from
those rounded values, so the only error left is the op's own rounding (a handful of roundings in
the host dtype, plus the conversion of the seed and a non-0-dim alpha to it). With unit roundoff
u = 2^-24 (fp32), 2^-11 (fp16), 2^-8 (bf16), a few u relative to the magnitude of the values gives
1e-6, 2e-3 and 2e-2.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from torch import Tensor

from esper.kasmina.blend_ops import (
    blend_add,
    blend_gate,
    blend_multiply,
    gate_effective_alpha,
    multiply_valve_multiplier,
)

from .helpers import DTYPES

TOL = {torch.float32: 1e-6, torch.float16: 2e-3, torch.bfloat16: 2e-2}
NAMES = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
OPS = ("add", "multiply", "multiply_seed_input", "gate")
ALPHA_SHAPES = ("0-dim", "[1]", "per-sample")
AUTOCAST = (None, torch.bfloat16, torch.float16)
B = 2


def _tol(*dtypes: torch.dtype) -> float:
    return max(TOL[d] for d in dtypes)


def _alpha(shape: str, rank: int, dtype: torch.dtype, values: tuple[float, float] = (0.3, 0.8)) -> Tensor:
    if shape == "0-dim":
        return torch.tensor(values[0], dtype=dtype)
    if shape == "[1]":
        return torch.tensor([values[0]], dtype=dtype)
    return torch.tensor(values, dtype=dtype).view(B, *([1] * (rank - 1)))  # (B, 1, 1, 1) / (B, 1, 1)


def _shape(rank: int) -> tuple[int, ...]:
    return (B, 3, 4, 4) if rank == 4 else (B, 5, 3)


def _autocast(dtype: torch.dtype | None, device: str = "cpu") -> contextlib.AbstractContextManager[object]:
    return contextlib.nullcontext() if dtype is None else torch.autocast(device, dtype=dtype)


def _run(op: str, h: Tensor, s: Tensor, alpha: Tensor, gate: Tensor, x: Tensor) -> Tensor:
    if op == "add":
        return blend_add(h, s, alpha)
    if op == "multiply":
        return blend_multiply(h, s, alpha)
    if op == "multiply_seed_input":
        return blend_multiply(h, s, alpha, seed_input=x)
    return blend_gate(h, s, alpha, gate)


def _reference(op: str, h: Tensor, s: Tensor, alpha: Tensor, gate: Tensor, x: Tensor) -> Tensor:
    """The DESIGN formulas in fp64 (all arguments already fp64)."""
    a = alpha.clamp(0.0, 1.0)
    if op == "add":
        return h + a * (s - h)
    if op in ("multiply", "multiply_seed_input"):
        ref = x if op == "multiply_seed_input" else h
        return h * (1.0 + a * torch.tanh(s - ref))
    effective = (a * gate.clamp(0.0, 1.0)).clamp(0.0, 1.0)
    return h + effective * (s - h)


def _assert_close(actual: Tensor, expected: Tensor, tol: float, what: str) -> None:
    scale = max(1.0, expected.abs().max().item())
    torch.testing.assert_close(
        actual.double(), expected, rtol=tol, atol=tol * scale, msg=lambda m: f"{what}: {m}"
    )


def _cases() -> Iterator[tuple[int, torch.dtype | None]]:
    return itertools.product((4, 3), AUTOCAST)


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("alpha_shape", ALPHA_SHAPES)
@pytest.mark.parametrize("alpha_dtype", DTYPES, ids=NAMES.get)
@pytest.mark.parametrize("seed_dtype", DTYPES, ids=NAMES.get)
@pytest.mark.parametrize("host_dtype", DTYPES, ids=NAMES.get)
def test_forward_and_backward_match_fp64_reference(host_dtype, seed_dtype, alpha_dtype, alpha_shape, op):
    _check_against_reference(host_dtype, seed_dtype, alpha_dtype, alpha_shape, op, "cpu")


@pytest.mark.gpu
def test_dtype_matrix_on_cuda():
    for combo in itertools.product(DTYPES, DTYPES, DTYPES, ALPHA_SHAPES, OPS):
        _check_against_reference(*combo, "cuda")


def _check_against_reference(
    host_dtype: torch.dtype,
    seed_dtype: torch.dtype,
    alpha_dtype: torch.dtype,
    alpha_shape: str,
    op: str,
    device: str,
) -> None:
    g = torch.Generator().manual_seed(1)
    for rank, autocast_dtype in _cases():
        shape = _shape(rank)
        h = torch.randn(shape, generator=g).to(device, host_dtype).requires_grad_()
        s = torch.randn(shape, generator=g).to(device, seed_dtype).requires_grad_()
        x = torch.randn(shape, generator=g).to(device, seed_dtype)
        alpha = _alpha(alpha_shape, rank, alpha_dtype).to(device)
        gate = _alpha("per-sample", rank, alpha_dtype, values=(0.9, 0.4)).to(device)
        upstream = torch.randn(shape, generator=g).to(device)

        with _autocast(autocast_dtype, device):
            out = _run(op, h, s, alpha, gate, x)
        assert out.dtype == host_dtype and out.device == h.device
        assert out.shape == shape
        out.backward(upstream.to(out.dtype))

        h64 = h.detach().double().requires_grad_()
        s64 = s.detach().double().requires_grad_()
        ref = _reference(op, h64, s64, alpha.double(), gate.double(), x.double())
        ref.backward(upstream.to(out.dtype).double())

        what = f"{op} {device} rank={rank} autocast={autocast_dtype}"
        fwd_tol, grad_dtypes = _tolerance_dtypes(op, host_dtype, alpha_dtype)
        _assert_close(out.detach(), ref.detach(), _tol(*fwd_tol), f"{what} forward")
        assert h.grad is not None and h.grad.dtype == host_dtype
        assert s.grad is not None and s.grad.dtype == seed_dtype
        _assert_close(h.grad, h64.grad, _tol(*grad_dtypes), f"{what} d/d host")
        _assert_close(s.grad, s64.grad, _tol(seed_dtype, *grad_dtypes), f"{what} d/d seed")


def _tolerance_dtypes(
    op: str, host: torch.dtype, alpha: torch.dtype
) -> tuple[tuple[torch.dtype, ...], tuple[torch.dtype, ...]]:
    """The dtypes whose rounding is part of the op, for the forward and for the gradients.

    Always the host's. GATE's effective alpha is ``alpha * gate`` in their own (promoted) dtype,
    as pinned, so its rounding there is part of the op. And autograd's ``lerp`` backward forms
    ``1 - weight`` in the weight's dtype (a 0-dim weight is never converted, by design), so the
    lerp-based ops' gradients carry the alpha dtype's rounding; MULTIPLY's do not.
    """
    if op == "gate":
        return (host, alpha), (host, alpha)
    if op == "add":
        return (host,), (host, alpha)
    return (host,), (host,)


@pytest.mark.parametrize("alpha_dtype", DTYPES, ids=NAMES.get)
@pytest.mark.parametrize("seed_dtype", DTYPES, ids=NAMES.get)
@pytest.mark.parametrize("host_dtype", DTYPES, ids=NAMES.get)
def test_exact_host_at_alpha_zero_and_seed_at_alpha_one(host_dtype, seed_dtype, alpha_dtype):
    _check_exact_ends(host_dtype, seed_dtype, alpha_dtype, "cpu")


@pytest.mark.gpu
def test_exact_ends_on_cuda():
    for combo in itertools.product(DTYPES, DTYPES, DTYPES):
        _check_exact_ends(*combo, "cuda")


def _check_exact_ends(
    host_dtype: torch.dtype, seed_dtype: torch.dtype, alpha_dtype: torch.dtype, device: str
) -> None:
    g = torch.Generator().manual_seed(2)
    for rank, autocast_dtype in _cases():
        shape = _shape(rank)
        h = torch.randn(shape, generator=g).to(device, host_dtype)
        s = torch.randn(shape, generator=g).to(device, seed_dtype)
        x = torch.randn(shape, generator=g).to(device, seed_dtype)
        s_as_host = s.to(host_dtype)
        ones = _alpha("per-sample", rank, alpha_dtype, values=(1.0, 1.0)).to(device)
        some_gate = _alpha("per-sample", rank, alpha_dtype, values=(0.9, 0.4)).to(device)
        with _autocast(autocast_dtype, device):
            for shape_name in ALPHA_SHAPES:
                zero = _alpha(shape_name, rank, alpha_dtype, values=(0.0, 0.0)).to(device)
                one = _alpha(shape_name, rank, alpha_dtype, values=(1.0, 1.0)).to(device)
                for a0, a1 in ((zero, one), (0.0, 1.0)):
                    assert torch.equal(blend_add(h, s, a0), h)
                    assert torch.equal(blend_multiply(h, s, a0), h)
                    assert torch.equal(blend_multiply(h, s, a0, seed_input=x), h)
                    assert torch.equal(blend_gate(h, s, a0, some_gate), h)
                    assert torch.equal(blend_gate(h, s, a1, ones * 0), h)
                    assert torch.equal(blend_add(h, s, a1), s_as_host)
                    assert torch.equal(blend_gate(h, s, a1, ones), s_as_host)


@pytest.mark.parametrize("fn", ["add", "multiply", "gate", "valve", "gate_alpha"])
def test_alpha_outside_unit_interval_is_clamped(fn):
    g = torch.Generator().manual_seed(3)
    h, s = torch.randn(B, 3, 4, 4, generator=g), torch.randn(B, 3, 4, 4, generator=g)
    gate = torch.tensor([0.9, 0.4]).view(B, 1, 1, 1)

    def call(alpha):
        if fn == "add":
            return blend_add(h, s, alpha)
        if fn == "multiply":
            return blend_multiply(h, s, alpha)
        if fn == "gate":
            return blend_gate(h, s, alpha, gate)
        if fn == "valve":
            return multiply_valve_multiplier(alpha, s)
        return gate_effective_alpha(alpha, gate)

    for low, high in ((-0.5, 1.7), (-1e30, float("inf"))):
        assert torch.equal(call(low), call(0.0))
        assert torch.equal(call(high), call(1.0))
        assert torch.equal(call(torch.tensor(low)), call(torch.tensor(0.0)))
        assert torch.equal(call(torch.tensor(high)), call(torch.tensor(1.0)))
        per_sample = torch.tensor([low, high]).view(B, 1, 1, 1)
        assert torch.equal(call(per_sample), call(torch.tensor([0.0, 1.0]).view(B, 1, 1, 1)))


def test_gate_effective_alpha_clamps_alpha_and_gate():
    gate = torch.tensor([-1.0, 0.0, 0.25, 0.5, 1.0, 3.0])
    assert torch.equal(gate_effective_alpha(0.5, gate), torch.tensor([0.0, 0.0, 0.125, 0.25, 0.5, 0.5]))
    assert torch.equal(gate_effective_alpha(2.0, gate), torch.tensor([0.0, 0.0, 0.25, 0.5, 1.0, 1.0]))
    assert gate_effective_alpha(0.5, gate).shape == gate.shape


@pytest.mark.parametrize(
    "call",
    [
        lambda a, h, s: blend_add(h, s, a),
        lambda a, h, s: blend_multiply(h, s, a),
        lambda a, h, s: blend_multiply(h, s, a, seed_input=s),
        lambda a, h, s: blend_gate(h, s, a, torch.ones(B, 1, 1, 1)),
        lambda a, h, s: multiply_valve_multiplier(a, s),
        lambda a, h, s: gate_effective_alpha(a, torch.ones(B, 1, 1, 1)),
    ],
    ids=["add", "multiply", "multiply_seed_input", "gate", "valve", "gate_alpha"],
)
def test_nan_float_alpha_is_a_value_error(call):
    h, s = torch.randn(B, 3, 4, 4), torch.randn(B, 3, 4, 4)
    with pytest.raises(ValueError, match="alpha"):
        call(float("nan"), h, s)


# ----------------------------------------------------------------- property tests (hypothesis)
_F32 = st.floats(-1e6, 1e6, width=32, allow_nan=False)
_UNIT = st.floats(0.0, 1.0, allow_nan=False)


def _as_tensor_alpha(a: float, kind: str) -> float | Tensor:
    if kind == "float":
        return a
    return torch.tensor(a) if kind == "0-dim" else torch.tensor([a])


@settings(max_examples=60, deadline=None)
@given(
    h=arrays(np.float32, (B, 6), elements=_F32),
    s=arrays(np.float32, (B, 6), elements=_F32),
    alpha=_UNIT,
    kind=st.sampled_from(["float", "0-dim", "[1]"]),
    gate=arrays(np.float32, (B, 1), elements=st.floats(0.0, 1.0, width=32)),
)
def test_add_and_gate_are_convex_mixes(h, s, alpha, kind, gate):
    ht, stt = torch.from_numpy(h), torch.from_numpy(s)
    lo, hi = torch.minimum(ht, stt), torch.maximum(ht, stt)
    a = _as_tensor_alpha(alpha, kind)
    for out in (blend_add(ht, stt, a), blend_gate(ht, stt, a, torch.from_numpy(gate))):
        assert out.dtype == torch.float32
        assert bool(((lo <= out) & (out <= hi)).all()), (out, lo, hi)


@settings(max_examples=60, deadline=None)
@given(
    m=arrays(np.float32, (8,), elements=st.floats(width=32, allow_nan=False, allow_infinity=False)),
    alpha=_UNIT,
    kind=st.sampled_from(["float", "0-dim"]),
)
def test_multiply_multiplier_is_bounded(m, alpha, kind):
    mult = multiply_valve_multiplier(_as_tensor_alpha(alpha, kind), torch.from_numpy(m))
    # The bounds as fp32 arithmetic computes them (1 +/- alpha rounded the same way as the op).
    a32 = torch.tensor(alpha, dtype=torch.float32)
    lo, hi = 1.0 - a32, 1.0 + a32
    assert bool(((lo <= mult) & (mult <= hi)).all()), (mult, lo, hi)


@settings(max_examples=60, deadline=None)
@given(
    dtype=st.sampled_from(DTYPES),
    op=st.sampled_from(OPS),
    data=st.data(),
    alpha=st.floats(allow_nan=False),
)
def test_no_nan_for_finite_inputs(dtype, op, data, alpha):
    # Up to a quarter of the dtype's range, so that the op's own arithmetic (s - h, h * 2) cannot
    # overflow: finite inputs, finite output.
    bound = float(torch.finfo(dtype).max) / 4
    elements = st.floats(-bound, bound, width=32, allow_nan=False)
    h = torch.from_numpy(data.draw(arrays(np.float32, (B, 4), elements=elements))).to(dtype)
    s = torch.from_numpy(data.draw(arrays(np.float32, (B, 4), elements=elements))).to(dtype)
    x = torch.from_numpy(data.draw(arrays(np.float32, (B, 4), elements=elements))).to(dtype)
    gate = torch.tensor([0.3, 1.0]).view(B, 1)
    for a in (alpha, torch.tensor(alpha)):
        out = _run(op, h, s, a, gate, x)
        assert out.dtype == dtype
        assert not bool(out.isnan().any()), (op, h, s, a, out)
