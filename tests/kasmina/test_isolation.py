"""Gradient isolation: the straight-through incubator and the isolated blend."""

from __future__ import annotations

import pytest
import torch

from esper.kasmina.blend_ops import blend_add
from esper.kasmina.isolation import blend_with_isolation, ste_forward

from .helpers import DTYPES, OpCounter


@pytest.mark.parametrize("seed_dtype", DTYPES)
@pytest.mark.parametrize("host_dtype", DTYPES)
def test_ste_forward_is_the_host_exactly_and_backward_reaches_the_seed(host_dtype, seed_dtype):
    g = torch.Generator().manual_seed(0)
    host = torch.randn(2, 3, 4, 4, generator=g).to(host_dtype).requires_grad_()
    seed = (torch.randn(2, 3, 4, 4, generator=g) * 100).to(seed_dtype).requires_grad_()
    out = ste_forward(host, seed)
    assert out.dtype == host_dtype
    assert torch.equal(out, host)
    upstream = torch.randn(2, 3, 4, 4, generator=g).to(host_dtype)
    out.backward(upstream)
    assert torch.equal(host.grad, upstream)
    # The seed sees the host's output gradient, as if it had been added.
    assert seed.grad is not None and seed.grad.dtype == seed_dtype
    assert torch.equal(seed.grad, upstream.to(seed_dtype))


def test_ste_forward_never_converts_matching_dtypes():
    host, seed = torch.randn(2, 3), torch.randn(2, 3)
    with OpCounter() as ops:
        ste_forward(host, seed)
    assert not {"to", "_to_copy", "copy_"} & set(ops.names), ops.names


def test_blend_with_isolation_is_blend_add():
    h, s = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    for alpha in (0.0, 0.3, torch.tensor(0.7), torch.tensor([0.2, 0.9]).view(2, 1, 1, 1), 1.5):
        assert torch.equal(blend_with_isolation(h, s, alpha), blend_add(h, s, alpha))
