"""FactoredPolicy: masking, used-head log-probs and entropies, precision, LSTM, save/load."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from esper.errors import CheckpointError, ConfigError, ShapeError
from esper.leyline.actions import HEADS, OP_HEADS, LifecycleOp
from esper.tamiyo.policy_net import (
    FactoredPolicy,
    concat_masks,
    load_policy,
    op_head_table,
    save_policy,
    split_masks,
)

HEAD_SIZES = {"op": 6, "slot": 3, "blueprint": 4, "style": 9, "tempo": 3, "alpha_target": 4}
OBS_DIM = 5


def _policy(seed: int = 0, *, bias_std: float = 0.0, **kw: object) -> FactoredPolicy:
    """A small policy; ``bias_std`` makes the heads peaky so that mistakes would show."""
    torch.manual_seed(seed)
    policy = FactoredPolicy(OBS_DIM, HEAD_SIZES, hidden=16, lstm_hidden=8, **kw)  # type: ignore[arg-type]
    with torch.no_grad():
        for head in policy.heads.values():
            head.bias.normal_(0.0, bias_std)
    return policy


def _action(op: LifecycleOp, **picks: int) -> torch.Tensor:
    row = [int(op)] + [picks.get(name, 0) for name in HEADS[1:]]
    return torch.tensor([row])


def test_op_head_table_matches_op_heads() -> None:
    table = op_head_table()
    assert table.shape == (len(LifecycleOp), len(HEADS))
    for op in LifecycleOp:
        used = {HEADS[i] for i in range(len(HEADS)) if table[op, i] == 1}
        assert used == set(OP_HEADS[op])


def test_split_and_concat_masks_round_trip() -> None:
    flat = torch.rand(2, sum(HEAD_SIZES.values())) > 0.5
    parts = split_masks(flat, HEAD_SIZES)
    assert list(parts) == list(HEADS)
    assert [p.shape[-1] for p in parts.values()] == list(HEAD_SIZES.values())
    assert torch.equal(concat_masks(parts, HEAD_SIZES), flat)
    with pytest.raises(ShapeError, match="tempo"):
        concat_masks({k: v for k, v in parts.items() if k != "tempo"}, HEAD_SIZES)


def test_act_and_evaluate_shapes() -> None:
    policy = _policy()
    obs = torch.randn(7, OBS_DIM)
    actions, log_prob, value, state = policy.act(obs)
    assert actions.shape == (7, len(HEADS)) and actions.dtype == torch.long
    assert log_prob.shape == value.shape == (7,) and state is None
    lp, ent, val, per_head = policy.evaluate(obs, actions)
    assert lp.shape == ent.shape == val.shape == (7,)
    assert list(per_head) == list(HEADS)
    torch.testing.assert_close(lp, log_prob)
    torch.testing.assert_close(val, value)


@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_masked_actions_are_never_sampled(data: st.DataObject) -> None:
    policy = _policy(bias_std=4.0)
    rows = []
    for size in HEAD_SIZES.values():
        legal = data.draw(st.lists(st.booleans(), min_size=size, max_size=size))
        legal[data.draw(st.integers(0, size - 1))] = True  # at least one legal entry
        rows.extend(legal)
    mask = torch.tensor(rows).expand(512, -1)
    actions, log_prob, _, _ = policy.act(torch.randn(512, OBS_DIM), mask)
    for i, head_mask in enumerate(split_masks(mask, HEAD_SIZES).values()):
        assert head_mask.gather(1, actions[:, i : i + 1]).all()
    assert torch.isfinite(log_prob).all()
    greedy, _, _, _ = policy.act(torch.randn(8, OBS_DIM), mask[:8], deterministic=True)
    for i, head_mask in enumerate(split_masks(mask[:8], HEAD_SIZES).values()):
        assert head_mask.gather(1, greedy[:, i : i + 1]).all()


def test_dict_masks_equal_flat_masks() -> None:
    policy = _policy(bias_std=1.0)
    mask = torch.rand(4, policy.mask_dim) > 0.3
    mask[:, [0, 6, 9, 13, 22, 25]] = True  # index 0 of every head stays legal
    obs, actions = torch.randn(4, OBS_DIM), policy.act(torch.randn(4, OBS_DIM), mask)[0]
    flat = policy.evaluate(obs, actions, mask)
    as_dict = policy.evaluate(obs, actions, split_masks(mask, HEAD_SIZES))
    for a, b in zip(flat[:3], as_dict[:3], strict=True):
        torch.testing.assert_close(a, b)


def test_fully_masked_head_yields_index_zero_without_nan() -> None:
    policy = _policy(bias_std=2.0)
    mask = torch.ones(64, policy.mask_dim, dtype=torch.bool)
    parts = split_masks(mask, HEAD_SIZES)
    parts["blueprint"][:] = False  # no blueprint is legal
    flat = concat_masks(parts, HEAD_SIZES)
    actions, log_prob, _, _ = policy.act(torch.randn(64, OBS_DIM), flat)
    assert (actions[:, HEADS.index("blueprint")] == 0).all()
    assert torch.isfinite(log_prob).all()
    germinate = _action(LifecycleOp.GERMINATE).expand(64, -1)
    lp, ent, _, per_head = policy.evaluate(torch.randn(64, OBS_DIM), germinate, flat)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    assert (per_head["blueprint"] == 0).all()


def test_log_prob_ignores_unused_heads() -> None:
    policy = _policy(bias_std=3.0)
    obs = torch.randn(1, OBS_DIM)

    def log_prob(action: torch.Tensor) -> torch.Tensor:
        return policy.evaluate(obs, action)[0]

    wait = log_prob(_action(LifecycleOp.WAIT))
    assert log_prob(_action(LifecycleOp.WAIT, slot=2, blueprint=3, style=8, tempo=2)) == wait
    germ = log_prob(_action(LifecycleOp.GERMINATE, slot=1))
    assert log_prob(_action(LifecycleOp.GERMINATE, slot=1, alpha_target=3)) == germ
    assert log_prob(_action(LifecycleOp.GERMINATE, slot=2)) != germ  # slot is used


def test_log_prob_is_sum_of_used_head_log_softmax() -> None:
    policy = _policy(bias_std=2.0)
    obs = torch.randn(1, OBS_DIM)
    mask = torch.ones(1, policy.mask_dim, dtype=torch.bool)
    mask[0, HEAD_SIZES["op"] + 1] = False  # slot 1 illegal
    action = _action(LifecycleOp.SET_ALPHA_TARGET, slot=2, tempo=1, alpha_target=3, style=4)
    features = policy.trunk(obs)
    expected = torch.zeros(1)
    for i, (name, head_mask) in enumerate(split_masks(mask, HEAD_SIZES).items()):
        if name in OP_HEADS[LifecycleOp.SET_ALPHA_TARGET]:
            logits = policy.heads[name](features).masked_fill(~head_mask, -math.inf)
            expected += logits.log_softmax(-1)[0, action[0, i]]
    torch.testing.assert_close(policy.evaluate(obs, action, mask)[0], expected)


def test_entropy_per_head_closed_form() -> None:
    policy = _policy()
    with torch.no_grad():  # uniform heads: entropy = log(number of legal actions)
        for head in policy.heads.values():
            head.weight.zero_()
            head.bias.zero_()
    mask = torch.ones(1, policy.mask_dim, dtype=torch.bool)
    mask[0, HEAD_SIZES["op"] : HEAD_SIZES["op"] + 2] = False  # 1 of 3 slots legal
    mask[0, 9:11] = False  # 2 of 4 blueprints legal
    action = _action(LifecycleOp.GERMINATE, slot=2)
    _, entropy, _, per_head = policy.evaluate(torch.randn(1, OBS_DIM), action, mask)
    legal = {"op": 6, "slot": 1, "blueprint": 2, "style": 9, "tempo": 3, "alpha_target": 4}
    for name, n in legal.items():
        torch.testing.assert_close(per_head[name], torch.tensor([math.log(n)]))
    used = OP_HEADS[LifecycleOp.GERMINATE]
    torch.testing.assert_close(entropy, torch.tensor([sum(math.log(legal[h]) for h in used)]))


def test_autocast_outputs_are_fp32_and_close() -> None:
    policy = _policy(bias_std=1.0)
    obs = torch.randn(16, OBS_DIM)
    actions = policy.act(obs)[0]
    ref = policy.evaluate(obs, actions)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = policy.evaluate(obs, actions)
        _, act_lp, act_value, _ = policy.act(obs)
    assert act_lp.dtype == act_value.dtype == torch.float32
    for a, b in zip(ref[:3], low[:3], strict=True):
        assert b.dtype == torch.float32
        torch.testing.assert_close(b, a, rtol=0.05, atol=0.05)


def test_wrong_observation_size_is_a_shape_error() -> None:
    with pytest.raises(ShapeError, match="obs_dim=3"):
        _policy().act(torch.randn(2, 3))


def test_bad_head_sizes_are_rejected() -> None:
    with pytest.raises(ConfigError, match="HEADS"):
        FactoredPolicy(OBS_DIM, {"op": 6, "slot": 3})
    with pytest.raises(ConfigError, match="'op'"):
        FactoredPolicy(OBS_DIM, {**HEAD_SIZES, "op": 4})


# ---- LSTM -------------------------------------------------------------------------------


def test_lstm_state_resets_at_episode_start() -> None:
    policy = _policy(lstm=True, bias_std=1.0)
    obs = torch.randn(3, OBS_DIM)
    zero = policy.initial_state(3)
    _, _, _, warm = policy.act(torch.randn(3, OBS_DIM), state=zero)
    assert warm is not None and warm[0].shape == (1, 3, 8) and warm[0].dtype == torch.float32
    _, _, fresh_value, _ = policy.act(obs, state=zero)
    _, _, carried_value, _ = policy.act(obs, state=warm)
    starts = torch.tensor([1.0, 0.0, 1.0])
    _, _, reset_value, _ = policy.act(obs, state=warm, episode_starts=starts)
    assert not torch.allclose(carried_value, fresh_value)  # the state matters...
    torch.testing.assert_close(reset_value[[0, 2]], fresh_value[[0, 2]])  # ...until a reset
    torch.testing.assert_close(reset_value[1], carried_value[1])


def test_lstm_evaluate_replays_the_rollout() -> None:
    policy = _policy(lstm=True, bias_std=1.0)
    steps, envs = 6, 3
    starts = torch.zeros(steps, envs)
    starts[0] = 1.0
    starts[3, 1] = starts[4, 0] = 1.0  # episodes end mid-sequence
    obs = torch.randn(steps, envs, OBS_DIM)
    state = initial = policy.initial_state(envs)
    log_probs, values, actions = [], [], []
    for t in range(steps):
        a, lp, v, state = policy.act(obs[t], state=state, episode_starts=starts[t])
        actions.append(a)
        log_probs.append(lp)
        values.append(v)
    lp, _, v, _ = policy.evaluate(obs, torch.stack(actions), None, initial, starts)
    assert lp.shape == (steps, envs)
    torch.testing.assert_close(lp, torch.stack(log_probs))
    torch.testing.assert_close(v, torch.stack(values))


def test_state_without_lstm_is_rejected() -> None:
    policy = _policy()
    with pytest.raises(ConfigError, match="lstm=False"):
        policy.act(torch.randn(2, OBS_DIM), state=(torch.zeros(1, 2, 8), torch.zeros(1, 2, 8)))


# ---- save / load ------------------------------------------------------------------------


@pytest.mark.parametrize("lstm", [False, True])
def test_save_load_round_trip(tmp_path: object, lstm: bool) -> None:
    path = f"{tmp_path}/policy.pt"
    policy = _policy(lstm=lstm, bias_std=1.0)
    save_policy(policy, path)
    blob = torch.load(path, weights_only=True)
    assert blob["config"] == policy.policy_config()
    loaded = load_policy(path, obs_dim=OBS_DIM, head_sizes=HEAD_SIZES)
    obs = torch.randn(1, 4, OBS_DIM)  # (T, B, D): one step of 4 envs (an LSTM takes sequences)
    actions = policy.act(obs[0], state=policy.initial_state(4) if lstm else None)[0][None]
    for a, b in zip(policy.evaluate(obs, actions)[:3], loaded.evaluate(obs, actions)[:3],
                    strict=True):  # fmt: skip
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_load_for_another_observation_size_names_both(tmp_path: object) -> None:
    path = f"{tmp_path}/policy.pt"
    save_policy(_policy(), path)
    with pytest.raises(CheckpointError, match=r"obs_dim=5.*obs_dim=12"):
        load_policy(path, obs_dim=12)
    with pytest.raises(CheckpointError, match="action heads"):
        load_policy(path, head_sizes={**HEAD_SIZES, "slot": 4})
