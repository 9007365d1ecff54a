"""Width growth through the engine: optimizers follow, resume is exact, export is a plain wider network."""

from __future__ import annotations

from pathlib import Path

import torch
from tolaria_kit import ScriptedPolicy, drive, fast_config, grow, make_engine, run_to_disk

from esper import CNNHost, MorphogeneticModel, QualityGates, TransformerHost
from esper.kasmina.width import WidthSeed
from esper.leyline.actions import Action, LifecycleOp
from esper.leyline.alpha import AlphaAlgorithm
from esper.leyline.observation import Observation
from esper.leyline.stages import SeedStage
from esper.recipes.train import restore
from esper.tolaria.checkpoint import CHECKPOINT_NAME, load_checkpoint
from esper.tolaria.export import InputSpec, bake_final, export_model
from esper.tolaria.lifecycle import apply_action
from esper.tolaria.optim import SeedGroups, adamw, host_groups


def _widen(slot_id: str):
    def script(obs: Observation) -> Action | None:
        slot = obs.slot(slot_id)
        if slot.stage == SeedStage.DORMANT and obs.epoch == 0:
            return Action(LifecycleOp.GERMINATE, slot=slot_id, blueprint="widen", tempo_epochs=2)
        if slot.stage in (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING):
            return Action(LifecycleOp.ADVANCE, slot=slot_id)
        if slot.stage == SeedStage.HOLDING:
            return Action(LifecycleOp.FOSSILIZE, slot=slot_id)
        return None

    return script


def _run(out: Path, epochs: int, *, resume: bool = False):
    config = fast_config(out, epochs=epochs)
    if not resume:
        return run_to_disk(config, controller=ScriptedPolicy(_widen("r0c0")))[0]
    engine, controller = make_engine(config), ScriptedPolicy(_widen("r0c0"))
    restore(engine, controller, load_checkpoint(out / CHECKPOINT_NAME), out)
    drive(engine, controller)
    return engine


def test_engine_widens_fossilizes_and_its_optimizer_follows_the_new_parameters(tmp_path: Path) -> None:
    engine = _run(tmp_path / "run", 8)
    model = engine.model
    assert model.slot("r0c0").stage == SeedStage.FOSSILIZED
    assert model.host.config()["widths"] == [4, 4]  # digits-impaired: base 2, block 0 doubled
    host_opt = engine.optimizer
    held = [p for g in host_opt.param_groups if "esper_slot" not in g for p in g["params"]]
    assert [id(p) for p in held] == [id(p) for p in model.host.parameters()]
    conv = model.host.blocks[0][0].weight
    assert host_opt.state[conv]["exp_avg"].shape == conv.shape == (4, 1, 3, 3)


def test_resume_after_a_width_fossilization_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    straight = _run(tmp_path / "straight", 11)
    _run(tmp_path / "split", 8)
    saved = load_checkpoint(tmp_path / "split" / CHECKPOINT_NAME)
    assert saved["model"]["seed_slots.r0c0._extra_state"]["stage"] == SeedStage.FOSSILIZED
    resumed = _run(tmp_path / "split", 11, resume=True)  # a fresh narrow host, widened by the load
    assert resumed.history == straight.history
    a, b = resumed.model.state_dict(), straight.model.state_dict()
    assert a.keys() == b.keys()
    for key, value in b.items():
        assert torch.equal(a[key], value) if isinstance(value, torch.Tensor) else a[key] == value, key


def test_seed_groups_keep_the_state_of_grown_neighbours() -> None:
    host = CNNHost(num_classes=3, n_blocks=3, base_channels=2, in_channels=1, pool_layers=2)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))
    x = torch.randn(4, 1, 8, 8)
    grow(model, "r0c0", "widen", SeedStage.HOLDING, x)
    grow(model, "r0c1", "widen", SeedStage.HOLDING, x)
    groups = SeedGroups(adamw(1e-2, 0.0)(host_groups(model.get_host_parameters())), model, None)
    model(x).square().mean().backward()
    groups.optimizer.step()
    left = groups.seed_groups()["r0c0"]
    model.slot("r0c1").record_contribution(1.0)
    assert model.slot("r0c1").advance_stage(SeedStage.FOSSILIZED).passed
    groups.sync(model)
    assert groups.seed_groups()["r0c0"] is left and "r0c1" not in groups.seed_groups()
    seed = model.slot("r0c0").seed
    assert isinstance(seed, WidthSeed)
    assert any(p is seed.read.weight for p in left["params"])  # the padded neighbour, swapped in place
    assert groups.optimizer.state[seed.read.weight]["exp_avg"].shape == seed.read.weight.shape
    held = {id(p) for g in groups.optimizer.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.parameters()}


def test_export_of_fossilized_width_is_a_plain_wider_network(tmp_path: Path) -> None:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=2, in_channels=1, pool_layers=2)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))
    x = torch.randn(4, 1, 8, 8)
    grow(model, "r0c0", "widen", SeedStage.FOSSILIZED, x)
    grow(model, "r0c1", "widen_half", SeedStage.HOLDING, x)  # not fossilized: baked at its alpha
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    path = export_model(model, InputSpec((1, 8, 8), "float32", 10, "digits"), tmp_path / "model.pt2")
    program = torch.export.load(path).module()
    shapes = {k: tuple(v.shape) for k, v in program.state_dict().items()}
    assert shapes["host.blocks.0.0.weight"] == (4, 1, 3, 3) and shapes["host.blocks.1.0.weight"] == (
        4,
        4,
        3,
        3,
    )
    baked = bake_final(model)
    assert baked.slot("r0c1").seed is not None
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(program(x), model(x), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(program(x), baked(x), rtol=1e-6, atol=1e-6)


def test_export_of_a_widened_transformer_mlp(tmp_path: Path) -> None:
    host = TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=2, block_size=8)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))
    x = torch.randint(0, 11, (3, 8))
    grow(model, "r0c1", "widen_mlp", SeedStage.FOSSILIZED, x)
    assert model.host.config()["mlp_widths"] == [32, 40]
    path = export_model(model, InputSpec((8,), "int64", 11, "charlm"), tmp_path / "model.pt2")
    program = torch.export.load(path).module()
    with torch.no_grad():
        torch.testing.assert_close(program(x), model.eval()(x), rtol=1e-5, atol=1e-6)


def test_a_width_germinate_action_does_not_read_the_blend_algorithm() -> None:
    host = CNNHost(num_classes=3, n_blocks=2, base_channels=2, in_channels=1, pool_layers=2)
    model = MorphogeneticModel(host)
    action = Action(
        LifecycleOp.GERMINATE, slot="r0c0", blueprint="widen", alpha_algorithm=AlphaAlgorithm.GATE
    )
    assert apply_action(model, action).applied
    assert model.slot("r0c0").alpha_algorithm == AlphaAlgorithm.ADD and model.slot("r0c0").gate is None
    residual = Action(
        LifecycleOp.GERMINATE, slot="r0c1", blueprint="norm", alpha_algorithm=AlphaAlgorithm.GATE
    )
    assert apply_action(model, residual).applied
    assert model.slot("r0c1").alpha_algorithm == AlphaAlgorithm.GATE
