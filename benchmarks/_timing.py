"""Shared timing helpers for the benchmark scripts: interleaved medians, machine info, JSON.

Usage from a script (``OMP_WAIT_POLICY`` must be set before torch loads OpenMP, hence the
``os.environ`` line above the torch import in each script)::

    from _timing import machine_info, measure, paired_ratio, pin_threads, write_json

    pin_threads(1)
    res = measure({"floor": lambda: torch.lerp(h, s, w), "ours": lambda: blend_add(h, s, a)},
                  repeats=31)
    res["ours"].median_us, paired_ratio(res["ours"], res["floor"]).median
    write_json("benchmarks/results/x.json", {"machine": machine_info(), ...})

Method: each repeat times a batch of ``inner`` back-to-back calls of one function with
``time.perf_counter_ns`` and divides by ``inner``. The functions of one ``measure`` call are
interleaved: every repeat runs each of them once, in a freshly shuffled order, so a neighbour's
burst of load hits all of them alike and none always runs first or always after the same one
(whose leftovers in the caches would favour or penalise it). The result is the median over
repeats, with the quartiles for the spread and the minimum. :func:`paired_ratio` compares two
functions repeat by repeat, the most robust estimate on a shared machine. Garbage collection
is off while timing.

Every batch is also timed with ``time.process_time_ns`` (CPU time of this process, all its
threads). Wall time is what a user waits for and the default; CPU time does not count the
time slices the scheduler gives to other processes, so on an oversubscribed machine
(``machine_info()["load_average"]`` above the core count) ``clock="cpu"`` ranks variants far
more reliably. Both medians are always kept (``wall_median_us``, ``cpu_median_us``).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Before torch is imported anywhere: OpenMP threads that spin-wait stall badly on a shared
# machine (README, "Development"). Scripts also set it above their own torch import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch

__all__ = [
    "Ratio",
    "Timing",
    "calibrate_inner",
    "describe",
    "fmt_table",
    "machine_info",
    "measure",
    "paired_ratio",
    "pin_threads",
    "write_json",
]


@dataclass(frozen=True, slots=True)
class Timing:
    """Per-call time of one function, in microseconds, over ``repeats`` batches of ``inner`` calls.

    ``median_us`` .. ``min_us`` and ``samples_us`` are on ``clock`` ("wall" or "cpu");
    ``wall_median_us`` and ``cpu_median_us`` are the medians on both clocks. ``samples_us``
    holds the per-call time of each batch in the order the repeats ran, so two timings from
    one :func:`measure` call can be compared repeat by repeat (:func:`paired_ratio`).
    """

    median_us: float
    p25_us: float
    p75_us: float
    min_us: float
    repeats: int
    inner: int
    clock: str = "wall"
    wall_median_us: float = float("nan")
    cpu_median_us: float = float("nan")
    samples_us: tuple[float, ...] = field(default=(), repr=False)

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        d = asdict(self)
        if not samples:
            del d["samples_us"]
        return d


@dataclass(frozen=True, slots=True)
class Ratio:
    """Distribution of the per-repeat ratio ``a / b`` (median and quartiles)."""

    median: float
    p25: float
    p75: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    if len(xs) == 1:
        return xs[0], xs[0], xs[0]
    q = statistics.quantiles(xs, n=4)
    return q[0], statistics.median(xs), q[2]


def paired_ratio(a: Timing, b: Timing) -> Ratio:
    """Median (and quartiles) over repeats of ``a / b`` measured in the same repeat.

    Both must come from one :func:`measure` call. Pairing cancels load that drifts slowly
    between repeats (a neighbour's job starting or stopping), which the ratio of the two
    medians does not.
    """
    if len(a.samples_us) != len(b.samples_us) or not a.samples_us:
        raise ValueError("paired_ratio needs two timings from the same measure() call")
    p25, med, p75 = _quartiles([x / y for x, y in zip(a.samples_us, b.samples_us, strict=True)])
    return Ratio(med, p25, p75)


def pin_threads(n: int = 1) -> int:
    """Use ``n`` intra-op threads (and one inter-op thread where still settable); returns ``n``."""
    torch.set_num_threads(n)
    # Only settable before the first inter-op parallel work; harmless to skip when too late.
    with contextlib.suppress(RuntimeError):
        torch.set_num_interop_threads(1)
    return torch.get_num_threads()


def _time_batch(fn: Callable[[], object], inner: int) -> int:
    start = time.perf_counter_ns()
    for _ in range(inner):
        fn()
    return time.perf_counter_ns() - start


def _time_batch_both(fn: Callable[[], object], inner: int) -> tuple[int, int]:
    """(wall ns, process CPU ns) of ``inner`` calls."""
    cpu0, wall0 = time.process_time_ns(), time.perf_counter_ns()
    for _ in range(inner):
        fn()
    wall1, cpu1 = time.perf_counter_ns(), time.process_time_ns()
    return wall1 - wall0, cpu1 - cpu0


def calibrate_inner(fn: Callable[[], object], target_s: float = 2e-3, max_inner: int = 100_000) -> int:
    """Calls per batch so that one batch of ``fn`` takes about ``target_s`` (at least 1)."""
    fn()  # warm-up: first-call allocations, lazy init
    inner = 1
    while inner < max_inner:
        elapsed = _time_batch(fn, inner) / 1e9
        if elapsed >= target_s / 4:
            return max(1, min(max_inner, round(inner * target_s / max(elapsed, 1e-9))))
        inner *= 4
    return max_inner


def measure(
    fns: Mapping[str, Callable[[], object]],
    repeats: int = 31,
    inner: int | None = None,
    *,
    target_s: float = 2e-3,
    warmup: int = 2,
    clock: str = "wall",
) -> dict[str, Timing]:
    """Interleaved per-call timings of ``fns``: the median (and quartiles) over ``repeats`` batches.

    Args:
        fns: name -> zero-argument callable. The first one is the reference used to size the
            batches when ``inner`` is None, so every function runs the same number of calls per
            batch (fair for functions of similar cost).
        repeats: batches per function (odd numbers give a true median).
        inner: calls per batch; None calibrates it so that a batch of the first function takes
            about ``target_s``.
        target_s: batch duration aimed at by the calibration.
        warmup: untimed batches per function before timing.
        clock: "wall" (``perf_counter_ns``) or "cpu" (``process_time_ns``) for the statistics.
    """
    if clock not in ("wall", "cpu"):
        raise ValueError(f"clock must be 'wall' or 'cpu', got {clock!r}")
    names = list(fns)
    if not names:
        return {}
    if inner is None:
        inner = calibrate_inner(fns[names[0]], target_s)
    for _ in range(warmup):
        for name in names:
            _time_batch(fns[name], inner)
    order, rng = list(names), random.Random(0)  # seeded: the same schedule on every run
    wall: dict[str, list[float]] = {name: [] for name in names}
    cpu: dict[str, list[float]] = {name: [] for name in names}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            rng.shuffle(order)
            for name in order:
                w, c = _time_batch_both(fns[name], inner)
                wall[name].append(w / inner / 1e3)
                cpu[name].append(c / inner / 1e3)
    finally:
        if gc_was_enabled:
            gc.enable()
    out = {}
    for name in names:
        xs = wall[name] if clock == "wall" else cpu[name]
        p25, med, p75 = _quartiles(xs)
        out[name] = Timing(
            med,
            p25,
            p75,
            min(xs),
            repeats,
            inner,
            clock,
            statistics.median(wall[name]),
            statistics.median(cpu[name]),
            tuple(xs),
        )
    return out


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def machine_info() -> dict[str, Any]:
    """CPU model, cores, threads in use, torch/python versions, CUDA availability."""
    flags = _cpu_flags()
    info: dict[str, Any] = {
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_flags_of_note": sorted(flags & {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "f16c"}),
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        info["cuda_device"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError):  # not on every platform
        info["load_average"] = os.getloadavg()
    return info


def describe(info: Mapping[str, Any], clock: str = "wall") -> str:
    """One line about the machine and the run, for the top of a printed report."""
    load = info.get("load_average")
    load_s = "n/a" if load is None else "/".join(f"{x:.1f}" for x in load)
    return (
        f"{info['cpu_model']}, {info['cpu_count']} cores, {info['torch_threads']} torch thread(s), "
        f"torch {info['torch']}, clock={clock}, load average (1/5/15 min) {load_s}"
    )


def write_json(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> Path:
    """Write ``payload`` as indented JSON atomically (temp file in the same folder + ``os.replace``)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(payload, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def fmt_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-markdown table (also readable on a terminal); floats get 2-3 significant decimals."""

    def cell(v: Any) -> str:
        if isinstance(v, float):
            if v != v:
                return "n/a"
            return f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"
        return str(v)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in cells:
        lines.append("| " + " | ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) + " |")
    return "\n".join(lines)


def add_common_args(parser: Any, *, out: str, quick_help: str, no_compile_help: str) -> None:
    """The options every Kasmina benchmark takes: --quick, --out, --threads, --no-compile, --clock."""
    parser.add_argument("--quick", action="store_true", help=quick_help)
    parser.add_argument("--out", default=out, help="JSON output path")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--no-compile", action="store_true", help=no_compile_help)
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="clock for medians and ratios (cpu: process CPU time, immune to other processes' time slices)",
    )
