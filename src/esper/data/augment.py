"""Batched image augmentation on tensors (no torchvision), seeded only by a torch.Generator.

An augmentation draws the parameters of a whole epoch at once (`draw`) and applies a batch's
rows of them (`apply`). Drawing per epoch means one host-to-device copy per epoch; a draw per
batch on a CPU generator would be a copy, and so a host-device sync, per batch on a GPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.functional import pad


@dataclass(frozen=True)
class RandomCropFlip:
    """Random crop with zero padding, then a random horizontal flip, per image.

    The same as torchvision's `RandomCrop(size, padding)` followed by
    `RandomHorizontalFlip()`, done for a whole batch with one gather. Apply it before
    normalisation so the zero padding is black, as there.

    Args:
        padding: pixels of zero padding on each side; offsets are uniform in [0, 2 * padding].
    """

    padding: int = 4

    def __post_init__(self) -> None:
        if isinstance(self.padding, bool) or not isinstance(self.padding, int) or self.padding < 0:
            raise ValueError(f"padding={self.padding!r} is invalid: expected an int >= 0.")

    def draw(self, n: int, generator: torch.Generator) -> Tensor:
        """Parameters for `n` images, int64 (n, 3): crop top, crop left, flip (0 or 1).

        Drawn on the generator's device, so a seed gives the same epoch on any data device.
        """
        offsets = torch.randint(0, 2 * self.padding + 1, (n, 2), generator=generator, device=generator.device)
        flips = torch.randint(0, 2, (n, 1), generator=generator, device=generator.device)
        return torch.cat([offsets, flips], dim=1)

    def apply(self, x: Tensor, params: Tensor) -> Tensor:
        """Crop and flip images (B, C, H, W), any dtype, with their rows of `draw` (B, 3)."""
        b, c, h, w = x.shape
        p = self.padding
        padded = pad(x, (p, p, p, p))  # (B, C, H + 2p, W + 2p)
        rows = params[:, 0:1] + torch.arange(h, device=x.device)  # (B, H)
        cols = torch.arange(w, device=x.device)
        flip = params[:, 2:3].bool()
        cols = torch.where(flip, cols.flip(0), cols) + params[:, 1:2]  # (B, W)
        batch_idx = torch.arange(b, device=x.device)[:, None, None, None]
        chan_idx = torch.arange(c, device=x.device)[None, :, None, None]
        return padded[batch_idx, chan_idx, rows[:, None, :, None], cols[:, None, None, :]]
