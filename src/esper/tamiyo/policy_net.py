"""The learned controller's network: a shared trunk, one masked categorical head per action
dimension (``HEADS``) and a value head.

Conventions:

* **Mask layout.** The canonical mask is one flat bool tensor ``[..., sum(head_sizes)]``: each
  head's mask concatenated in ``HEADS`` order (sb3-contrib's MaskablePPO layout); True = legal.
  :func:`split_masks` and :func:`concat_masks` convert to and from a per-head dict.
* **Masking** sets illegal logits to ``MASK_LOGIT`` (-1e9, finite), so softmax never sees
  ``-inf - -inf`` and a sum of several masked log-probs stays finite, while ``exp`` of it is
  exactly 0 (an illegal action is never sampled).
* **A head with no legal entry** is treated as if only index 0 were legal: it always yields 0,
  with log-prob 0 and entropy 0. Environments mask a head completely only when no legal
  operation uses it, so this is never a choice the policy makes.
* **Used heads only.** The joint log-prob and entropy of an action sum over the heads its
  operation uses (``OP_HEADS``; op index = ``LifecycleOp`` value), through a ``[n_ops,
  n_heads]`` 0/1 table. Heads an operation ignores are still sampled (and returned) but count
  for nothing.
* **Precision.** Logits and values are cast to fp32 before any softmax, so log-probs and
  entropies are fp32 under ``torch.autocast`` too.
* **Recurrence.** With ``lstm=True`` a single-layer LSTM follows the trunk. The state is
  explicit, ``(h, c)`` each ``[1, B, lstm_hidden]``, and is zeroed for every environment whose
  ``episode_starts`` flag is 1 before its observation is processed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from esper.errors import CheckpointError, ConfigError, ShapeError
from esper.leyline.actions import HEADS, OP_HEADS, LifecycleOp
from esper.tolaria.checkpoint import check_state_fits, load_weights_file

__all__ = [
    "MASK_LOGIT",
    "FactoredPolicy",
    "LSTMState",
    "concat_masks",
    "load_policy",
    "op_head_table",
    "save_policy",
    "split_masks",
]

LSTMState = tuple[Tensor, Tensor]
"""``(h, c)``, each ``[1, B, lstm_hidden]``."""

MASK_LOGIT = -1e9
"""Logit given to illegal actions (finite: see the module docstring)."""

MaskInput = Tensor | Mapping[str, Tensor] | None


def op_head_table() -> Tensor:
    """``[n_ops, n_heads]`` float 0/1 table: row ``op`` marks the heads ``OP_HEADS[op]`` uses."""
    table = torch.zeros(len(LifecycleOp), len(HEADS), device="cpu")  # also under a meta device
    for op, names in OP_HEADS.items():
        for name in names:
            table[int(op), HEADS.index(name)] = 1.0
    return table


def split_masks(flat: Tensor, head_sizes: Mapping[str, int]) -> dict[str, Tensor]:
    """Split a flat ``[..., sum(sizes)]`` mask into ``{head: [..., size]}`` views."""
    parts = torch.split(flat, list(head_sizes.values()), dim=-1)
    return dict(zip(head_sizes, parts, strict=True))


def concat_masks(masks: Mapping[str, Tensor], head_sizes: Mapping[str, int]) -> Tensor:
    """Concatenate per-head masks into the flat layout (``head_sizes`` order), as bool."""
    missing = [name for name in head_sizes if name not in masks]
    if missing:
        raise ShapeError(f"mask dict lacks heads {missing}; expected all of {list(head_sizes)}")
    return torch.cat([masks[name].bool() for name in head_sizes], dim=-1)


def _validate_head_sizes(head_sizes: Mapping[str, int]) -> None:
    errors = []
    if tuple(head_sizes) != HEADS:
        errors.append(f"head_sizes keys {list(head_sizes)} must be exactly HEADS {list(HEADS)}")
    if any(int(size) < 1 for size in head_sizes.values()):
        errors.append(f"every head needs at least one action; got {dict(head_sizes)}")
    if head_sizes.get("op", len(LifecycleOp)) != len(LifecycleOp):
        errors.append(f"head 'op' must have {len(LifecycleOp)} actions (one per LifecycleOp)")
    if errors:
        raise ConfigError("; ".join(errors))


def _layer(n_in: int, n_out: int, std: float) -> nn.Linear:
    """A Linear with orthogonal weights of gain ``std`` and zero bias (CleanRL's init)."""
    layer = nn.Linear(n_in, n_out)
    nn.init.orthogonal_(layer.weight, std)
    nn.init.zeros_(layer.bias)
    return layer


class FactoredPolicy(nn.Module):
    """Actor-critic over factored, masked categorical action heads.

    Args:
        obs_dim: observation features.
        head_sizes: number of choices per head, keyed and ordered exactly as ``HEADS``.
        hidden: width of the shared MLP trunk.
        lstm: follow the trunk with a single-layer LSTM.
        lstm_hidden: LSTM state size.
    """

    _pad_index: Tensor  # (H, K) flat-layout position of each head's k-th entry
    _pad_valid: Tensor  # (H, K) k < size of the head
    _first: Tensor  # (1, K) one-hot of index 0
    _uses: Tensor  # (n_ops, H) heads each op uses

    def __init__(
        self,
        obs_dim: int,
        head_sizes: Mapping[str, int],
        hidden: int = 128,
        lstm: bool = False,
        lstm_hidden: int = 128,
        layout: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        _validate_head_sizes(head_sizes)
        self.layout = dict(layout) if layout is not None else None
        """The observation layout it is trained for (``slots``, ``blueprints``,
        ``features``: the feature names' version), None when not recorded."""
        if obs_dim < 1 or hidden < 1 or lstm_hidden < 1:
            raise ConfigError(
                f"obs_dim, hidden and lstm_hidden must be >= 1; got {obs_dim}, {hidden}, {lstm_hidden}"
            )
        self.obs_dim, self.hidden = int(obs_dim), int(hidden)
        self.use_lstm, self.lstm_hidden = bool(lstm), int(lstm_hidden)
        self.head_sizes = {name: int(size) for name, size in head_sizes.items()}
        self.trunk = nn.Sequential(
            _layer(obs_dim, hidden, math.sqrt(2)), nn.Tanh(),
            _layer(hidden, hidden, math.sqrt(2)), nn.Tanh(),
        )  # fmt: skip
        self.lstm = nn.LSTM(hidden, lstm_hidden) if lstm else None
        features = lstm_hidden if lstm else hidden
        self.heads = nn.ModuleDict({n: _layer(features, k, 0.01) for n, k in head_sizes.items()})
        self.value_head = _layer(features, 1, 1.0)
        self._register_layout_buffers()

    def _register_layout_buffers(self) -> None:
        """Index tables that pad the flat layout to ``[n_heads, max_size]`` in one gather."""
        # On the CPU even while built under a meta device (to check a file's shapes).
        sizes = torch.tensor(list(self.head_sizes.values()), device="cpu")
        offsets = torch.cumsum(sizes, 0) - sizes
        k = torch.arange(int(sizes.max()), device="cpu")
        pad_index = offsets[:, None] + torch.minimum(k[None, :], sizes[:, None] - 1)
        self.register_buffer("_pad_index", pad_index, persistent=False)
        self.register_buffer("_pad_valid", k[None, :] < sizes[:, None], persistent=False)
        self.register_buffer("_first", k[None, :] == 0, persistent=False)
        self.register_buffer("_uses", op_head_table().bool(), persistent=False)

    @property
    def n_heads(self) -> int:
        return len(self.head_sizes)

    @property
    def mask_dim(self) -> int:
        """Width of the flat mask: the sum of the head sizes."""
        return sum(self.head_sizes.values())

    def policy_config(self) -> dict[str, Any]:
        """Constructor arguments as primitives (what a ``policy.pt`` stores to rebuild the net)."""
        return {
            "obs_dim": self.obs_dim,
            "head_sizes": dict(self.head_sizes),
            "hidden": self.hidden,
            "lstm": self.use_lstm,
            "lstm_hidden": self.lstm_hidden,
            "layout": self.layout,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> FactoredPolicy:
        """Build an (untrained) policy from :meth:`policy_config` output."""
        return cls(**config)

    def initial_state(self, batch_size: int, device: torch.device | str = "cpu") -> LSTMState:
        """Zero LSTM state for ``batch_size`` environments."""
        if self.lstm is None:
            raise ConfigError("initial_state() needs a policy built with lstm=True")
        zeros = torch.zeros(1, batch_size, self.lstm_hidden, device=device)
        return zeros, zeros.clone()

    # ---- forward pieces -------------------------------------------------------------------

    def _core(
        self, obs: Tensor, state: LSTMState | None, episode_starts: Tensor | None
    ) -> tuple[Tensor, LSTMState | None]:
        """Features for the heads. MLP: ``obs [..., D]``. LSTM: ``obs [T, B, D]``."""
        if obs.shape[-1] != self.obs_dim:
            raise ShapeError(
                f"observation has {obs.shape[-1]} features but the policy expects "
                f"{self.obs_dim}; build the policy with obs_dim={obs.shape[-1]}"
            )
        x = self.trunk(obs)
        if self.lstm is None:
            if state is not None:
                raise ConfigError("an LSTM state was given to a policy built with lstm=False")
            return x, None
        if obs.dim() != 3:
            raise ShapeError(f"an LSTM policy takes [T, B, obs_dim] sequences; got {tuple(obs.shape)}")
        if state is None:
            state = self.initial_state(x.shape[1], x.device)
        if episode_starts is None:
            episode_starts = torch.zeros(x.shape[:2], device=x.device)
        outputs = []
        h, c = state
        for t in range(x.shape[0]):  # step by step so that resets land mid-sequence
            keep = (1.0 - episode_starts[t].to(h.dtype)).view(1, -1, 1)
            out, (h, c) = self.lstm(x[t : t + 1], (h * keep, c * keep))
            outputs.append(out)
        return torch.cat(outputs), (h.float(), c.float())  # fp32 state even under autocast

    def _log_probs(self, features: Tensor, masks: MaskInput) -> tuple[Tensor, Tensor]:
        """Masked per-head log-probs ``[N, H, K]`` (fp32) and legal entries ``[N, H, K]``.

        ``features`` is ``[N, F]``; padding beyond a head's size counts as illegal.
        """
        flat_logits = torch.cat([head(features) for head in self.heads.values()], dim=-1)
        logits = flat_logits.float()[:, self._pad_index]  # (N, H, K)
        legal = self._flat_masks(masks, features.shape[0], features.device)[:, self._pad_index]
        legal = legal & self._pad_valid
        legal = legal | (~legal.any(-1, keepdim=True) & self._first)  # no legal entry -> index 0
        return logits.masked_fill(~legal, MASK_LOGIT).log_softmax(-1), legal

    def _flat_masks(self, masks: MaskInput, n: int, device: torch.device) -> Tensor:
        if masks is None:
            return torch.ones(n, self.mask_dim, dtype=torch.bool, device=device)
        flat = masks if isinstance(masks, Tensor) else concat_masks(masks, self.head_sizes)
        if flat.shape[-1] != self.mask_dim:
            raise ShapeError(
                f"flat mask has {flat.shape[-1]} entries but the heads {self.head_sizes} "
                f"need {self.mask_dim} (their sizes concatenated in HEADS order)"
            )
        return flat.reshape(n, self.mask_dim).bool()

    def _joint(self, per_head: Tensor, ops: Tensor) -> Tensor:
        """Sum ``per_head [N, H]`` over the heads each op in ``ops [N]`` uses."""
        return torch.where(self._uses[ops], per_head, 0.0).sum(-1)

    # ---- public API -----------------------------------------------------------------------

    @torch.no_grad()
    def step_features(
        self, obs: Tensor, state: LSTMState | None = None, episode_starts: Tensor | None = None
    ) -> tuple[Tensor, LSTMState | None]:
        """One observation per environment through the trunk (and one LSTM step).

        Args:
            obs: ``[B, obs_dim]``.
            state: LSTM state from the previous step (None: zeros); must be None without LSTM.
            episode_starts: ``[B]`` 1 where ``obs`` starts an episode (resets the LSTM state).

        Returns:
            ``(features [B, F], state)``: feed the features to :meth:`act_features` and
            :meth:`score_features` as often as needed; the LSTM has stepped exactly once.
        """
        if self.lstm is None:
            return self._core(obs, state, None)
        starts = None if episode_starts is None else episode_starts.unsqueeze(0)
        seq, new_state = self._core(obs.unsqueeze(0), state, starts)
        return seq[0], new_state

    @torch.no_grad()
    def act_features(
        self, features: Tensor, masks: MaskInput = None, deterministic: bool = False
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Pick one action per row of ``features [B, F]``: ``(actions, log_prob, value)``."""
        logp, _ = self._log_probs(features, masks)  # (B, H, K)
        if deterministic:
            actions = logp.argmax(-1)
        else:
            probs = logp.exp().flatten(0, 1)  # (B*H, K); illegal entries are exactly 0
            actions = torch.multinomial(probs, 1).view(logp.shape[:2])
        chosen = logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)
        value = self.value_head(features).squeeze(-1).float()
        return actions, self._joint(chosen, actions[:, 0]), value

    def score_features(
        self, features: Tensor, actions: Tensor, masks: MaskInput = None
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Log-prob, entropy and value of ``actions [N, n_heads]`` given ``features [N, F]``.

        Returns:
            ``(log_prob [N], entropy [N], value [N], head_entropy [N, H])``, fp32; log-prob
            and entropy sum over the heads the action's op uses.
        """
        logp, legal = self._log_probs(features, masks)
        chosen = logp.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (N, H)
        head_entropy = -torch.where(legal, logp.exp() * logp, 0.0).sum(-1)  # (N, H)
        ops = actions[:, 0]
        value = self.value_head(features).squeeze(-1).float()
        return self._joint(chosen, ops), self._joint(head_entropy, ops), value, head_entropy

    def act(
        self,
        obs: Tensor,
        masks: MaskInput = None,
        state: LSTMState | None = None,
        deterministic: bool = False,
        episode_starts: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, LSTMState | None]:
        """Pick one action per environment.

        Args:
            obs: ``[B, obs_dim]``.
            masks: flat ``[B, mask_dim]`` bool (or a per-head dict, or None = all legal).
            state: LSTM state from the previous call (None: zeros); must be None without LSTM.
            deterministic: take each head's most likely legal action instead of sampling.
            episode_starts: ``[B]`` 1 where ``obs`` starts an episode (resets the LSTM state).

        Returns:
            ``(actions [B, n_heads] long, log_prob [B], value [B], state)``; fp32 log-prob and
            value; ``state`` is None without LSTM.
        """
        features, new_state = self.step_features(obs, state, episode_starts)
        actions, log_prob, value = self.act_features(features, masks, deterministic)
        return actions, log_prob, value, new_state

    def evaluate(
        self,
        obs: Tensor,
        actions: Tensor,
        masks: MaskInput = None,
        state: LSTMState | None = None,
        episode_starts: Tensor | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        """Log-prob, entropy and value of given actions (the PPO update's forward).

        Args:
            obs: ``[B, obs_dim]`` (MLP; any leading dims work) or ``[T, B, obs_dim]`` (LSTM:
                ``B`` sequences in time order).
            actions: ``[..., n_heads]`` long, leading dims as ``obs``.
            masks: flat ``[..., mask_dim]`` bool, leading dims as ``obs`` (or dict, or None).
            state: LSTM state at the start of each sequence (None: zeros).
            episode_starts: ``[T, B]`` LSTM resets; ignored without LSTM.

        Returns:
            ``(log_prob, entropy, value, entropy_per_head)``, each shaped like ``obs`` without
            its last dim, fp32. ``log_prob`` and ``entropy`` sum over the heads the action's op
            uses; ``entropy_per_head[name]`` is that head's full entropy whether used or not.
        """
        lead = obs.shape[:-1]
        features, _ = self._core(obs, state, episode_starts)
        features = features.reshape(-1, features.shape[-1])
        log_prob, entropy, value, head_entropy = self.score_features(
            features, actions.reshape(-1, self.n_heads), masks
        )
        per_head = {name: head_entropy[:, i].view(lead) for i, name in enumerate(self.head_sizes)}
        return log_prob.view(lead), entropy.view(lead), value.view(lead), per_head


def save_policy(policy: FactoredPolicy, path: str | Path) -> None:
    """Write ``{"config": ..., "state_dict": ...}``, loadable with ``weights_only=True``."""
    torch.save({"config": policy.policy_config(), "state_dict": policy.state_dict()}, path)


def load_policy(
    path: str | Path,
    *,
    obs_dim: int | None = None,
    head_sizes: Mapping[str, int] | None = None,
    map_location: str | torch.device = "cpu",
) -> FactoredPolicy:
    """Rebuild a saved policy, checking it fits the environment when sizes are given.

    Raises:
        CheckpointError: the file is not a policy, or it was trained for another observation
            size or action space than the one given.
    """
    blob = load_weights_file(Path(path), map_location, "policy")
    if not isinstance(blob, dict) or not {"config", "state_dict"} <= blob.keys():
        raise CheckpointError(f"{path} is not a policy file (expected 'config' and 'state_dict')")
    config = blob["config"]
    problems = _policy_config_problems(config)
    if problems:
        raise CheckpointError(
            f"policy {path} has an invalid config:\n  - " + "\n  - ".join(problems)
            + "\n(re-create it with 'esper train ppo')"
        )
    if obs_dim is not None and config["obs_dim"] != obs_dim:
        raise CheckpointError(
            f"policy {path} was trained for obs_dim={config['obs_dim']} but the environment "
            f"gives obs_dim={obs_dim}; use a policy trained on the same observation features"
        )
    if head_sizes is not None and dict(config["head_sizes"]) != dict(head_sizes):
        raise CheckpointError(
            f"policy {path} has action heads {config['head_sizes']} but the environment "
            f"needs {dict(head_sizes)}; the slot count or blueprint catalogue differs"
        )
    source = f"policy {path}"
    try:
        with torch.device("meta"):  # shapes only: a crafted config may claim any size
            check_state_fits(FactoredPolicy.from_config(config), blob["state_dict"], source)
        policy = FactoredPolicy.from_config(config)
        policy.load_state_dict(blob["state_dict"])
    except (ConfigError, RuntimeError, ValueError, TypeError) as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise CheckpointError(f"{source} does not build: {exc}") from None
    return policy.to(map_location)


MAX_POLICY_WIDTH = 1 << 16
"""The largest observation size, layer width or head size a policy file may declare."""


def _policy_config_problems(config: Any) -> list[str]:
    """What is wrong with a policy file's ``config`` (types and sane bounds), before building."""
    if not isinstance(config, dict):
        return [f"config must be a dict, got {type(config).__name__}"]
    sizes = {name: config.get(name, 128) for name in ("hidden", "lstm_hidden")}
    sizes["obs_dim"] = config.get("obs_dim")
    heads = config.get("head_sizes")
    if isinstance(heads, dict):
        sizes.update({f"head_sizes[{name!r}]": size for name, size in heads.items()})
    problems = [
        f"{name} must be an int in [1, {MAX_POLICY_WIDTH}], got {value!r}"
        for name, value in sizes.items()
        if type(value) is not int or not 1 <= value <= MAX_POLICY_WIDTH
    ]
    if not isinstance(heads, dict):
        problems.append(f"head_sizes must be a dict of head -> size, got {heads!r}")
    if not isinstance(config.get("lstm", False), bool):
        problems.append(f"lstm must be a bool, got {config.get('lstm')!r}")
    layout = config.get("layout")
    if layout is not None and not (
        isinstance(layout, dict)
        and all(isinstance(layout.get(k), list) for k in ("slots", "blueprints"))
        and isinstance(layout.get("features"), int)
    ):
        expected = "{'slots': [...], 'blueprints': [...], 'features': int}"
        problems.append(f"layout must be {expected}, got {layout!r}")
    unknown = sorted(set(config) - {"obs_dim", "head_sizes", "hidden", "lstm", "lstm_hidden", "layout"})
    if unknown:
        problems.append(f"unknown keys {unknown}")
    return problems
