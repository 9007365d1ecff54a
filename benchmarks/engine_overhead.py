"""Engine overhead: one Tolaria epoch (heuristic controller) vs a plain PyTorch loop, same model.

Both train the same final architecture: the task's host with a fossilized seed in every slot
(``conv_heavy`` then ``conv_light``). The engine epoch is everything ``esper train heuristic``
does per epoch — train, evaluate, counterfactuals, ``step_epoch``, the heuristic's decision,
event diffing and an atomic checkpoint. The plain loop is a hand-written AdamW train pass plus
an evaluation pass. Interleaved, median of repeats; target: engine within 1.10x.

    python benchmarks/engine_overhead.py [--task digits] [--repeats 9] [--out PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812

sys.path.insert(0, str(Path(__file__).parent))
from _timing import fmt_table, machine_info, measure, paired_ratio, pin_threads, write_json
from esper.data import Task, get_task
from esper.integrations.loop import Grower
from esper.kasmina.model import MorphogeneticModel
from esper.leyline.stages import SeedStage
from esper.recipes.train import save
from esper.tamiyo import HeuristicPolicy
from esper.tolaria.build import engine_for_task
from esper.tolaria.config import RunConfig
from esper.tolaria.data import TaskBatches
from esper.tolaria.engine import Engine

BLUEPRINTS = ("conv_heavy", "conv_light", "bottleneck")


def fossilize_all(engine: Engine) -> None:
    """Grow a seed in every slot and walk it to FOSSILIZED (gates relaxed by the config)."""
    model = engine.model
    for i, slot in enumerate(model.slots()):
        model.germinate_seed(BLUEPRINTS[i % len(BLUEPRINTS)], slot=slot.slot_id)
        slot.advance_stage()  # -> TRAINING
    x, y = next(iter(engine.train_data))
    F.cross_entropy(model(x), y).backward()
    for slot in model.slots():
        slot.step_epoch()
        assert slot.advance_stage().passed  # -> BLENDING
        slot.set_alpha(1.0)
        assert slot.advance_stage().passed  # -> HOLDING
        slot.record_contribution(0.01)
        assert slot.advance_stage().passed  # -> FOSSILIZED
        assert slot.stage == SeedStage.FOSSILIZED
    model.zero_grad(set_to_none=True)
    engine.groups.sync(model)


def train_pass(model: MorphogeneticModel, opt: torch.optim.Optimizer, task: Task, epoch: list[int]) -> None:
    """A hand-written AdamW train pass (the part both hand-written loops share)."""
    model.train()
    gen = torch.Generator().manual_seed(epoch[0])
    epoch[0] += 1
    for x, y in task.train_batches(gen):
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0, foreach=True)
        opt.step()


def plain_epoch(model: MorphogeneticModel, opt: torch.optim.Optimizer, task: Task, epoch: list[int]) -> None:
    """The hand-written baseline: one AdamW train pass and one evaluation pass."""
    train_pass(model, opt, task, epoch)
    model.eval()
    hits = torch.zeros((), dtype=torch.long)
    with torch.no_grad():
        for x, y in task.val_batches():
            hits += (model(x).argmax(-1) == y).sum()
    hits.item()


def grower_epoch(grower: Grower, opt: torch.optim.Optimizer, task: Task, epoch: list[int]) -> None:
    """The own-loop path: the user's train pass, then ``grower.step()`` instead of their evaluation."""
    train_pass(grower.model, opt, task, epoch)
    grower.step()


def engine_epoch(engine: Engine, controller: HeuristicPolicy, config: RunConfig, run_dir: Path) -> None:
    """What ``esper train heuristic`` does per epoch: the three calls and a checkpoint."""
    engine.train_epoch()
    engine.ask(controller)
    save(engine, controller, config, {}, run_dir / "checkpoint.pt")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--out", default="benchmarks/results/engine_overhead.json")
    args = parser.parse_args()
    threads = pin_threads(1)
    run_dir = Path(tempfile.mkdtemp())
    cfg = RunConfig(task=args.task, epochs=10_000, min_training_epochs=0, min_holding_epochs=0, quiet=True)
    task = get_task(args.task)
    engine = engine_for_task(cfg, task)
    controller = HeuristicPolicy()
    fossilize_all(engine)
    plain_model = copy.deepcopy(engine.model)
    opt = torch.optim.AdamW(plain_model.parameters(), lr=engine.groups.lr(), weight_decay=cfg.weight_decay)
    own_model = copy.deepcopy(engine.model)
    own_opt = torch.optim.AdamW(own_model.parameters(), lr=engine.groups.lr(), weight_decay=cfg.weight_decay)
    grower = Grower(
        own_model,
        own_opt,
        epochs=10_000,
        controller=HeuristicPolicy(),
        val_data=TaskBatches(task.val, task.batch_size, torch.device("cpu"), seed=None),
    )
    counter, own_counter = [0], [0]
    res = measure(
        {
            "plain": lambda: plain_epoch(plain_model, opt, task, counter),
            "engine": lambda: engine_epoch(engine, controller, cfg, run_dir),
            "grower": lambda: grower_epoch(grower, own_opt, task, own_counter),
        },
        repeats=args.repeats,
        inner=1,
        warmup=1,
    )
    ratio = paired_ratio(res["engine"], res["plain"])
    own = paired_ratio(res["grower"], res["plain"])
    params = sum(p.numel() for p in engine.model.parameters())
    rows = [
        ["plain PyTorch loop", res["plain"].median_us / 1e3, 1.0],
        ["Tolaria engine + heuristic", res["engine"].median_us / 1e3, ratio.median],
        ["own loop + Grower.step()", res["grower"].median_us / 1e3, own.median],
    ]
    print(
        f"task {args.task}, {params} parameters "
        f"(host + {engine.model.count_fossilized_seeds()} fossilized seeds), "
        f"{threads} thread(s), median of {args.repeats} interleaved epochs"
    )
    print(fmt_table(["loop", "ms / epoch", "ratio to plain (paired)"], rows))
    print(
        f"target <= 1.10x: {'met' if ratio.median <= 1.10 else 'NOT met'} "
        f"(paired ratio IQR {ratio.p25:.3f}-{ratio.p75:.3f})"
    )
    print(
        f"own loop target <= 1.05x: {'met' if own.median <= 1.05 else 'NOT met'} "
        f"(paired ratio IQR {own.p25:.3f}-{own.p75:.3f})"
    )
    write_json(
        args.out,
        {
            "benchmark": "engine_overhead",
            "task": args.task,
            "params": params,
            "machine": machine_info(),
            "threads": threads,
            "plain": res["plain"].to_dict(),
            "engine": res["engine"].to_dict(),
            "ratio": ratio.to_dict(),
            "grower": res["grower"].to_dict(),
            "grower_ratio": own.to_dict(),
        },
    )


if __name__ == "__main__":
    main()
