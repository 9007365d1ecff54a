"""In-memory splits: coverage, reproducibility from the generator alone, windows, normalisation."""

from __future__ import annotations

import torch

from esper.data import ArraySplit, TokenSplit


def _index_split(n: int = 23, augment=None) -> ArraySplit:
    # x carries each example's own index, so a batch says exactly which examples it holds.
    x = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
    return ArraySplit(x, torch.arange(n), augment=augment)


def _epoch(split, seed: int, batch_size: int = 5) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [y for _, y in split.shuffled_batches(batch_size, gen, "cpu")]


def test_shuffled_epoch_sees_every_example_once_in_batches_of_batch_size():
    split = _index_split(23)
    batches = _epoch(split, seed=0)
    assert [len(b) for b in batches] == [5, 5, 5, 5, 3]
    assert sorted(torch.cat(batches).tolist()) == list(range(23))


def test_shuffled_batches_keep_x_and_y_paired():
    split = _index_split(23)
    for x, y in split.shuffled_batches(4, torch.Generator().manual_seed(1), "cpu"):
        assert torch.equal(x.view(-1).long(), y)


def test_shuffle_is_reproducible_from_the_generator_seed_only():
    split = _index_split(50)
    torch.manual_seed(123)  # the global RNG must not matter
    first = torch.cat(_epoch(split, seed=7))
    torch.manual_seed(999)
    again = torch.cat(_epoch(split, seed=7))
    other = torch.cat(_epoch(split, seed=8))
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert not torch.equal(first, torch.arange(50))


def test_consecutive_epochs_from_one_generator_differ_and_resume_from_its_state():
    split = _index_split(50)
    gen = torch.Generator().manual_seed(3)
    epoch1 = torch.cat([y for _, y in split.shuffled_batches(8, gen, "cpu")])
    state = gen.get_state()
    epoch2 = torch.cat([y for _, y in split.shuffled_batches(8, gen, "cpu")])
    resumed = torch.Generator()
    resumed.set_state(state)
    epoch2_again = torch.cat([y for _, y in split.shuffled_batches(8, resumed, "cpu")])
    assert not torch.equal(epoch1, epoch2)
    assert torch.equal(epoch2, epoch2_again)


class _AddNoise:
    """A toy augmentation: adds drawn noise, and counts the examples it was applied to."""

    def __init__(self) -> None:
        self.applied: list[int] = []

    def draw(self, n, generator):
        return torch.rand(n, 1, 1, 1, generator=generator) + 1000

    def apply(self, x, params):
        self.applied.append(len(x))
        return x + params


def test_all_epoch_randomness_is_drawn_when_called_not_when_consumed():
    split = _index_split(30, augment=_AddNoise())
    gen = torch.Generator().manual_seed(0)
    batches = split.shuffled_batches(8, gen, "cpu")
    state_after_call = gen.get_state()
    list(batches)
    assert torch.equal(gen.get_state(), state_after_call)


def test_augmentation_is_applied_to_every_training_batch_with_its_own_rows():
    aug = _AddNoise()
    split = _index_split(23, augment=aug)
    gen = torch.Generator().manual_seed(4)
    batches = list(split.shuffled_batches(10, gen, "cpu"))
    assert aug.applied == [10, 10, 3]
    noise = torch.cat([x.view(-1) - y for x, y in batches])
    assert (noise >= 1000).all() and len(set(noise.tolist())) == 23


def test_ordered_batches_are_stored_order_and_never_augmented():
    aug = _AddNoise()
    split = _index_split(23, augment=aug)
    ys = [y for _, y in split.ordered_batches(10, "cpu")]
    xs = [x for x, _ in split.ordered_batches(10, "cpu")]
    assert [len(y) for y in ys] == [10, 10, 3]
    assert torch.equal(torch.cat(ys), torch.arange(23))
    assert torch.equal(torch.cat(xs).view(-1), torch.arange(23, dtype=torch.float32))
    assert aug.applied == []


def test_scale_and_shift_turn_uint8_batches_into_normalised_float():
    x = torch.tensor([[[[0]], [[255]]], [[[51]], [[102]]]], dtype=torch.uint8)  # (2, 2, 1, 1)
    scale = torch.tensor([0.5, 2.0]).view(1, 2, 1, 1)
    shift = torch.tensor([-1.0, 1.0]).view(1, 2, 1, 1)
    split = ArraySplit(x, torch.tensor([0, 1]), scale=scale, shift=shift)
    ((xb, _),) = split.ordered_batches(2, "cpu")
    assert xb.dtype == torch.float32
    assert torch.allclose(xb, x.float() * scale + shift)


def _token_split(length: int = 101, block: int = 8) -> TokenSplit:
    return TokenSplit(torch.arange(length), block)


def test_token_windows_have_targets_shifted_by_one():
    split = _token_split()
    for x, y in split.shuffled_batches(4, torch.Generator().manual_seed(0), "cpu"):
        assert x.shape == y.shape and x.shape[1] == 8 and x.dtype == torch.int64
        assert torch.equal(x[:, 1:], y[:, :-1])
        assert torch.equal(y, x + 1)  # tokens are 0..L-1, so the next token is x + 1


def test_token_epoch_length_and_random_starts_stay_in_range():
    split = _token_split(101, 8)
    assert len(split) == 100 // 8
    starts = torch.cat(
        [x[:, 0] for x, _ in split.shuffled_batches(5, torch.Generator().manual_seed(0), "cpu")]
    )
    assert len(starts) == len(split)
    assert starts.min() >= 0 and starts.max() <= 101 - 8 - 1


def test_token_starts_cover_the_last_valid_window():
    split = TokenSplit(torch.arange(10), 4)  # valid starts 0..5
    gen = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(100):
        for x, _ in split.shuffled_batches(2, gen, "cpu"):
            seen.update(x[:, 0].tolist())
    assert seen == set(range(6))


def test_token_ordered_windows_tile_the_stream_from_zero():
    split = _token_split(101, 8)
    x = torch.cat([xb for xb, _ in split.ordered_batches(5, "cpu")])
    assert torch.equal(x[:, 0], torch.arange(len(split)) * 8)
    assert torch.equal(x.reshape(-1), torch.arange(len(split) * 8))


def test_token_shuffle_is_reproducible_from_the_generator_seed():
    split = _token_split(1000, 16)

    def starts(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([x[:, 0] for x, _ in split.shuffled_batches(7, gen, "cpu")])

    assert torch.equal(starts(1), starts(1))
    assert not torch.equal(starts(1), starts(2))
