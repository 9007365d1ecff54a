"""Data-parallel runs for the DDP tests: a scripted lifecycle on 1 or 2 gloo ranks (CPU).

Workers run in processes started by ``torch.multiprocessing`` (spawn), so everything they
call lives at module level here; each writes what it saw to ``out/<scenario>-rank<r>.pt``.
"""

from __future__ import annotations

import os
import socket
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from tolaria_kit import ScriptedPolicy, tiny_task
from torch import nn

from esper import CNNHost, Grower, MorphogeneticModel, QualityGates, inject_slots
from esper.leyline.actions import Action, LifecycleOp
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage
from esper.tolaria.data import TaskBatches, set_data_epoch
from esper.tolaria.distributed import Communicator, Launch, ddp_wrap, distributed_session, shard_data
from esper.tolaria.engine import Engine, EngineConfig

GLOBAL_BATCH = 32


def lifecycle(observation: Observation) -> Action | None:
    """Walk the first slot to FOSSILIZED (ADD) and the second to BLENDING and PRUNED (GATE):
    germinate, TRAINING, BLENDING, HOLDING, fossilize and prune all happen under DDP."""
    first, second = observation.slots[0], observation.slots[1]
    if first.stage == SeedStage.DORMANT:
        return Action(LifecycleOp.GERMINATE, slot=first.slot_id, blueprint="conv_light", tempo_epochs=2)
    if second.stage == SeedStage.DORMANT and first.stage != SeedStage.FOSSILIZED:
        return Action(
            LifecycleOp.GERMINATE,
            slot=second.slot_id,
            blueprint="conv_light",
            alpha_algorithm=AlphaAlgorithm.GATE,
            tempo_epochs=2,
        )
    if second.stage == SeedStage.BLENDING:
        return Action(LifecycleOp.PRUNE, slot=second.slot_id)
    for slot in (first, second):
        if slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING):
            return Action(LifecycleOp.ADVANCE, slot=slot.slot_id)
    if first.stage == SeedStage.HOLDING:
        return Action(LifecycleOp.FOSSILIZE, slot=first.slot_id)
    return None


def widen(observation: Observation) -> Action | None:
    """Width growth in the second slot, to FOSSILIZED (merged into the host's layers, whose
    parameters are then new tensors: the re-wrap must pick them up)."""
    slot = observation.slots[1]
    if slot.stage == SeedStage.DORMANT:
        return Action(LifecycleOp.GERMINATE, slot=slot.slot_id, blueprint="widen", tempo_epochs=2)
    if slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING):
        return Action(LifecycleOp.ADVANCE, slot=slot.slot_id)
    if slot.stage == SeedStage.HOLDING:
        return Action(LifecycleOp.FOSSILIZE, slot=slot.slot_id)
    return None


SCRIPTS = {"lifecycle": lifecycle, "widen": widen}

GATES = QualityGates(min_training_epochs=1, min_holding_epochs=0, embargo_epochs=1, permissive=True)


def cnn_host() -> MorphogeneticModel:
    """The digits host (with BatchNorm: its statistics must follow rank 0)."""
    torch.manual_seed(0)
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1)
    return MorphogeneticModel(host, gates=GATES)


def plain_net() -> MorphogeneticModel:
    """A conv net without batch statistics, so 2 ranks x 16 is the same math as 1 rank x 32."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10),
    )  # fmt: skip
    return inject_slots(net, ["1", "3"], example_input=torch.zeros(2, 1, 8, 8), gates=GATES)


MODELS = {"cnn": cnn_host, "plain": plain_net}


class StaleWrap:
    """The bug the engine's re-wrap prevents: DDP built once, before any seed exists."""

    def __init__(self) -> None:
        self.wrapped: nn.Module | None = None

    def __call__(self, model: MorphogeneticModel) -> nn.Module:
        if self.wrapped is None:
            self.wrapped = ddp_wrap(model)
        return self.wrapped


def run_scenario(
    comm: Communicator, model: str, rewrap: bool, epochs: int, script: str = "lifecycle"
) -> dict[str, Any]:
    """The scripted lifecycle for ``epochs`` epochs; the model's state after every epoch."""
    task = tiny_task(n_train=192, n_val=96)
    per_rank = GLOBAL_BATCH // comm.world_size
    engine = Engine(
        MODELS[model](),
        TaskBatches(task.train, per_rank, comm.device, seed=0),
        TaskBatches(task.val, per_rank, comm.device, seed=None),
        EngineConfig(epochs=epochs, lr=1e-2),
        loss_fn=task.loss,
        metric_fn=task.correct,
        comm=comm,
        wrap=None if rewrap else StaleWrap(),
    )
    controller = ScriptedPolicy(SCRIPTS[script])
    states, stages = [], []
    while engine.epoch < epochs:
        engine.train_epoch()
        engine.ask(controller)
        state = engine.model.state_dict()
        states.append({k: v.detach().clone() for k, v in state.items() if torch.is_tensor(v)})
        stages.append({s.slot_id: int(s.stage) for s in engine.model.slots()})
    val_loss, val_acc = engine.evaluate()
    return {"states": states, "stages": stages, "history": engine.history, "final": (val_loss, val_acc)}


SCENARIOS = {
    "lifecycle": ("cnn", True, 11, "lifecycle"),  # germinate .. fossilize, and prune .. RESETTING
    "width": ("cnn", True, 7, "widen"),  # width growth, fossilized into the host
    "equivalence": ("plain", True, 7, "lifecycle"),  # through germinate, TRAINING, BLENDING, HOLDING
    "stale": ("cnn", False, 5, "lifecycle"),  # the seed trains from epoch 2 on
}
"""name -> (model, re-wrap after growth, epochs, script)."""


def run_grower(comm: Communicator, epochs: int) -> dict[str, Any]:
    """The own-loop object: the user's loop trains through ``grower.forward_model``."""
    task = tiny_task(n_train=192, n_val=96)
    model = plain_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    val = TaskBatches(task.val, GLOBAL_BATCH // comm.world_size, comm.device, seed=None)
    controller = ScriptedPolicy(lifecycle)
    grower = Grower(model, optimizer, epochs=epochs, controller=controller, val_data=val, comm=comm)
    train = shard_data(
        TaskBatches(task.train, GLOBAL_BATCH // comm.world_size, comm.device, seed=0),
        comm.rank,
        comm.world_size,
        train=True,
    )
    states, stages = [], []
    for epoch in range(epochs):
        set_data_epoch(train, epoch)
        forward, total = grower.forward_model, 0.0
        for x, y in train:
            optimizer.zero_grad(set_to_none=True)
            loss = task.loss(forward(x), y)
            loss.backward()
            optimizer.step()
            total += loss.item()
        grower.step(train_loss=total / len(train))
        states.append({k: v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)})
        stages.append({s.slot_id: int(s.stage) for s in model.slots()})
    return {"states": states, "stages": stages}


def worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank: every scenario in turn on one process group."""
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    launch = Launch(rank=rank, world_size=world_size, local_rank=rank)
    with distributed_session("cpu", launch, timeout=timedelta(seconds=60)) as comm:
        for name, (model, rewrap, epochs, script) in SCENARIOS.items():
            result = run_scenario(comm, model, rewrap, epochs, script)
            torch.save(result, Path(out) / f"{name}-rank{rank}.pt")
        torch.save(run_grower(comm, epochs=7), Path(out) / f"grower-rank{rank}.pt")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn(world_size: int, out: Path, timeout: float = 120) -> None:
    """Run :func:`worker` on ``world_size`` processes; kill them all if they overrun."""
    context = mp.start_processes(
        worker, args=(world_size, free_port(), str(out)), nprocs=world_size, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            raise TimeoutError(f"the {world_size}-rank run did not finish in {timeout:.0f}s")


def load(out: Path, name: str, rank: int) -> dict[str, Any]:
    return torch.load(out / f"{name}-rank{rank}.pt", weights_only=False)
