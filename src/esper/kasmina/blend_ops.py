"""Pure tensor blend operators: how seed features are mixed into host features.

dtype rules: under AMP the host and seed features can arrive in
different dtypes and alpha is usually an fp32 scalar. ``torch.lerp`` needs ``end`` to match
``start`` and a weight that is not 0-dim to match too, while a 0-dim weight of any float dtype
is accepted. So these ops convert the seed features (and a non-0-dim alpha or gate) to the host
dtype only when it differs, never convert a 0-dim alpha, spend at most one clamp on alpha (and
gate) and call one ``lerp``. The result always has ``host_features.dtype``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "blend_add",
    "blend_gate",
    "blend_multiply",
    "gate_effective_alpha",
    "multiply_valve_multiplier",
]

Alpha = Tensor | float
_is_compiling = torch.compiler.is_compiling


def _like(t: Tensor, ref: Tensor) -> Tensor:
    """``t`` in ``ref``'s dtype, converting only when it differs."""
    return t if t.dtype == ref.dtype else t.to(ref.dtype)


def _clamped(alpha: Alpha) -> Alpha:
    """Alpha clamped to [0, 1]; a Python float stays a float (no tensor is made).

    A 0-dim CPU alpha already in [0, 1] is returned as is: reading a CPU scalar is no device
    sync and costs ~0.2 µs, a clamp kernel ~1.8 µs (as much as a lerp over 1e4 elements).
    Deliberately not done for other devices (a sync), under torch.compile (a graph break) or
    when the value cannot be read (vmap, fake tensors): those clamp.
    """
    if isinstance(alpha, Tensor):
        if alpha.dim() == 0 and alpha.is_cpu and alpha.is_floating_point() and not _is_compiling():
            try:
                value = alpha.item()
            except RuntimeError:
                pass
            else:
                if 0.0 <= value <= 1.0:  # False for NaN: the clamp keeps it NaN
                    return alpha
        return alpha.clamp(0.0, 1.0)
    if math.isnan(alpha):
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return min(max(float(alpha), 0.0), 1.0)


def _weight_for(alpha: Alpha, host: Tensor) -> Alpha:
    """A lerp weight for ``host``: a 0-dim tensor or float as is, else in the host dtype."""
    if isinstance(alpha, Tensor) and alpha.dim() != 0:
        return _like(alpha, host)
    return alpha


def blend_add(host_features: Tensor, seed_features: Tensor, alpha: Alpha) -> Tensor:
    """``lerp(host, seed, alpha)``: the host at alpha 0 and the seed at alpha 1, exactly.

    Args:
        host_features: host activations, e.g. ``(B, C, H, W)`` or ``(B, T, C)``.
        seed_features: seed activations of the same shape, any float dtype.
        alpha: float, 0-dim tensor, ``[1]`` or per-sample ``[B, 1, 1, 1]`` / ``[B, 1, 1]``;
            clamped to [0, 1].
    """
    weight = _weight_for(_clamped(alpha), host_features)
    return torch.lerp(host_features, _like(seed_features, host_features), weight)


def multiply_valve_multiplier(alpha: Alpha, seed_modulation: Tensor) -> Tensor:
    """``1 + alpha * tanh(m)``: a multiplier bounded in [1 - alpha, 1 + alpha]."""
    return 1.0 + _clamped(alpha) * torch.tanh(seed_modulation)


def blend_multiply(
    host_features: Tensor,
    seed_features: Tensor,
    alpha: Alpha,
    *,
    seed_input: Tensor | None = None,
) -> Tensor:
    """``h * (1 + alpha * tanh(s - ref))`` with ``ref = seed_input`` if given, else ``h``.

    A residual seed that starts as the identity (``s == seed_input``) leaves the host unchanged
    at any alpha; alpha 0 is the host exactly.
    """
    seed = _like(seed_features, host_features)
    ref = host_features if seed_input is None else _like(seed_input, host_features)
    weight = _weight_for(_clamped(alpha), host_features)
    return host_features * (1.0 + weight * torch.tanh(seed - ref))


def gate_effective_alpha(alpha: Alpha, gate: Tensor) -> Tensor:
    """``clamp(clamp(alpha) * clamp(gate))`` in [0, 1], shaped like ``gate``."""
    return (_clamped(alpha) * gate.clamp(0.0, 1.0)).clamp(0.0, 1.0)


def blend_gate(host_features: Tensor, seed_features: Tensor, alpha: Alpha, gate: Tensor) -> Tensor:
    """Lerp with the gated alpha: per-sample ``gate`` (e.g. ``[B, 1, 1, 1]``) scales alpha."""
    weight = _weight_for(gate_effective_alpha(alpha, gate), host_features)
    return torch.lerp(host_features, _like(seed_features, host_features), weight)
