"""DDP scaling on this CPU: epoch time and samples/s on 1 and 2 gloo ranks, and the re-wrap cost.

Each configuration runs in fresh processes (``torch.multiprocessing`` spawn, one torch thread
per rank, ``OMP_WAIT_POLICY=PASSIVE``). Every rank builds the task's engine as ``esper train``
does, grows a seed into every slot through the door (to BLENDING), then times ``repeats``
epochs of ``Engine.train_epoch`` (train pass, validation, counterfactuals, ``step_epoch``),
with a barrier before each; rank 0 reports the median. Rows:

* 1 rank at the task's batch size B;
* 2 ranks at B/2 each: the same global batch, the same optimizer steps (strong scaling);
* 2 ranks at B each: global batch 2B, half the steps (weak scaling).

The re-wrap is what the engine does after every structural change under DDP: a fresh
``DistributedDataParallel`` over the grown model (hooks, buckets, the broadcast of rank 0's
parameters and buffers): median of ``repeats`` calls on 2 ranks.

    python benchmarks/ddp_scaling.py [--task digits] [--repeats 7] [--out PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import json
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).parent))
from _timing import fmt_table, machine_info, pin_threads, write_json
from esper.data import get_task
from esper.leyline.actions import Action, LifecycleOp
from esper.tolaria.build import engine_for_task
from esper.tolaria.config import RunConfig
from esper.tolaria.distributed import Launch, distributed_session
from esper.tolaria.engine import Engine


def grow(engine: Engine) -> None:
    """A seed in every slot, walked to BLENDING through the door (gates need one epoch)."""
    engine.train_epoch()  # the door acts on an observation: a finished epoch
    for slot in engine.model.slots():
        for op in (LifecycleOp.GERMINATE, LifecycleOp.ADVANCE):
            outcome = engine.apply(Action(op, slot=slot.slot_id, blueprint="conv_light"))
            assert outcome.applied, outcome
    engine.train_epoch()
    for slot in engine.model.slots():
        assert engine.apply(Action(LifecycleOp.ADVANCE, slot=slot.slot_id)).applied


def timed(fn: Any, repeats: int, sync: bool) -> list[float]:
    """Seconds per call, with a barrier before each so rank 0 times the whole job."""
    times = []
    for _ in range(repeats):
        if sync:
            dist.barrier()
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def worker(rank: int, world: int, port: int, task_name: str, batch: int, repeats: int, out: str) -> None:
    pin_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    task = get_task(task_name, batch_size=batch)
    config = RunConfig(task=task_name, epochs=10_000, min_training_epochs=0, device="cpu", quiet=True)
    with distributed_session("cpu", Launch(rank, world, rank), timeout=timedelta(minutes=5)) as comm:
        engine = engine_for_task(config, task, comm=comm)
        grow(engine)
        engine.train_epoch()  # warm-up at the grown size
        epochs = timed(engine.train_epoch, repeats, sync=world > 1)
        wraps = timed(lambda: comm.wrap(engine.model), repeats, sync=world > 1)
        samples = sum(len(y) for _, y in engine.train_data) * world  # what one epoch trains on
        if rank == 0:
            result = {"epoch_s": epochs, "wrap_s": wraps, "samples": samples, "steps": len(engine.train_data)}
            Path(out).write_text(json.dumps(result))


def run(world: int, task: str, batch: int, repeats: int) -> dict[str, Any]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "result.json")
        job = (world, port, task, batch, repeats, out)
        mp.start_processes(worker, job, nprocs=world, start_method="spawn")
        result: dict[str, Any] = json.loads(Path(out).read_text())
    epoch = statistics.median(result["epoch_s"])
    q = statistics.quantiles(result["epoch_s"], n=4)
    result.update(
        epoch_p25_s=q[0],
        epoch_p75_s=q[2],
        world_size=world,
        batch_per_rank=batch,
        epoch_median_s=epoch,
        samples_per_s=result["samples"] / epoch,
        wrap_median_ms=statistics.median(result["wrap_s"]) * 1e3,
    )
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="digits")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", default="benchmarks/results/ddp_scaling.json")
    args = parser.parse_args()
    threads = pin_threads(1)
    b = get_task(args.task).batch_size
    runs = [run(1, args.task, b, args.repeats), run(2, args.task, b // 2, args.repeats)]
    runs.append(run(2, args.task, b, args.repeats))
    base = runs[0]["epoch_median_s"]
    rows = [
        [
            r["world_size"],
            r["batch_per_rank"],
            r["batch_per_rank"] * r["world_size"],
            r["steps"],
            r["epoch_median_s"] * 1e3,
            f"{r['epoch_p25_s'] * 1e3:.0f}-{r['epoch_p75_s'] * 1e3:.0f}",
            r["samples_per_s"],
            base / r["epoch_median_s"],
        ]
        for r in runs
    ]
    info = machine_info()
    print(
        f"task {args.task}, grown to a BLENDING seed in every slot; {threads} torch thread per rank, "
        f"gloo, median of {args.repeats} epochs; load average {info.get('load_average')}"
    )
    headers = ["ranks", "batch/rank", "global batch", "steps", "ms / epoch", "IQR ms", "samples/s"]
    headers.append("speed-up")
    print(fmt_table(headers, rows))
    print(
        f"re-wrap after a growth event (fresh DDP over the grown model, 2 ranks): "
        f"{runs[1]['wrap_median_ms']:.2f} ms median (1 rank: no wrap, {runs[0]['wrap_median_ms']:.4f} ms)"
    )
    write_json(args.out, {"benchmark": "ddp_scaling", "task": args.task, "machine": info, "runs": runs})


if __name__ == "__main__":
    main()
