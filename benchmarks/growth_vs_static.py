"""Growth vs static: does the heuristic's grown model beat a static model of the same size?

For each task, on held-out seeds (10000+i): the heuristic grows from the task's host; static
hosts train at fixed widths (``--host-channels``) and at the two widths that bracket the grown
runs' mean final parameter count. Reported per task: accuracy and parameters of every
controller and width, **static-matched** (static accuracy interpolated linearly in parameters at
the grown size, paired per seed), and **FLOPs to reach the static-large model's accuracy**
(static-large: the upper bracket, the smallest static host at least as big as the grown one),
read from the mean validation curve over seeds and its cumulative training FLOPs.

The bar (docs/results.md): on digits-impaired grown >= static-matched and grown reaches
static-large's final accuracy with fewer training FLOPs; on digits grown >= static-matched; on
charlm growth acts (blends and fossilizes) within the default budget.

    python benchmarks/growth_vs_static.py [--seeds 8] [--charlm-seeds 3] [--jobs 2] [--out PATH]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import multiprocessing
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))
from _timing import fmt_table, machine_info, pin_threads, write_json
from esper.karn.baselines import StaticPoint, flops_to_reach, interpolate_accuracy, mean_curve
from esper.karn.history import load_history
from esper.recipes.baselines import bracket_widths, static_params
from esper.recipes.train import run_training
from esper.tamiyo.factory import make_controller
from esper.tolaria.config import RunConfig

SEED_BASE = 10_000  # the held-out seeds of `esper eval`
STATIC_WIDTHS = {"digits-impaired": (2, 3, 4, 6), "digits": (8,), "charlm": (64, 68, 72)}
"""Static widths trained alongside the grown runs (the bracketing widths are added if missing)."""


def run_one(job: tuple[str, str, int, int | None, int | None]) -> dict[str, Any]:
    """One run (in a worker process, one torch thread): its summary and validation curve."""
    task, controller, seed, width, epochs = job
    pin_threads(1)
    out = str(Path(tempfile.mkdtemp(prefix="esper-bench-")) / "run")
    config = RunConfig(
        task=task, controller=controller, seed=seed, epochs=epochs, quiet=True, out=out, host_channels=width
    )
    summary = run_training(config, make_controller(config))
    series = load_history(out).series()
    summary["width"] = width
    summary["curve"] = {
        "val_accuracy": [e.val_accuracy for e in series],
        "train_flops": [e.train_flops for e in series],
    }
    return summary


def mean_std(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _pm(xs: list[float], digits: int = 4) -> str:
    m, s = mean_std(xs)
    return f"{m:.{digits}f} +- {s:.{digits}f}"


def mean_curve_of(runs: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """Per-epoch mean validation accuracy and mean cumulative FLOPs over runs."""
    return mean_curve([r["curve"]["val_accuracy"] for r in runs], [r["curve"]["train_flops"] for r in runs])


def analyse(
    task: str, grown: list[dict[str, Any]], static: dict[int, list[dict[str, Any]]]
) -> dict[str, Any]:
    """static-matched (per seed), static-large and FLOPs to its accuracy, for one task."""
    target = statistics.fmean(r["total_params"] for r in grown)
    low, high = bracket_widths(task, target)
    p_low, p_high = static_params(task, low), static_params(task, high)
    matched = [
        interpolate_accuracy(
            target, StaticPoint(p_low, a["final_val_accuracy"]), StaticPoint(p_high, b["final_val_accuracy"])
        )
        for a, b in zip(static[low], static[high], strict=True)
    ]
    grown_acc = [r["final_val_accuracy"] for r in grown]
    paired = [g - m for g, m in zip(grown_acc, matched, strict=True)]
    large_acc = statistics.fmean(r["final_val_accuracy"] for r in static[high])
    g_curve, l_curve = mean_curve_of(grown), mean_curve_of(static[high])
    return {
        "grown_params": target,
        "brackets": {"low": {"width": low, "params": p_low}, "high": {"width": high, "params": p_high}},
        "static_matched": matched,
        "grown_minus_matched": paired,
        "static_large": {"width": high, "params": p_high, "final_val_accuracy": large_acc},
        "flops_to_static_large_accuracy": {
            "grown": flops_to_reach(*g_curve, large_acc),
            "static_large": flops_to_reach(*l_curve, large_acc),
        },
        "total_train_flops": {"grown": g_curve[1][-1], "static_large": l_curve[1][-1]},
    }


def run_task(pool: Any, task: str, seeds: int, epochs: int | None) -> dict[str, Any]:
    """The grown runs and the static widths at once, then any bracket width not yet trained."""
    seed_list = [SEED_BASE + i for i in range(seeds)]
    grown_jobs = [(task, "heuristic", s, None, epochs) for s in seed_list]
    static_jobs = [(task, "static", s, w, epochs) for w in STATIC_WIDTHS[task] for s in seed_list]
    done = pool.map(run_one, grown_jobs + static_jobs)
    grown, static_runs = done[: len(grown_jobs)], done[len(grown_jobs) :]
    target = statistics.fmean(r["total_params"] for r in grown)
    missing = [w for w in dict.fromkeys(bracket_widths(task, target)) if w not in STATIC_WIDTHS[task]]
    static_runs += pool.map(run_one, [(task, "static", s, w, epochs) for w in missing for s in seed_list])
    widths = sorted({*STATIC_WIDTHS[task], *missing})
    static = {w: [r for r in static_runs if r["width"] == w] for w in widths}
    return {"heuristic": grown, "static": static, "analysis": analyse(task, grown, static)}


def _fmt_flops(x: float | None) -> str:
    return "not reached" if x is None else f"{x:.3g}"


def rows_for(task: str, result: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for width, runs in result["static"].items():
        acc = [r["final_val_accuracy"] for r in runs]
        rows.append(
            [
                task,
                f"static w{width}",
                runs[0]["total_params"],
                _pm(acc),
                "-",
                "-",
                f"{runs[-1]['train_flops']:.3g}",
            ]
        )
    g = result["heuristic"]
    rows.append([
        task, "heuristic", f"{statistics.fmean(r['total_params'] for r in g):.0f}",
        _pm([r["final_val_accuracy"] for r in g]),
        sum(r["seeds_fossilized"] for r in g), sum(r["seeds_pruned"] for r in g),
        f"{statistics.fmean(r['train_flops'] for r in g):.3g}",
    ])  # fmt: skip
    a = result["analysis"]
    rows.append([task, "static-matched", f"{a['grown_params']:.0f}", _pm(a["static_matched"]), "-", "-", "-"])
    return rows


def verdict(task: str, a: dict[str, Any]) -> str:
    diff = a["grown_minus_matched"]
    f = a["flops_to_static_large_accuracy"]
    return (
        f"{task}: grown ({a['grown_params']:.0f} params) - static-matched (w{a['brackets']['low']['width']}.."
        f"w{a['brackets']['high']['width']}) = {statistics.fmean(diff):+.4f} "
        f"(paired per seed {[round(d, 4) for d in diff]}); "
        f"FLOPs to static-large (w{a['static_large']['width']}) accuracy "
        f"{a['static_large']['final_val_accuracy']:.4f}: grown {_fmt_flops(f['grown'])}, "
        f"static-large {_fmt_flops(f['static_large'])}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--charlm-seeds", type=int, default=None, help="default: --seeds")
    parser.add_argument("--tasks", nargs="+", default=list(STATIC_WIDTHS), choices=list(STATIC_WIDTHS))
    parser.add_argument("--epochs", type=int, default=None, help="default: each task's (a quick check)")
    parser.add_argument("--jobs", type=int, default=2, help="worker processes (one torch thread each)")
    parser.add_argument("--out", default="benchmarks/results/growth_vs_static.json")
    args = parser.parse_args()
    threads = pin_threads(1)
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    with multiprocessing.get_context("spawn").Pool(args.jobs) as pool:
        for task in args.tasks:
            seeds = args.charlm_seeds or args.seeds if task == "charlm" else args.seeds
            results[task] = run_task(pool, task, seeds, args.epochs)
            rows += rows_for(task, results[task])
            print(verdict(task, results[task]["analysis"]), flush=True)
    headers = ["task", "controller", "params", "final val acc", "fossilized", "pruned", "train FLOPs"]
    print(f"\nheld-out seeds {SEED_BASE}.., {threads} torch thread(s) per run, {args.jobs} runs at once")
    print(fmt_table(headers, rows))
    for task in args.tasks:
        print(verdict(task, results[task]["analysis"]))
    write_json(args.out, {"benchmark": "growth_vs_static", "machine": machine_info(), "threads": threads,
                          "jobs": args.jobs, "seeds": args.seeds, "results": results})  # fmt: skip


if __name__ == "__main__":
    main()
