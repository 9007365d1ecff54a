"""Width blueprints: grow the host layer before a slot instead of adding a residual module.

cnn: ``widen`` doubles the block's output channels (``k = C``), ``widen_half`` adds ``C // 2``;
transformer: ``widen_mlp`` adds ``n_embd`` hidden units to the block's MLP. Each takes an
optional ``max_width`` keyword (refuse to grow the producer beyond it).
"""

from __future__ import annotations

from esper.kasmina.blueprints.registry import BlueprintRegistry

__all__: list[str] = []


def _conv_site_params(dim: int, k: int) -> int:
    """3x3 conv rows from ``dim`` channels, BatchNorm affine, 3x3 reader columns to ``dim``."""
    return k * (9 * dim + 2 + 9 * dim)


BlueprintRegistry.register_width(
    "widen",
    "cnn",
    units=lambda c: c,
    param_estimate=lambda c: _conv_site_params(c, c),
    description="double the block's output channels (new channels' outgoing weights start at 0)",
)
BlueprintRegistry.register_width(
    "widen_half",
    "cnn",
    units=lambda c: max(1, c // 2),
    param_estimate=lambda c: _conv_site_params(c, max(1, c // 2)),
    description="add C/2 output channels to the block (outgoing weights start at 0)",
)
BlueprintRegistry.register_width(
    "widen_mlp",
    "transformer",
    units=lambda c: c,
    # fc1 rows (c weights + a bias each) and fc2 columns (c weights each) for c hidden units.
    param_estimate=lambda c: c * (c + 1 + c),
    description="add n_embd hidden units to the block's MLP (fc2 columns start at 0)",
)
