"""Observation -> fixed-size float32 feature vector for the learned controller.

The vector is ``GLOBAL_FEATURES`` followed by one block per slot (slots in the observation's
order). Its size depends only on the number of slots and blueprints
(:func:`feature_size`), so a policy trained for one layout refuses another one.

Global features (``G = 14``):

====  ========================  =====================================================  ===========
 idx  name                      definition                                             range
====  ========================  =====================================================  ===========
  0   ``progress``              ``(epoch + 1) / max_epochs``                           [0, 1]
  1   ``train_loss``            ``log1p(train_loss)``                                  [0, 5]
  2   ``train_accuracy``        training accuracy                                      [0, 1]
  3   ``val_loss``              ``log1p(val_loss)``                                    [0, 5]
  4   ``val_accuracy``          validation accuracy                                    [0, 1]
  5   ``val_acc_delta``         val accuracy minus the previous epoch's (0 at first)   [-1, 1]
  6   ``val_acc_delta3``        val accuracy minus that of 3 epochs before (or first)  [-1, 1]
  7   ``train_loss_delta``      relative change of train loss since the last epoch     [-1, 1]
  8   ``plateau``               epochs without a 0.005 val-accuracy gain / max_epochs  [0, 1]
  9   ``budget_used``           seed params / (``max_seed_params`` or host params)     [0, 5]
 10   ``best_gap``              best val accuracy so far minus the current one         [0, 1]
 11   ``active_fraction``       slots holding a seed (not DORMANT/failed) / slots      [0, 1]
 12   ``epochs_left``           ``min(max_epochs - epoch - 1, 100) / 100``: the budget  [0, 1]
                                in absolute epochs (one policy serves several lengths)
 13   ``budget_left``           ``1 - seed_params / max_seed_params`` (1: no budget)   [0, 1]
====  ========================  =====================================================  ===========

Per-slot block (``S = len(SeedStage) + 10 + n_blueprints``):

==================================  ==========================================================
 feature                             definition
==================================  ==========================================================
 ``stage/<NAME>`` (one per stage)    one-hot of the slot's ``SeedStage`` (``SeedStage`` order)
 ``alpha``                           current blend weight, [0, 1]
 ``alpha_target``                    where the alpha ramp is heading, [0, 1]
 ``epochs_in_stage``                 ``min(epochs_in_stage, 20) / 20``
 ``contribution``                    last counterfactual contribution (accuracy units), clipped
                                     to [-1, 1]; 0 when unmeasured
 ``contribution_measured``           1 once a contribution has been measured
 ``contribution_trend``              last contribution minus the one before (0 with fewer than
                                     two), clipped to [-1, 1]: is the seed still helping more?
 ``seed_params``                     ``seed_params / (seed_params + host_params)``, [0, 1)
 ``gate_ready``                      1 when the gate to the next stage would pass now
 ``embargo``                         ``min(embargo_remaining, 10) / 10``
 ``algorithm_multiply``              1 when the seed blends with MULTIPLY (else ADD/GATE)
 ``blueprint/<name>`` (one each)     one-hot of the seed's blueprint (all 0 when empty)
==================================  ==========================================================

Every value passes through ``nan_to_num`` and is clipped to ``[-FEATURE_CLIP, FEATURE_CLIP]``,
so a diverged run (NaN/Inf losses) still yields a valid observation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.observation import Observation, SlotObservation
from esper.leyline.stages import SeedStage

__all__ = [
    "FEATURES_VERSION",
    "FEATURE_CLIP",
    "GLOBAL_FEATURES",
    "SLOT_FEATURES",
    "feature_names",
    "feature_size",
    "observation_features",
    "observation_layout",
]

FEATURE_CLIP = 5.0
"""Every feature lies in ``[-FEATURE_CLIP, FEATURE_CLIP]`` (the environment's ``Box`` bounds)."""

FEATURES_VERSION = 2
"""Bumped whenever a feature is added, removed or redefined: a policy records the version it
was trained on, and a run with another version refuses it."""

PLATEAU_MIN_DELTA = 0.005
HORIZON = 100
"""Epochs-left feature scale: runs up to this many epochs are told apart."""

GLOBAL_FEATURES: tuple[str, ...] = (
    "progress",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "val_acc_delta",
    "val_acc_delta3",
    "train_loss_delta",
    "plateau",
    "budget_used",
    "best_gap",
    "active_fraction",
    "epochs_left",
    "budget_left",
)

_STAGES: tuple[SeedStage, ...] = tuple(SeedStage)

SLOT_FEATURES: tuple[str, ...] = (
    *(f"stage/{s.name}" for s in _STAGES),
    "alpha",
    "alpha_target",
    "epochs_in_stage",
    "contribution",
    "contribution_measured",
    "contribution_trend",
    "seed_params",
    "gate_ready",
    "embargo",
    "algorithm_multiply",
)
"""Per-slot features before the blueprint one-hot."""

_OCCUPIED = frozenset(
    {SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED}
)


def feature_size(n_slots: int, n_blueprints: int) -> int:
    """Length of the feature vector for ``n_slots`` slots and ``n_blueprints`` blueprints."""
    return len(GLOBAL_FEATURES) + n_slots * (len(SLOT_FEATURES) + n_blueprints)


def feature_names(slot_ids: Sequence[str], blueprints: Sequence[str]) -> list[str]:
    """Names of every feature, in vector order (``slot/<id>/<feature>`` for slot features)."""
    per_slot = [*SLOT_FEATURES, *(f"blueprint/{b}" for b in blueprints)]
    return [*GLOBAL_FEATURES, *(f"slot/{sid}/{name}" for sid in slot_ids for name in per_slot)]


def observation_features(obs: Observation) -> np.ndarray:
    """The observation as a ``[feature_size(len(obs.slots), len(obs.blueprints))]`` float32 vector."""
    parts = [_global_features(obs)]
    parts += [_slot_features(s, obs) for s in obs.slots]
    vec = np.nan_to_num(np.concatenate(parts), nan=0.0, posinf=FEATURE_CLIP, neginf=-FEATURE_CLIP)
    return np.clip(vec, -FEATURE_CLIP, FEATURE_CLIP).astype(np.float32)  # clip first: no overflow


def _log1p(x: float) -> float:
    return math.log1p(max(x, 0.0)) if math.isfinite(x) else FEATURE_CLIP


def _global_features(obs: Observation) -> np.ndarray:
    accs = obs.val_accuracy_history or (obs.val_accuracy,)
    losses = obs.train_loss_history or (obs.train_loss,)
    prev_loss = losses[-2] if len(losses) > 1 else losses[-1]
    loss_delta = (losses[-1] - prev_loss) / max(abs(prev_loss), 1e-8) if len(losses) > 1 else 0.0
    budget = obs.max_seed_params or max(obs.host_params, 1)
    n_slots = max(len(obs.slots), 1)
    active = sum(s.stage in _OCCUPIED for s in obs.slots)
    values = [
        (obs.epoch + 1) / max(obs.max_epochs, 1),
        _log1p(obs.train_loss),
        obs.train_accuracy,
        _log1p(obs.val_loss),
        obs.val_accuracy,
        accs[-1] - (accs[-2] if len(accs) > 1 else accs[-1]),
        accs[-1] - accs[max(len(accs) - 4, 0)],
        float(np.clip(loss_delta, -1.0, 1.0)),
        min(obs.plateau_epochs(PLATEAU_MIN_DELTA) / max(obs.max_epochs, 1), 1.0),
        obs.seed_params / budget,
        max(accs) - accs[-1],
        active / n_slots,
        min(max(obs.max_epochs - obs.epoch - 1, 0), HORIZON) / HORIZON,
        1.0 - obs.seed_params / obs.max_seed_params if obs.max_seed_params else 1.0,
    ]
    return np.asarray(values, dtype=np.float64)


def _slot_features(slot: SlotObservation, obs: Observation) -> np.ndarray:
    stage = np.zeros(len(_STAGES))
    stage[_STAGES.index(slot.stage)] = 1.0
    measured = slot.contribution is not None and math.isfinite(slot.contribution)
    contribution = float(np.clip(slot.contribution, -1.0, 1.0)) if measured else 0.0  # type: ignore[arg-type]
    blueprint = np.zeros(len(obs.blueprints))
    if slot.blueprint is not None and slot.blueprint in obs.blueprints:
        blueprint[obs.blueprints.index(slot.blueprint)] = 1.0
    values = [
        slot.alpha,
        slot.alpha_target,
        min(slot.epochs_in_stage, 20) / 20,
        contribution,
        float(measured),
        _trend(slot.contribution_history),
        slot.seed_params / max(slot.seed_params + obs.host_params, 1),
        float(slot.gate_ready),
        min(slot.embargo_remaining, 10) / 10,
        float(slot.alpha_algorithm == AlphaAlgorithm.MULTIPLY),
    ]
    return np.concatenate([stage, np.asarray(values, dtype=np.float64), blueprint])


def _trend(history: Sequence[float]) -> float:
    finite = [c for c in history[-2:] if math.isfinite(c)]
    return float(np.clip(finite[1] - finite[0], -1.0, 1.0)) if len(finite) == 2 else 0.0


def observation_layout(slot_ids: Sequence[str], blueprints: Sequence[str]) -> dict[str, object]:
    """What a policy's inputs and heads mean: slots, blueprints and the feature version."""
    return {"slots": list(slot_ids), "blueprints": list(blueprints), "features": FEATURES_VERSION}
