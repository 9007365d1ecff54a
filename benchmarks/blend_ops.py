"""Blend-op cost against the floor, raw ``torch.lerp``, from 8x16 to ~1e7 elements, per dtype.

Variants, timed interleaved in one process (median per call over many batches; ratios are
medians of per-repeat ratios, see ``_timing.paired_ratio``):

* ``floor``: ``torch.lerp(h, s, w)`` with ``s`` already in the host dtype and a 0-dim ``w`` in
  the host dtype (the least a blend can do). For the mixed case (bf16 host, fp32 seed) the
  reference is ``floor+cast``, ``torch.lerp(h, s.to(h.dtype), w)``: the conversion is required.
* ``floor(fp32 w)`` (bf16/fp16): the same lerp with the 0-dim fp32 weight ``blend_add`` passes.
* ``before``: the op as it was before the ticket: it clamps alpha and converts alpha and the seed
  to the host dtype on every call.
* ``blend_add``: ``esper.kasmina.blend_ops.blend_add`` with a 0-dim fp32 alpha tensor (at most
  one clamp, no conversion that is not needed, one lerp).
* ``floor(h,h)``: ``torch.lerp(h, h, w)``, the reference for the slot: its noop seed hands the
  host features back, so its lerp reads one tensor twice.
* ``slot()`` / ``slot.forward``: a ``SeedSlot`` in BLENDING holding the parameterless ``noop``
  seed, called through ``nn.Module.__call__`` and directly. The noop seed returns its (detached)
  input, so this is the slot's whole fast path: checks, detach, seed call, one lerp.

Then eager vs ``torch.compile`` for ``conv -> slot -> relu`` at a CIFAR-ish size.

Run: ``python3 benchmarks/blend_ops.py [--quick] [--clock wall|cpu] [--out PATH] [--threads N]
[--no-compile] [--baseline-slot OLD_slot.py] [--baseline-blend-ops OLD_blend_ops.py]``; the
baseline flags time older copies of the sources next to the current ones.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (no spin-waits)

import argparse
import importlib.util
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from _timing import (
    add_common_args,
    describe,
    fmt_table,
    machine_info,
    measure,
    paired_ratio,
    pin_threads,
    write_json,
)
from esper.kasmina.blend_ops import blend_add
from esper.kasmina.slot import QualityGates, SeedSlot
from esper.leyline.stages import SeedStage

ALPHA = 0.3
# (label, (B, C, H, W)): the slot needs 4-D CNN features; the blend ops do not care.
SIZES: list[tuple[str, tuple[int, int, int, int]]] = [
    ("8x16", (8, 16, 1, 1)),  # 128
    ("64x256", (64, 256, 1, 1)),  # 16,384
    ("1e5", (4, 25, 32, 32)),  # 102,400
    ("1e6", (16, 64, 32, 32)),  # 1,048,576
    ("1e7", (40, 64, 64, 64)),  # 10,485,760
]
# (label, host dtype, seed dtype)
CASES: list[tuple[str, torch.dtype, torch.dtype]] = [
    ("fp32", torch.float32, torch.float32),
    ("bf16", torch.bfloat16, torch.bfloat16),
    ("fp16", torch.float16, torch.float16),
    ("bf16 host+fp32 seed", torch.bfloat16, torch.float32),
]


def before_blend_add(host: Tensor, seed: Tensor, alpha: Tensor | float) -> Tensor:
    """The ticket's "before": clamp and convert alpha, and convert the seed, on every call."""
    return torch.lerp(host, seed.to(host.dtype), torch.as_tensor(alpha).clamp(0, 1).to(host.dtype))


def blending_slot(
    channels: int, dtype: torch.dtype, seed: str = "noop", slot_cls: type[SeedSlot] = SeedSlot
) -> SeedSlot:
    """A CNN slot in BLENDING with a ``seed`` blueprint, alpha held at ``ALPHA``."""
    slot = slot_cls("r0c0", channels, "cnn", gates=QualityGates(permissive=True))
    slot.to(dtype)
    slot.germinate(seed)
    slot.advance_stage(SeedStage.TRAINING)
    if any(True for _ in slot.seed_parameters()):  # G2 needs one backward that reached the seed
        slot(torch.randn(2, channels, 4, 4, dtype=dtype)).sum().backward()
    slot.advance_stage(SeedStage.BLENDING)
    assert slot.stage == SeedStage.BLENDING
    slot.set_alpha(ALPHA)
    return slot


def load_module(path: str, name: str) -> Any:
    """Import another copy of a source file, e.g. ``git show REV:src/esper/kasmina/slot.py > f``."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import a module from {path!r}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass(frozen=True)
class Baseline:
    """Older implementations to time next to the current ones (before/after comparisons)."""

    slot_cls: type[SeedSlot] | None = None
    blend_add: Callable[[Tensor, Tensor, Tensor], Tensor] | None = None


def _repeats(numel: int, quick: bool) -> int:
    """Many short batches: a neighbour's burst then spoils few samples of every variant alike."""
    if numel >= 5_000_000:
        return 7 if quick else 21
    if numel >= 500_000:
        return 15 if quick else 61
    return 31 if quick else 151


def _fns(h: Tensor, s: Tensor, baseline: Baseline) -> tuple[dict[str, Callable[[], object]], dict[str, str]]:
    """name -> callable, and name -> the floor its ratio is taken against."""
    host_dtype = h.dtype
    s_host = s.to(host_dtype)
    w_host = torch.tensor(ALPHA, dtype=host_dtype)
    alpha = torch.tensor(ALPHA)  # 0-dim fp32, as the slot and the controller hold it
    mixed = s.dtype != host_dtype
    floor = "floor+cast" if mixed else "floor"
    fns: dict[str, Callable[[], object]] = {"floor": lambda: torch.lerp(h, s_host, w_host)}
    if mixed:  # the conversion is required: the least a correct blend can do
        fns["floor+cast"] = lambda: torch.lerp(h, s.to(host_dtype), w_host)
    refs = {}
    if not mixed and host_dtype != torch.float32:  # what the fp32 0-dim weight itself costs
        fns["floor(fp32 w)"] = lambda: torch.lerp(h, s, alpha)
        refs["floor(fp32 w)"] = floor
    fns["before"] = lambda: before_blend_add(h, s, alpha)
    fns["blend_add"] = lambda: blend_add(h, s, alpha)
    refs["before"] = refs["blend_add"] = floor
    if baseline.blend_add is not None:
        old_blend_add = baseline.blend_add
        fns["blend_add [baseline]"] = lambda: old_blend_add(h, s, alpha)
        refs["blend_add [baseline]"] = floor
    if mixed:  # a parameterless seed returns the host's dtype: no mixed case for the slot
        return fns, refs
    # The noop seed hands the host features back, so the slot's floor reads one tensor twice.
    fns["floor(h,h)"] = lambda: torch.lerp(h, h, w_host)
    slots: dict[str, type[SeedSlot]] = {"": SeedSlot}
    if baseline.slot_cls is not None:
        slots[" [baseline]"] = baseline.slot_cls
    for suffix, cls in slots.items():
        slot = blending_slot(h.shape[1], host_dtype, slot_cls=cls)
        torch.testing.assert_close(slot(h), torch.lerp(h, h, w_host), rtol=0, atol=0)
        fns["slot()" + suffix] = lambda slot=slot: slot(h)
        fns["slot.forward" + suffix] = lambda slot=slot: slot.forward(h)
        refs["slot()" + suffix] = refs["slot.forward" + suffix] = "floor(h,h)"
    return fns, refs


def bench_case(
    shape: tuple[int, ...],
    host_dtype: torch.dtype,
    seed_dtype: torch.dtype,
    quick: bool,
    baseline: Baseline | None = None,
    clock: str = "wall",
) -> dict[str, Any]:
    """Time every variant for one size and dtype case; medians and paired ratios to the floor."""
    gen = torch.Generator().manual_seed(0)
    h = torch.randn(shape, generator=gen).to(host_dtype)
    s = torch.randn(shape, generator=gen).to(seed_dtype)
    # Same results, or the timing means nothing.
    a = torch.tensor(ALPHA)
    torch.testing.assert_close(blend_add(h, s, a), torch.lerp(h, s.to(host_dtype), a), rtol=0, atol=0)
    fns, refs = _fns(h, s, baseline or Baseline())
    numel = h.numel()
    res = measure(fns, repeats=_repeats(numel, quick), target_s=5e-4 if quick else 1e-3, clock=clock)
    return {
        "numel": numel,
        "shape": list(shape),
        "timings": {k: v.to_dict() for k, v in res.items()},
        "ratio": {
            k: {
                "vs": ref,
                **paired_ratio(res[k], res[ref]).to_dict(),
                "ratio_of_medians": res[k].median_us / res[ref].median_us,
            }
            for k, ref in refs.items()
        },
    }


class ConvSlotReLU(nn.Module):
    """``conv3x3 -> slot -> relu`` (a CNN stem with one injection point); no slot when None."""

    def __init__(self, slot: SeedSlot | None, c_in: int = 3, c_out: int = 32) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.slot = slot

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv(x)  # (B, C, H, W)
        if self.slot is not None:
            h = self.slot(h)
        return torch.relu(h)


def bench_compile(quick: bool, clock: str = "wall") -> dict[str, Any]:
    """Eager vs ``torch.compile`` (inductor) forward, no grad, B=64 3x32x32 -> 32 channels."""
    torch.manual_seed(0)
    x = torch.randn(64, 3, 32, 32)
    variants: dict[str, ConvSlotReLU] = {"bare": ConvSlotReLU(None)}
    seeds = ["noop"] if quick else ["noop", "conv_small"]
    for seed in seeds:
        m = ConvSlotReLU(blending_slot(32, torch.float32, seed))
        m.conv.load_state_dict(variants["bare"].conv.state_dict())
        variants[f"slot({seed})"] = m
    fns: dict[str, Callable[[], object]] = {}
    compile_s: dict[str, float] = {}
    with torch.no_grad():
        for name, m in variants.items():
            m.eval()
            compiled = torch.compile(m, fullgraph=True)
            t0 = time.perf_counter()
            out = compiled(x)  # compile now, not inside the timing
            compile_s[name] = time.perf_counter() - t0
            torch.testing.assert_close(out, m(x), rtol=1e-4, atol=1e-5)
            fns[f"{name} eager"] = lambda m=m: m(x)
            fns[f"{name} compiled"] = lambda c=compiled: c(x)
        res = measure(fns, repeats=15 if quick else 31, inner=1, clock=clock)
    rows = {}
    for name in variants:
        e, c = res[f"{name} eager"], res[f"{name} compiled"]
        rows[name] = {
            "eager": e.to_dict(),
            "compiled": c.to_dict(),
            "eager_ratio_to_bare_eager": paired_ratio(e, res["bare eager"]).median,
            "compiled_ratio_to_bare_compiled": paired_ratio(c, res["bare compiled"]).median,
            "compiled_over_eager": paired_ratio(c, e).median,
            "compile_seconds": compile_s[name],
        }
    return {"input": [64, 3, 32, 32], "conv": "3->32, 3x3", "grad": False, "variants": rows}


def _print_tables(results: dict[str, dict[str, dict]], compile_res: dict[str, Any] | None) -> None:
    for case, by_size in results.items():
        first = next(iter(by_size.values()))
        names, ratios = list(first["timings"]), first["ratio"]
        rows = [[k, r["numel"], *[r["timings"][n]["median_us"] for n in names]] for k, r in by_size.items()]
        print(f"\n### {case}: median µs per call")
        print(fmt_table(["size", "numel", *names], rows))
        rows = [
            [label, *[f"{q['median']:.2f}x" for q in r["ratio"].values()]] for label, r in by_size.items()
        ]
        print(f"\n### {case}: ratio to the floor (median of per-repeat ratios)")
        print(fmt_table(["size", *[f"{n} / {r['vs']}" for n, r in ratios.items()]], rows))
    if compile_res is not None:
        rows = []
        for name, r in compile_res["variants"].items():
            rows.append(
                [
                    name,
                    r["eager"]["median_us"],
                    r["compiled"]["median_us"],
                    f"{r['eager_ratio_to_bare_eager']:.3f}x",
                    f"{r['compiled_ratio_to_bare_compiled']:.3f}x",
                    f"{r['compiled_over_eager']:.3f}x",
                    f"{r['compile_seconds']:.1f}",
                ]
            )
        print("\n### conv3x3(3->32) -> slot (BLENDING, alpha 0.3) -> relu, B=64 3x32x32, forward, no grad")
        headers = [
            "variant",
            "eager µs",
            "compiled µs",
            "eager /bare",
            "compiled /bare",
            "compiled/eager",
            "compile s",
        ]
        print(fmt_table(headers, rows))


def _check_targets(results: dict[str, dict[str, dict]]) -> dict[str, Any]:
    """The ticket's targets, evaluated on the paired median ratios (True = met)."""
    out: dict[str, Any] = {}
    for case, by_size in results.items():
        for label, r in by_size.items():
            q = {k: v["median"] for k, v in r["ratio"].items()}
            entry = {"blend_add_faster_than_before": q["blend_add"] < q["before"]}
            if r["numel"] >= 100_000:
                entry["blend_add_within_1.10x"] = q["blend_add"] <= 1.10
            if "slot()" in q:
                entry["slot_call_within_1.15x"] = q["slot()"] <= 1.15
                entry["slot_forward_within_1.15x"] = q["slot.forward"] <= 1.15
            out[f"{case}/{label}"] = entry
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(
        p,
        out="benchmarks/results/blend_ops.json",
        quick_help="fewer repeats and sizes (~30 s)",
        no_compile_help="skip the torch.compile section",
    )
    p.add_argument("--baseline-slot", metavar="PATH", help="also time SeedSlot from this copy of slot.py")
    p.add_argument(
        "--baseline-blend-ops", metavar="PATH", help="also time blend_add from this copy of blend_ops.py"
    )
    args = p.parse_args(argv)
    baseline = Baseline()
    if args.baseline_slot:
        baseline = replace(baseline, slot_cls=load_module(args.baseline_slot, "_baseline_slot").SeedSlot)
    if args.baseline_blend_ops:
        old = load_module(args.baseline_blend_ops, "_baseline_blend_ops")
        baseline = replace(baseline, blend_add=old.blend_add)
    threads = pin_threads(args.threads)
    t0 = time.perf_counter()
    sizes = SIZES[:-1] if args.quick else SIZES
    results: dict[str, dict[str, dict]] = {}
    for case, host_dtype, seed_dtype in CASES:
        results[case] = {}
        for label, shape in sizes:
            results[case][label] = bench_case(shape, host_dtype, seed_dtype, args.quick, baseline, args.clock)
    compile_res = None if args.no_compile else bench_compile(args.quick, args.clock)
    info = machine_info()
    print(describe(info, args.clock))
    _print_tables(results, compile_res)
    targets = _check_targets(results)
    payload = {
        "benchmark": "blend_ops",
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "threads": threads,
        "alpha": ALPHA,
        "baseline_slot": args.baseline_slot,
        "baseline_blend_ops": args.baseline_blend_ops,
        "units": "microseconds per call (median over repeats)",
        "clock": args.clock,
        "results": results,
        "compile": compile_res,
        "targets": targets,
        "wall_seconds": time.perf_counter() - t0,
    }
    path = write_json(args.out, payload)
    print(f"\nwrote {path} ({payload['wall_seconds']:.0f} s, {threads} thread(s), torch {torch.__version__})")


if __name__ == "__main__":
    main()
