"""RolloutBuffer: storage, GAE hand-off, and flat / sequence minibatches."""

from __future__ import annotations

import pytest
import torch

from esper.simic.buffer import RolloutBatch, RolloutBuffer
from esper.simic.gae import compute_gae

T, N, OBS, HEADS, MASK = 4, 3, 2, 6, 29


def _fill(buffer: RolloutBuffer, *, truncate_at: int | None = None) -> None:
    """Step t of env i has obs = (t, i) and reward t + 10 i, so every row is identifiable."""
    for t in range(T):
        env = torch.arange(N, dtype=torch.float32)
        obs = torch.stack([torch.full((N,), float(t)), env], dim=1)
        truncated = torch.full((N,), float(t == truncate_at))
        buffer.add(
            obs,
            torch.full((N, HEADS), t),
            torch.ones(N, MASK, dtype=torch.bool),
            torch.full((N,), -1.0),
            (0.1 * t + env).to(torch.bfloat16),  # low-precision values are stored as fp32
            t + 10 * env,
            torch.full((N,), float(t == 0)),
            truncated=truncated,
            truncated_value=torch.full((N,), 5.0),
        )


def _ready(lstm_hidden: int = 0, **kw: int) -> RolloutBuffer:
    buffer = RolloutBuffer(T, N, OBS, HEADS, MASK, lstm_hidden=lstm_hidden)
    state = (torch.randn(1, N, lstm_hidden), torch.randn(1, N, lstm_hidden)) if lstm_hidden else None
    buffer.reset(state)
    _fill(buffer, **kw)
    buffer.compute_returns_and_advantages(torch.ones(N), torch.zeros(N), 0.9, 0.8)
    return buffer


def test_buffer_stores_fp32_and_refuses_overflow() -> None:
    buffer = _ready()
    assert buffer.full and buffer.values.dtype == torch.float32
    with pytest.raises(RuntimeError, match="full"):
        _fill(buffer)
    buffer.reset()
    assert buffer.pos == 0 and not buffer.full


def test_advantages_come_from_compute_gae() -> None:
    buffer = _ready(truncate_at=2)
    adv, ret = compute_gae(
        buffer.rewards,
        buffer.values,
        buffer.episode_starts,
        torch.ones(N),
        torch.zeros(N),
        0.9,
        0.8,
        truncated=buffer.truncated,
        truncated_values=buffer.truncated_values,
    )
    assert buffer.advantages.dtype == torch.float32
    torch.testing.assert_close(buffer.advantages, adv)
    torch.testing.assert_close(buffer.returns, ret)
    untruncated = _ready()
    assert not torch.allclose(untruncated.advantages, buffer.advantages)


def test_minibatches_need_advantages() -> None:
    buffer = RolloutBuffer(T, N, OBS, HEADS, MASK)
    buffer.reset()
    _fill(buffer)
    with pytest.raises(RuntimeError, match="compute_returns_and_advantages"):
        next(buffer.minibatches(4))


def test_flat_minibatches_cover_every_transition_once() -> None:
    buffer = _ready()
    batches = list(buffer.minibatches(5, torch.Generator().manual_seed(0)))
    assert all(isinstance(b, RolloutBatch) and b.lstm_state is None for b in batches)
    assert [len(b.obs) for b in batches] == [5, 5, 2]
    seen = torch.cat([b.obs for b in batches])
    assert sorted(map(tuple, seen.tolist())) == sorted(
        (float(t), float(i)) for t in range(T) for i in range(N)
    )
    for b in batches:  # fields stay aligned: reward and action identify the same row as obs
        t, env = b.obs[:, 0], b.obs[:, 1]
        flat = (t * N + env).long()
        torch.testing.assert_close(b.advantages, buffer.advantages.flatten()[flat])
        assert torch.equal(b.actions[:, 0], t.long())


def test_shuffle_is_reproducible() -> None:
    buffer = _ready()
    first = [b.obs for b in buffer.minibatches(4, torch.Generator().manual_seed(3))]
    second = [b.obs for b in buffer.minibatches(4, torch.Generator().manual_seed(3))]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_sequence_minibatches_keep_time_order_and_state() -> None:
    buffer = _ready(lstm_hidden=7)
    assert buffer.initial_state is not None
    h0, c0 = buffer.initial_state
    # 8 transitions per batch with T = 4 -> 2 whole env sequences per batch
    batches = list(buffer.minibatches(8, torch.Generator().manual_seed(0)))
    assert [b.obs.shape[:2] for b in batches] == [(T, 2), (T, 1)]
    envs = []
    for b in batches:
        assert b.lstm_state is not None
        env = b.obs[0, :, 1].long()
        envs += env.tolist()
        assert torch.equal(b.obs[:, :, 0], torch.arange(T).float()[:, None].expand(T, len(env)))
        assert torch.equal(b.lstm_state[0], h0[:, env]) and torch.equal(b.lstm_state[1], c0[:, env])
        assert torch.equal(b.episode_starts[0], torch.ones(len(env)))
    assert sorted(envs) == list(range(N))


def test_recurrent_buffer_needs_initial_state() -> None:
    buffer = RolloutBuffer(T, N, OBS, HEADS, MASK, lstm_hidden=4)
    with pytest.raises(ValueError, match="lstm_hidden"):
        buffer.reset()
    with pytest.raises(ValueError, match="lstm_hidden"):
        RolloutBuffer(T, N, OBS, HEADS, MASK).reset((torch.zeros(1, N, 4), torch.zeros(1, N, 4)))
