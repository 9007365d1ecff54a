"""Export: fossilized seeds baked in, others left out, a torch.export program with a dynamic batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tolaria_kit import RESIDUAL, fast_config, grow, run_to_disk

from esper import CNNHost, MorphogeneticModel, QualityGates, TransformerHost, inject_slots
from esper.errors import CheckpointError, ConfigError
from esper.leyline.stages import SeedStage
from esper.tolaria.checkpoint import load_grown
from esper.tolaria.export import EXPORT_FORMAT, InputSpec, bake_final, export_grown, export_model

CNN_SPEC = InputSpec((1, 8, 8), "float32", 10, "digits")


def _noisy_seeds(model: MorphogeneticModel) -> None:
    with torch.no_grad():
        for p in model.get_seed_parameters():
            p.add_(0.3 * torch.randn_like(p))


def _cnn() -> MorphogeneticModel:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))
    x = torch.randn(2, 1, 8, 8)
    grow(model, "r0c0", "conv_light", SeedStage.FOSSILIZED, x)
    grow(model, "r0c1", "attention", SeedStage.HOLDING, x)
    _noisy_seeds(model)
    return model


def test_bake_keeps_the_output_shaping_seeds_and_leaves_the_original_alone() -> None:
    model = _cnn()
    baked = bake_final(model)
    assert baked is not model and not baked.training
    assert baked.slot("r0c0").stage == SeedStage.FOSSILIZED and baked.slot("r0c0").seed is not None
    assert baked.slot("r0c1").stage == SeedStage.HOLDING and baked.slot("r0c1").seed is not None
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(baked(x), model.eval()(x))  # the model as it is, exactly


def test_bake_drops_a_training_seed_without_changing_the_output() -> None:
    host = CNNHost(num_classes=10, n_blocks=2, base_channels=4, in_channels=1, pool_layers=2)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))
    grow(model, "r0c1", "conv_light", SeedStage.TRAINING, torch.randn(2, 1, 8, 8))
    _noisy_seeds(model)
    baked = bake_final(model)
    assert baked.slot("r0c1").seed is None and model.slot("r0c1").seed is not None
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(baked(x), model.eval()(x))


def test_exported_cnn_program_matches_the_baked_model_for_any_batch(tmp_path: Path) -> None:
    model = _cnn()
    path = export_model(model, CNN_SPEC, tmp_path / "out" / "model.pt2")
    assert path == tmp_path / "out" / "model.pt2"
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.json", "model.pt2"]
    program = torch.export.load(path).module()
    baked = bake_final(model)
    for batch in (1, 3, 17):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(program(x), baked(x), rtol=1e-5, atol=1e-6)

    meta = json.loads((path.parent / "model.json").read_text())
    assert meta["format"] == EXPORT_FORMAT and meta["program"] == "model.pt2"
    assert meta["input_shape"] == ["batch", 1, 8, 8] and meta["input_dtype"] == "float32"
    assert meta["num_classes"] == 10 and meta["output_shape"] == ["batch", 10]
    assert meta["seeds"] == [
        {"slot": "r0c0", "blueprint": "conv_light", "stage": "FOSSILIZED", "alpha": 1.0,
         "params": model.slot("r0c0").seed_params},
        {"slot": "r0c1", "blueprint": "attention", "stage": "HOLDING", "alpha": 1.0,
         "params": model.slot("r0c1").seed_params},
    ]  # fmt: skip
    assert meta["params"] == sum(p.numel() for p in baked.parameters())


def test_an_injected_model_exports_with_its_fossilized_seed(tmp_path: Path) -> None:
    user_model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 10),
    )
    gates = QualityGates(min_training_epochs=0, min_holding_epochs=0)
    model = inject_slots(user_model, ["0"], gates=gates)  # forward(*args, **kwargs)
    grow(model, "0", "conv_light", SeedStage.FOSSILIZED, torch.randn(2, 1, 8, 8))
    _noisy_seeds(model)
    program = torch.export.load(export_model(model, CNN_SPEC, tmp_path / "model.pt2")).module()
    for batch in (1, 5):
        x = torch.randn(batch, 1, 8, 8)
        with torch.no_grad():
            torch.testing.assert_close(program(x), model.eval()(x), rtol=1e-5, atol=1e-6)


def test_exported_transformer_program_takes_token_batches(tmp_path: Path) -> None:
    host = TransformerHost(vocab_size=13, n_embd=16, n_head=2, n_layer=2, block_size=8)
    model = MorphogeneticModel(host, gates=QualityGates(min_training_epochs=0, min_holding_epochs=0))
    tokens = torch.randint(0, 13, (2, 8))
    grow(model, "r0c1", "mlp_small", SeedStage.FOSSILIZED, tokens)
    grow(model, "r0c0", "lora", SeedStage.TRAINING, tokens)
    _noisy_seeds(model)
    path = export_model(model, InputSpec((8,), "int64", 13, "charlm"), tmp_path / "lm.pt2")
    program = torch.export.load(path).module()
    x = torch.randint(0, 13, (5, 8))
    with torch.no_grad():
        out = program(x)
        torch.testing.assert_close(out, bake_final(model)(x), rtol=1e-5, atol=1e-6)
    assert out.shape == (5, 8, 13)
    meta = json.loads((tmp_path / "lm.json").read_text())
    assert meta["input_dtype"] == "int64" and meta["output_shape"] == ["batch", 8, 13]


@pytest.mark.slow
def test_export_grown_from_a_run_directory(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "run", epochs=10, blueprints=RESIDUAL)
    engine, _ = run_to_disk(config)
    assert engine.model.count_fossilized_seeds() >= 1

    path = export_grown(tmp_path / "run")
    assert path == tmp_path / "run" / "model.pt2"
    baked = bake_final(load_grown(tmp_path / "run"))
    x = torch.randn(6, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(torch.export.load(path).module()(x), baked(x), rtol=1e-5, atol=1e-6)
    meta = json.loads((tmp_path / "run" / "model.json").read_text())
    assert meta["task"] == "digits-impaired" and any(x["stage"] == "FOSSILIZED" for x in meta["seeds"])

    other = export_grown(tmp_path / "run" / "checkpoint.pt", tmp_path / "elsewhere" / "grown.pt2")
    assert other.is_file() and (tmp_path / "elsewhere" / "grown.json").is_file()


def test_export_of_a_missing_run_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint"):
        export_grown(tmp_path / "nowhere")
    assert not (tmp_path / "nowhere").exists()


def test_export_reads_the_input_spec_from_the_checkpoint_without_the_dataset(tmp_path: Path) -> None:
    config = fast_config(tmp_path / "run", epochs=2)
    run_to_disk(config)
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    data = torch.load(checkpoint, weights_only=True)
    spec = data["input_spec"]
    assert {k: spec[k] for k in ("shape", "dtype", "num_classes", "task")} == {
        "shape": [1, 8, 8], "dtype": "float32", "num_classes": 10, "task": "digits-impaired"}  # fmt: skip
    assert spec["normalization"]["divide_by"] == 16.0
    # A run whose dataset is gone (here: a cifar10 config with no data folder) still exports.
    data["config"] = {**data["config"], "task": "cifar10", "data_dir": str(tmp_path / "gone")}
    torch.save(data, checkpoint)
    path = export_grown(tmp_path / "run")
    assert torch.export.load(path).module()(torch.randn(3, 1, 8, 8)).shape == (3, 10)


# ----------------------------------------------------------------------------- never over a run file
@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("export") / "run"
    run_to_disk(fast_config(out, epochs=1))
    (out / "summary.json").write_text('{"epochs": 1}\n')
    (out / "events.jsonl").write_text("")
    return out


@pytest.mark.parametrize(
    "target",
    ["checkpoint.pt", "summary.pt2", "events.jsonl", "summary.json", "program.json"],
)
def test_export_never_overwrites_a_run_file(small_run: Path, target: str) -> None:
    before = {p.name: p.read_bytes() for p in small_run.iterdir() if p.is_file()}
    with pytest.raises(ConfigError, match="choose another --out"):
        export_grown(small_run, small_run / target)
    assert {p.name: p.read_bytes() for p in small_run.iterdir() if p.is_file()} == before


def test_export_replaces_only_an_earlier_export(small_run: Path, tmp_path: Path) -> None:
    first = export_grown(small_run, tmp_path / "grown.pt2")
    assert export_grown(small_run, tmp_path / "grown.pt2") == first  # an earlier export: replaced
    (tmp_path / "mine.pt2").write_bytes(b"a file of the user's")
    with pytest.raises(ConfigError, match=r"mine\.pt2"):
        export_grown(small_run, tmp_path / "mine.pt2")
    assert (tmp_path / "mine.pt2").read_bytes() == b"a file of the user's"
    assert not list(tmp_path.glob("*.tmp"))


def test_cli_export_over_a_checkpoint_exits_2(small_run: Path) -> None:
    from click.testing import CliRunner

    from esper.cli.main import cli

    before = (small_run / "checkpoint.pt").read_bytes()
    result = CliRunner().invoke(cli, ["export", str(small_run), "--out", str(small_run / "checkpoint.pt")])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "checkpoint.pt" in result.stderr
    assert (small_run / "checkpoint.pt").read_bytes() == before
