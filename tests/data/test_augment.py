"""RandomCropFlip: torchvision's crop-with-padding and flip semantics, batched and seeded."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from esper.data import RandomCropFlip


def _reference(x: torch.Tensor, top: int, left: int, flip: bool, padding: int) -> torch.Tensor:
    """One image the slow, obvious way: zero-pad, crop at (top, left), then maybe mirror."""
    h, w = x.shape[-2:]
    crop = F.pad(x, (padding,) * 4)[..., top : top + h, left : left + w]
    return crop.flip(-1) if flip else crop


@pytest.mark.parametrize("padding", [0, 1, 4])
def test_apply_matches_the_per_image_reference(padding):
    aug = RandomCropFlip(padding)
    x = torch.randn(20, 2, 6, 7)
    params = aug.draw(20, torch.Generator().manual_seed(padding))
    out = aug.apply(x, params)
    assert out.shape == x.shape and out.dtype == x.dtype
    for i, (top, left, flip) in enumerate(params.tolist()):
        assert torch.equal(out[i], _reference(x[i], top, left, bool(flip), padding))


def test_draw_covers_every_offset_and_both_flips():
    params = RandomCropFlip(4).draw(2000, torch.Generator().manual_seed(0))
    assert params.shape == (2000, 3) and params.dtype == torch.int64
    assert set(params[:, 0].tolist()) == set(range(9)) == set(params[:, 1].tolist())
    assert set(params[:, 2].tolist()) == {0, 1}


def test_draw_comes_only_from_the_generator():
    aug = RandomCropFlip()
    a = aug.draw(64, torch.Generator().manual_seed(5))
    torch.manual_seed(77)
    b = aug.draw(64, torch.Generator().manual_seed(5))
    c = aug.draw(64, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_uint8_images_keep_dtype_and_pad_with_black():
    aug = RandomCropFlip(4)
    x = torch.randint(1, 256, (16, 3, 32, 32), dtype=torch.uint8)
    out = aug.apply(x, aug.draw(16, torch.Generator().manual_seed(0)))
    assert out.dtype == torch.uint8 and out.min() == 0
    assert (out[..., 4:28, 4:28] > 0).all()  # the centre always comes from the image


def test_offset_at_padding_without_flip_is_the_identity():
    aug = RandomCropFlip(3)
    x = torch.randn(4, 3, 5, 5)
    assert torch.equal(aug.apply(x, torch.tensor([[3, 3, 0]] * 4)), x)
    assert torch.equal(aug.apply(x, torch.tensor([[3, 3, 1]] * 4)), x.flip(-1))


@pytest.mark.parametrize("bad", [-1, 2.0, True])
def test_bad_padding_is_refused(bad):
    with pytest.raises(ValueError, match=r"padding=.*int >= 0"):
        RandomCropFlip(bad)
