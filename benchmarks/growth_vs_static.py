"""Growth vs static: the heuristic controller against the same host with no seeds.

Runs ``static`` and ``heuristic`` on ``digits-impaired`` and ``digits`` for several seeds each and
prints mean +- std of final validation accuracy, parameters and wall time (one torch thread).
Target: on digits-impaired the heuristic beats static by more than the seed-to-seed spread,
with fossilized seeds; on digits it is not worse.

    python benchmarks/growth_vs_static.py [--seeds 3] [--epochs N] [--out PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _timing import fmt_table, machine_info, pin_threads, write_json
from esper.recipes.train import run_training
from esper.tamiyo.factory import make_controller
from esper.tolaria.config import RunConfig

TASKS = ("digits-impaired", "digits")
CONTROLLERS = ("static", "heuristic")


def run_one(task: str, controller: str, seed: int, epochs: int | None) -> dict[str, Any]:
    out = str(Path(tempfile.mkdtemp(prefix="esper-bench-")) / "run")
    config = RunConfig(task=task, controller=controller, seed=seed, epochs=epochs, quiet=True, out=out)
    return run_training(config, make_controller(config))


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: each task's default")
    parser.add_argument("--out", default="benchmarks/results/growth_vs_static.json")
    args = parser.parse_args()
    threads = pin_threads(1)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    rows = []
    for task in TASKS:
        results[task] = {}
        for controller in CONTROLLERS:
            runs = [run_one(task, controller, seed, args.epochs) for seed in range(args.seeds)]
            results[task][controller] = runs
            acc = mean_std([r["final_val_accuracy"] for r in runs])
            params = mean_std([float(r["total_params"]) for r in runs])
            wall = mean_std([r["wall_time_s"] for r in runs])
            rows.append(
                [
                    task,
                    controller,
                    runs[0]["epochs"],
                    f"{acc[0]:.4f} +- {acc[1]:.4f}",
                    f"{params[0]:.0f} +- {params[1]:.0f}",
                    sum(r["seeds_fossilized"] for r in runs),
                    sum(r["seeds_pruned"] for r in runs),
                    f"{wall[0]:.1f} +- {wall[1]:.1f}",
                ]
            )
            print(rows[-1], flush=True)
    headers = ["task", "controller", "epochs", "final val acc", "params", "fossilized", "pruned", "wall s"]
    print(f"\n{args.seeds} seeds per row, {threads} torch thread(s)")
    print(fmt_table(headers, rows))
    for task in TASKS:
        s = [r["final_val_accuracy"] for r in results[task]["static"]]
        h = [r["final_val_accuracy"] for r in results[task]["heuristic"]]
        margin = statistics.mean(h) - statistics.mean(s)
        spread = max(mean_std(s)[1], mean_std(h)[1])
        paired = [b - a for a, b in zip(s, h, strict=True)]
        print(
            f"{task}: heuristic - static = {margin:+.4f} (seed spread {spread:.4f}; "
            f"paired per-seed differences {[round(d, 4) for d in paired]})"
        )
    write_json(
        args.out,
        {
            "benchmark": "growth_vs_static",
            "machine": machine_info(),
            "threads": threads,
            "seeds": args.seeds,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
