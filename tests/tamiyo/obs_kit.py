"""A hand-built Observation for controller tests (features, masks, learned policy)."""

from __future__ import annotations

from esper.leyline.observation import Observation, SlotObservation
from esper.leyline.stages import SeedStage

BLUEPRINTS = ("noop", "norm", "conv_small")


def make_obs(stages=(SeedStage.DORMANT, SeedStage.TRAINING), loss=1.0, acc=0.5, contribution=0.1, **kw):
    slots = tuple(
        SlotObservation(
            slot_id=f"r0c{i}", channels=4, stage=s,
            blueprint=None if s == SeedStage.DORMANT else "norm",
            contribution=None if s == SeedStage.DORMANT else contribution,
            seed_params=0 if s == SeedStage.DORMANT else 10,
            gate_ready=s == SeedStage.TRAINING,
        )
        for i, s in enumerate(stages)
    )  # fmt: skip
    base = dict(
        epoch=2, max_epochs=10, topology="cnn", train_loss=loss, train_accuracy=acc, val_loss=loss,
        val_accuracy=acc, val_accuracy_history=(0.1, 0.3, acc), train_loss_history=(2.0, 1.5, loss),
        host_params=100, seed_params=10, max_seed_params=None, slots=slots, blueprints=BLUEPRINTS,
        blueprint_params={s.slot_id: {b: 5 for b in BLUEPRINTS} for s in slots},
    )  # fmt: skip
    base.update(kw)
    return Observation(**base)
