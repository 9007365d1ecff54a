"""What slots cost a training step: ``MorphogeneticModel`` forward+backward vs the bare host.

For a CNN (``CNNHost(base_channels=32)``, B=64 3x32x32, contiguous and channels_last) and a
small causal transformer (vocab 65, n_embd 128, 4 heads, 2 layers, block 64, B=32), timed
interleaved in one process (median of repeats, one step per batch):

* ``host`` and ``host (A/A)``: the bare host twice, so the A/A ratio shows the noise level;
* ``dormant``: the model with an empty slot at every injection point (target: indistinguishable
  from the host within noise, and zero extra aten ops, counted with a ``TorchDispatchMode``);
* ``training``/``blending`` with a parameterless ``noop`` seed and with a small real seed in every
  slot (expected: host + seed + one lerp per slot; ``noop`` in BLENDING within 1.06x of the host).

Then the same comparison for models a user brings, with slots put in by ``esper.inject_slots``:
the torchvision-style ResNet (width 16, B=32 3x16x16, slots after ``layer1..3``) and the
nanoGPT-style model (4 blocks, n_embd 128, B=8 T=64, a slot after every block) of
``examples/``, against the bare model (an identical copy, no hooks), with every slot DORMANT
(target <= 1.02x and identical aten op counts) and with ``noop`` in BLENDING (target <= 1.06x),
eager and under ``torch.compile`` (inductor).

Then, under ``torch.compile(fullgraph=True)`` with a counting backend, the number of graphs
compiled in each lifecycle phase while alpha ramps across a whole blend (target: none while
alpha moves; a stage change may cost one), with the compiled output checked against eager.

Ratios are medians of per-repeat ratios (``_timing.paired_ratio``). On a machine shared with
other jobs, ``--clock cpu`` (process CPU time) ignores their time slices.

Run: ``python3 benchmarks/slot_overhead.py [--quick] [--clock wall|cpu] [--out PATH] [--threads N]
[--no-compile]``.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (no spin-waits)

import argparse
import copy
import sys
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(
    0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "examples")
)  # the user models

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
from esper.kasmina.host import CNNHost, MorphogeneticModel, TransformerHost
from esper.kasmina.inject import inject_slots
from esper.kasmina.slot import QualityGates
from esper.leyline.stages import SeedStage

ALPHA = 0.5  # held alpha for the BLENDING timings
SEEDS = {"cnn": "conv_small", "transformer": "lora"}  # the "real" seed per topology


class OpCounter(TorchDispatchMode):
    """Counts every aten op that reaches the dispatcher (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.ops[str(func)] += 1
        return func(*args, **(kwargs or {}))


def _with_seeds(host: nn.Module, blueprint: str, stage: SeedStage, batch: tuple) -> MorphogeneticModel:
    """A model over ``host`` (shared weights) with ``blueprint`` in every slot, moved to ``stage``."""
    x = batch[0]
    model = MorphogeneticModel(host, gates=QualityGates(permissive=True))
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        model.to(memory_format=torch.channels_last)
    return _grow(model, blueprint, stage, batch)


def _grow(model: MorphogeneticModel, blueprint: str, stage: SeedStage, batch: tuple) -> MorphogeneticModel:
    """Put ``blueprint`` in every slot of ``model`` and move it to ``stage`` (alpha ``ALPHA``).

    On the way to BLENDING one training step runs in TRAINING: gate G2 needs a backward that
    reached the seed's parameters.
    """
    x, y, loss_fn = batch
    for slot in model.slots():
        slot.germinate(blueprint)
        assert slot.advance_stage(SeedStage.TRAINING).passed
    if stage == SeedStage.BLENDING:
        _step_fn(model, x, y, loss_fn)()
        for slot in model.slots():
            verdict = slot.advance_stage(SeedStage.BLENDING)
            assert verdict.passed, verdict
            slot.set_alpha(ALPHA)
    return model


def _variants(host: nn.Module, topology: str, batch: tuple) -> dict[str, nn.Module]:
    """Every model variant over the one ``host``; seeds follow the host's memory format."""
    out: dict[str, nn.Module] = {"host": host, "host (A/A)": host}
    out["dormant"] = MorphogeneticModel(host)
    for blueprint in ("noop", SEEDS[topology]):
        for stage in (SeedStage.TRAINING, SeedStage.BLENDING):
            out[f"{stage.name.lower()} {blueprint}"] = _with_seeds(host, blueprint, stage, batch)
    return out


def _cnn_problem(channels_last: bool) -> tuple[nn.Module, Tensor, Tensor, Callable]:
    torch.manual_seed(0)
    host = CNNHost(base_channels=32)
    x = torch.randn(64, 3, 32, 32)  # (B, C, H, W)
    if channels_last:
        host = host.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (64,))
    return host, x, y, lambda logits, y: F.cross_entropy(logits, y)


def _transformer_problem() -> tuple[nn.Module, Tensor, Tensor, Callable]:
    torch.manual_seed(0)
    host = TransformerHost(vocab_size=65, n_embd=128, n_head=4, n_layer=2, block_size=64)
    tokens = torch.randint(0, 65, (32, 65))  # (B, T + 1)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # (B, T)

    def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, V) vs (B*T,)

    return host, x, y, loss_fn


def _step_fn(model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()

    return step


def _count_ops(step: Callable[[], None]) -> Counter[str]:
    with OpCounter() as counter:
        step()
    return counter.ops


def bench_problem(name: str, problem: tuple, quick: bool, clock: str = "wall") -> dict[str, Any]:
    """Time every variant of one host setup and count the aten ops of the interesting ones."""
    host, x, y, loss_fn = problem
    topology = "cnn" if x.dim() == 4 else "transformer"
    variants = _variants(host, topology, (x, y, loss_fn))
    steps = {k: _step_fn(m, x, y, loss_fn) for k, m in variants.items()}
    res = measure(steps, repeats=7 if quick else 31, inner=1, warmup=1, clock=clock)
    host_us = res["host"].median_us
    host_ops = _count_ops(steps["host"])
    ops: dict[str, Any] = {"host_total": sum(host_ops.values())}
    for k in ("dormant", "blending noop"):
        model_ops = _count_ops(steps[k])
        extra = model_ops.copy()
        extra.subtract(host_ops)
        ops[k] = {
            "total": sum(model_ops.values()),
            "extra": {op: n for op, n in sorted(extra.items()) if n != 0},
        }
    return {
        "setup": name,
        "input": list(x.shape),
        "timings": {k: v.to_dict() for k, v in res.items()},
        "ratio_of_medians_to_host": {k: v.median_us / host_us for k, v in res.items()},
        "paired_ratio_to_host": {k: paired_ratio(v, res["host"]).to_dict() for k, v in res.items()},
        "aten_ops": ops,
    }


# ----------------------------------------------------------------- injected user models
def _resnet_problem() -> tuple[nn.Module, Any, Tensor, Tensor, Callable]:
    """The torchvision-style ResNet of ``examples/resnet_digits.py``, slots after its 3 stages."""
    from resnet_digits import ResNet

    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 16, 16), torch.randint(0, 10, (32,))  # (B, C, H, W)
    targets = ["layer1", "layer2", "layer3"]
    return ResNet(in_channels=3, num_classes=10, width=16), targets, x, y, F.cross_entropy


def _gpt_problem() -> tuple[nn.Module, Any, Tensor, Tensor, Callable]:
    """The nanoGPT-style model of ``examples/char_gpt.py``, a slot after each of its 4 blocks."""
    from char_gpt import GPT

    torch.manual_seed(0)
    tokens = torch.randint(0, 65, (8, 65))  # (B, T + 1)
    x, y = tokens[:, :-1].contiguous(), tokens[:, 1:].contiguous()  # (B, T)

    def loss_fn(logits: Tensor, y: Tensor) -> Tensor:
        return F.cross_entropy(logits.flatten(0, 1), y.flatten())  # (B*T, V) vs (B*T,)

    return GPT(vocab_size=65, n_layer=4, n_embd=128), r"transformer\.h\.\d+", x, y, loss_fn


def _injected_variants(problem: tuple) -> dict[str, nn.Module]:
    """The bare model, and injected copies of it (same weights): all DORMANT, noop in BLENDING."""
    bare, targets, x, y, loss_fn = problem
    gates = QualityGates(permissive=True)
    dormant = inject_slots(copy.deepcopy(bare), targets, example_input=x[:2], gates=gates)
    blending = inject_slots(copy.deepcopy(bare), targets, example_input=x[:2], gates=gates)
    _grow(blending, "noop", SeedStage.BLENDING, (x, y, loss_fn))
    return {"host": bare, "host (A/A)": bare, "dormant": dormant, "blending noop": blending}


def bench_injected(name: str, problem: tuple, quick: bool, clock: str, compiled: bool) -> dict[str, Any]:
    """Forward+backward of ``esper.inject_slots`` models vs the bare model, eager or compiled.

    Compiled variants go through ``torch.compile`` (inductor) after injection, each its own
    compiled module; the bare model is compiled once and timed twice (A/A).
    """
    _, _, x, y, loss_fn = problem
    variants = _injected_variants(problem)
    if compiled:
        torch._dynamo.reset()
        bare = torch.compile(variants["host"])
        variants = {k: bare if k.startswith("host") else torch.compile(m) for k, m in variants.items()}
    steps = {k: _step_fn(m, x, y, loss_fn) for k, m in variants.items()}
    res = measure(steps, repeats=7 if quick else 21, inner=1, warmup=2, clock=clock)
    host_us = res["host"].median_us
    ops: dict[str, Any] | None = None
    if not compiled:  # the dispatcher sees compiled graphs' kernels, not the eager aten ops
        host_ops = _count_ops(steps["host"])
        ops = {"host_total": sum(host_ops.values())}
        for k in ("dormant", "blending noop"):
            model_ops = _count_ops(steps[k])
            extra = model_ops.copy()
            extra.subtract(host_ops)
            ops[k] = {
                "total": sum(model_ops.values()),
                "extra": {o: n for o, n in sorted(extra.items()) if n},
            }
    return {
        "setup": f"{name} ({'compiled' if compiled else 'eager'})",
        "input": list(x.shape),
        "slots": [s.slot_id for s in variants["dormant"].slots()] if not compiled else None,
        "timings": {k: v.to_dict() for k, v in res.items()},
        "ratio_of_medians_to_host": {k: v.median_us / host_us for k, v in res.items()},
        "paired_ratio_to_host": {k: paired_ratio(v, res["host"]).to_dict() for k, v in res.items()},
        "aten_ops": ops,
    }


def _counting_backend() -> tuple[Callable, list[int]]:
    graphs = [0]

    def backend(gm: torch.fx.GraphModule, example_inputs: list[Tensor]) -> Callable:
        graphs[0] += 1
        return gm.forward  # run the captured graph eagerly: we count compiles, not speed

    return backend, graphs


def _compile_phase(compiled: Callable, model: nn.Module, x: Tensor, y: Tensor, loss_fn: Callable) -> float:
    """One training step through the compiled model, checked against eager; returns the max error.

    The check runs eager in the same (train, grad-enabled) mode, so it adds no guard variant and
    no graph; with no optimizer step the weights, and so the outputs, must agree.
    """
    model.zero_grad(set_to_none=True)
    out = compiled(x)
    loss_fn(out, y).backward()
    return (out.detach() - model(x).detach()).abs().max().item()


def bench_recompiles(problem: tuple, blueprint: str, tempo: int = 5) -> dict[str, Any]:
    """Graphs compiled per lifecycle phase under ``torch.compile(fullgraph=True)``."""
    torch._dynamo.reset()
    host, x, y, loss_fn = problem
    model = MorphogeneticModel(host, slots=["r0c1"], gates=QualityGates(permissive=True))
    backend, graphs = _counting_backend()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    slot = model.slot("r0c1")
    phases: list[dict[str, Any]] = []
    max_err = 0.0

    def phase(label: str, n_steps: int, tick: bool = False) -> None:
        nonlocal max_err
        before, alphas = graphs[0], []
        for _ in range(n_steps):
            max_err = max(max_err, _compile_phase(compiled, model, x, y, loss_fn))
            alphas.append(slot.alpha)
            if tick:
                slot.step_epoch()
        phases.append({"phase": label, "steps": n_steps, "graphs": graphs[0] - before, "alphas": alphas})

    phase("DORMANT (first compile)", 2)
    slot.germinate(blueprint, blend_tempo_epochs=tempo)
    phase("GERMINATED", 2)
    slot.advance_stage(SeedStage.TRAINING)
    phase("TRAINING", 3, tick=True)
    slot.advance_stage(SeedStage.BLENDING)
    phase("BLENDING: first step (stage change)", 1, tick=True)
    phase(f"BLENDING: alpha ramp over {tempo} epochs", tempo, tick=True)
    assert slot.alpha == 1.0, slot.alpha
    slot.advance_stage(SeedStage.HOLDING)
    phase("HOLDING", 2)
    slot.set_alpha_target(0.25, steps=3)
    phase("HOLDING -> BLENDING: alpha ramp down", 4, tick=True)
    slot.set_alpha(0.6)
    phase("set_alpha(0.6) (hold)", 2)
    return {
        "blueprint": blueprint,
        "slot": "r0c1",
        "phases": phases,
        "graphs_while_alpha_moves": sum(p["graphs"] for p in phases if "alpha" in p["phase"]),
        "graphs_total": graphs[0],
        "max_abs_err_compiled_vs_eager": max_err,
    }


def _print(results: list[dict[str, Any]], compile_res: list[dict[str, Any]] | None) -> None:
    for r in results:
        t, q, pr = r["timings"], r["ratio_of_medians_to_host"], r["paired_ratio_to_host"]
        rows = [
            [
                k,
                t[k]["median_us"] / 1e3,
                f"{t[k]['p25_us'] / 1e3:.1f}-{t[k]['p75_us'] / 1e3:.1f}",
                t[k]["min_us"] / 1e3,
                f"{q[k]:.3f}x",
                f"{pr[k]['median']:.3f}x [{pr[k]['p25']:.3f}-{pr[k]['p75']:.3f}]",
            ]
            for k in t
        ]
        print(f"\n### {r['setup']}, input {tuple(r['input'])}: forward+backward per step")
        headers = ["variant", "median ms", "p25-p75 ms", "min ms", "median/host", "paired /host [IQR]"]
        print(fmt_table(headers, rows))
        ops = r["aten_ops"]
        if ops is None:
            continue
        print(
            f"aten ops per step: host {ops['host_total']}, dormant {ops['dormant']['total']} "
            f"(extra: {ops['dormant']['extra'] or 'none'}), blending noop {ops['blending noop']['total']} "
            f"(extra: {ops['blending noop']['extra']})"
        )
    if compile_res:
        print("\n### torch.compile(fullgraph=True): graphs compiled per phase (counting backend)")
        rows = []
        for c in compile_res:
            for p in c["phases"]:
                alphas = ", ".join(f"{a:.2f}" for a in p["alphas"])
                rows.append([c["setup"], p["phase"], p["steps"], p["graphs"], alphas])
        print(fmt_table(["setup", "phase", "steps", "graphs", "alpha at each step"], rows))
        for c in compile_res:
            print(
                f"{c['setup']}: {c['graphs_while_alpha_moves']} graph(s) while alpha moved, "
                f"{c['graphs_total']} in all; compiled vs eager max |err| "
                f"{c['max_abs_err_compiled_vs_eager']:.2e}"
            )


def _targets(results: list[dict[str, Any]], compile_res: list[dict[str, Any]] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in results:
        pr = r["paired_ratio_to_host"]
        aa, dormant, noop = pr["host (A/A)"], pr["dormant"]["median"], pr["blending noop"]["median"]
        # Noise band: the larger of the A/A (host vs itself) offset and half its inter-quartile range.
        noise = max(abs(aa["median"] - 1.0), (aa["p75"] - aa["p25"]) / 2)
        out[r["setup"]] = {
            "dormant_paired_ratio": dormant,
            "noise_band": noise,
            "dormant_within_noise": abs(dormant - 1.0) <= noise,
            "dormant_within_1.02x": dormant <= 1.02,
            "dormant_zero_extra_ops": None
            if r["aten_ops"] is None
            else not r["aten_ops"]["dormant"]["extra"],
            "blending_noop_paired_ratio": noop,
            "blending_noop_within_1.06x": noop <= 1.06,
        }
    if compile_res:
        for c in compile_res:
            out[c["setup"]] = {"no_recompile_while_alpha_moves": c["graphs_while_alpha_moves"] == 0}
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(
        p,
        out="benchmarks/results/slot_overhead.json",
        quick_help="fewer repeats (~30 s)",
        no_compile_help="skip the torch.compile recompile count",
    )
    args = p.parse_args(argv)
    threads = pin_threads(args.threads)
    t0 = time.perf_counter()
    results = [
        bench_problem("CNN contiguous", _cnn_problem(False), args.quick, args.clock),
        bench_problem("CNN channels_last", _cnn_problem(True), args.quick, args.clock),
        bench_problem("Transformer", _transformer_problem(), args.quick, args.clock),
    ]
    for name, make in (("Injected ResNet", _resnet_problem), ("Injected GPT", _gpt_problem)):
        for compiled in (False, True) if not args.no_compile else (False,):
            results.append(bench_injected(name, make(), args.quick, args.clock, compiled))
    compile_res = None
    if not args.no_compile:
        compile_res = []
        for setup, problem in (("CNN", _cnn_problem(False)), ("Transformer", _transformer_problem())):
            real = SEEDS["cnn" if setup == "CNN" else "transformer"]
            blueprints = ["noop"] if args.quick else ["noop", real]
            for bp in blueprints:
                compile_res.append({"setup": f"{setup} {bp}", **bench_recompiles(problem, bp)})
    info = machine_info()
    print(describe(info, args.clock))
    _print(results, compile_res)
    payload = {
        "benchmark": "slot_overhead",
        "mode": "quick" if args.quick else "full",
        "machine": info,
        "threads": threads,
        "units": "microseconds per forward+backward step (median over repeats, one step per batch)",
        "clock": args.clock,
        "results": results,
        "compile": compile_res,
        "targets": _targets(results, compile_res),
        "wall_seconds": time.perf_counter() - t0,
    }
    path = write_json(args.out, payload)
    print(f"\nwrote {path} ({payload['wall_seconds']:.0f} s, {threads} thread(s), torch {torch.__version__})")


if __name__ == "__main__":
    main()
