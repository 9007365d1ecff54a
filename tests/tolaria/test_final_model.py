"""The end of a run is explicit: the summary, ``load_grown`` and the exported program describe
the same final model, even when seeds are still in flight at the last epoch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "tolaria"))
from tolaria_kit import ScriptedPolicy, fast_config

from esper.data import get_task
from esper.data.digits import SPLIT_SEED, VAL_FRACTION, load_digits_arrays, stratified_split
from esper.leyline.actions import Action, LifecycleOp
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage
from esper.recipes.train import run_training
from esper.tolaria.checkpoint import load_grown
from esper.tolaria.export import export_grown


def _in_flight(obs: Observation) -> Action | None:
    """r0c1 blends slowly from epoch 0; r0c0 germinates late and is still TRAINING at the end."""
    r0c1, r0c0 = obs.slot("r0c1"), obs.slot("r0c0")
    if r0c1.stage == SeedStage.DORMANT:
        return Action(LifecycleOp.GERMINATE, slot="r0c1", blueprint="conv_light", tempo_epochs=8)
    if r0c1.stage in (SeedStage.GERMINATED, SeedStage.TRAINING) and r0c1.gate_ready:
        return Action(LifecycleOp.ADVANCE, slot="r0c1")
    if obs.epoch >= 4 and r0c0.stage == SeedStage.DORMANT:
        return Action(LifecycleOp.GERMINATE, slot="r0c0", blueprint="conv_small")
    if r0c0.stage == SeedStage.GERMINATED:
        return Action(LifecycleOp.ADVANCE, slot="r0c0")
    return None


def test_summary_export_and_load_grown_agree_on_a_run_that_ends_mid_growth(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "run", epochs=7, min_training_epochs=1)
    summary = run_training(config, ScriptedPolicy(_in_flight))
    model = load_grown(tmp_path / "run")
    assert model.slot("r0c1").stage == SeedStage.BLENDING and 0 < model.slot("r0c1").alpha < 1
    assert model.slot("r0c0").stage == SeedStage.TRAINING

    # seed_params counts the seeds that shape the output, not the one still training.
    assert summary["seed_params"] == model.slot("r0c1").seed_params
    path = export_grown(tmp_path / "run")
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["params"] == summary["total_params"]
    assert [s["slot"] for s in meta["seeds"]] == ["r0c1"]

    # Scoring the exported program on the validation data gives the summary's accuracy.
    program = torch.export.load(path).module()
    task = get_task("digits-impaired")
    hits = n = 0
    with torch.no_grad():
        for x, y in task.val_batches():
            hits += int((program(x).argmax(-1) == y).sum())
            n += y.numel()
    assert abs(hits / n - summary["final_val_accuracy"]) <= 1 / n  # one borderline argmax at most
    with torch.no_grad():
        x, _ = next(iter(task.val_batches()))
        torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-5)

    # model.json says how to feed raw 0..16 images, without Esper.
    norm = meta["input_normalization"]
    images, labels = load_digits_arrays()
    _, val_idx = stratified_split(torch.from_numpy(labels).long(), VAL_FRACTION, SPLIT_SEED)
    raw = torch.from_numpy(images[val_idx.numpy()]).float().unsqueeze(1)
    fed = (raw / norm["divide_by"] - torch.tensor(norm["mean"]).view(1, -1, 1, 1)) / torch.tensor(
        norm["std"]
    ).view(1, -1, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(fed, task.val.x, rtol=1e-5, atol=1e-5)
