"""Export a grown model as a plain PyTorch artefact that loads and predicts without Esper.

The artefact is a ``torch.export`` program (``model.pt2``) of the final model — its FOSSILIZED
seeds, and BLENDING/HOLDING seeds at their alpha, baked in (:func:`bake_final`) — with a
dynamic batch dimension, plus a small
``model.json`` beside it recording the input shape and dtype and the class count. Loading it
needs only torch::

    program = torch.export.load("model.pt2")
    logits = program.module()(x)  # x: (B, *input_shape) of input_dtype -> (B, num_classes)
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from esper.data import Task, get_task
from esper.errors import CheckpointError, ConfigError
from esper.kasmina.model import MorphogeneticModel
from esper.leyline.stages import OUTPUT_STAGES
from esper.nissa.io import atomic_write_bytes, atomic_write_text
from esper.tolaria.checkpoint import load_checkpoint, load_grown, resolve_checkpoint_path

__all__ = [
    "EXPORT_FORMAT",
    "EXPORT_NAME",
    "InputSpec",
    "bake_final",
    "check_export_target",
    "export_grown",
    "export_model",
    "input_spec_of",
]

EXPORT_NAME = "model.pt2"
EXPORT_FORMAT = "esper-export-v1"


@dataclass(frozen=True, slots=True)
class InputSpec:
    """What the exported model takes and returns.

    Attributes:
        shape: one example's shape, without the batch dimension (e.g. ``(1, 8, 8)`` images
            or ``(64,)`` tokens).
        dtype: the input dtype name (``"float32"`` images, ``"int64"`` tokens).
        num_classes: size of the last logits dimension (the vocabulary for language models).
        task: the task the model was trained on.
        normalization: how raw inputs become these (``(raw / divide_by - mean) / std`` per
            channel), so the export can be fed raw data without Esper; None when inputs are
            used as they are.
    """

    shape: tuple[int, ...]
    dtype: str
    num_classes: int
    task: str
    normalization: dict[str, Any] | None = None

    def example(self, batch: int = 2) -> Tensor:
        """An input batch of this shape and dtype (zeros; values do not matter for tracing)."""
        return torch.zeros((batch, *self.shape), dtype=getattr(torch, self.dtype))

    @classmethod
    def of_task(cls, task: Task) -> InputSpec:
        """What ``task`` feeds its model."""
        dtype = "int64" if task.topology == "transformer" else "float32"
        return cls(tuple(task.input_shape), dtype, task.num_classes, task.name, task.normalization)

    def to_dict(self) -> dict[str, Any]:
        """Primitives, for checkpoints."""
        return {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "num_classes": self.num_classes,
            "task": self.task,
            "normalization": self.normalization,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSpec:
        return cls(
            tuple(int(d) for d in data["shape"]),
            str(data["dtype"]),
            int(data["num_classes"]),
            str(data["task"]),
            _normalization(data.get("normalization")),
        )


def _normalization(data: Any) -> dict[str, Any] | None:
    if data is None:
        return None
    try:
        return {
            "divide_by": float(data["divide_by"]),
            "mean": [float(v) for v in data["mean"]],
            "std": [float(v) for v in data["std"]],
        }
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"malformed input normalization {data!r}: {exc}") from None


def bake_final(model: MorphogeneticModel) -> MorphogeneticModel:
    """A copy of ``model`` in eval mode with the seeds that shape its output: FOSSILIZED ones,
    and BLENDING/HOLDING ones at their current alpha. The others (GERMINATED, TRAINING) leave
    the output unchanged and are removed, so the copy computes exactly what ``model`` does.

    The original is not touched. The copy computes what the exported program computes, and
    what a run's ``final_val_accuracy`` measured.
    """
    baked = copy.deepcopy(model)
    for slot in baked.slots():
        if slot.seed is not None and slot.stage not in OUTPUT_STAGES:
            slot.prune("export: the seed does not shape the final model's output")
    return baked.eval()


def export_model(model: MorphogeneticModel, spec: InputSpec, out_path: str | Path) -> Path:
    """Bake ``model`` (see :func:`bake_final`) and write it with ``torch.export`` atomically.

    Also writes ``<out_path stem>.json`` with the input spec. Returns ``out_path``.

    Raises:
        ConfigError: either file would replace one that is not an earlier export (a run's
            checkpoint or summary, a file of the user's): see :func:`check_export_target`.
    """
    out = Path(out_path)
    check_export_target(out)
    baked = bake_final(model).cpu()
    example = spec.example()
    # Keyed by the tensor, not by forward's signature: an injected model's forward is (*args, **kwargs).
    dynamic = torch.export.ShapesCollection()
    dynamic[example] = {0: torch.export.Dim("batch", min=1, max=65536)}
    with torch.no_grad():
        program = torch.export.export(
            baked, (example,), dynamic_shapes=dynamic.dynamic_shapes(baked, (example,))
        )
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, buffer.getvalue())
    atomic_write_text(out.with_suffix(".json"), json.dumps(_metadata(baked, spec, out), indent=2) + "\n")
    return out


def check_export_target(out: Path) -> None:
    """Refuse an export whose program or metadata file would replace anything but an earlier export.

    ``out`` and ``out.with_suffix(".json")`` are both written, so ``RUN/summary.pt2`` would
    replace ``RUN/summary.json``, and a ``.json`` program would be overwritten by its metadata.
    """
    meta = out.with_suffix(".json")
    if out == meta:
        raise ConfigError(
            f"export target {str(out)!r} ends in .json, the name its metadata gets; "
            f"choose another --out ending in .pt2"
        )
    taken = [p for p in (out, meta) if p.exists() or p.is_symlink()]
    if taken and not _is_earlier_export(meta, out):
        raise ConfigError(
            f"export to {str(out)!r} would replace {', '.join(repr(str(p)) for p in taken)}, which "
            f"{'is' if len(taken) == 1 else 'are'} not an earlier export (the program and "
            f"{meta.name} are both written); choose another --out"
        )


def _is_earlier_export(meta: Path, out: Path) -> bool:
    """Whether ``meta`` is the metadata an earlier export of ``out`` wrote (plain files only)."""
    if meta.is_symlink() or not meta.is_file() or out.is_symlink() or (out.exists() and not out.is_file()):
        return False
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("format") == EXPORT_FORMAT and data.get("program") == out.name


def export_grown(run_dir_or_checkpoint: str | Path, out_path: str | Path | None = None) -> Path:
    """Export the grown model of a run (see :func:`export_model`).

    Args:
        run_dir_or_checkpoint: a run directory or its ``checkpoint.pt``.
        out_path: where to write (default: ``model.pt2`` in the run directory).

    Returns:
        the path of the written program.

    Raises:
        ConfigError: the target would replace a file that is not an earlier export.
        CheckpointError: the checkpoint is missing, corrupt, or holds no run config.
        DatasetError: a checkpoint without a recorded input spec names a task whose data
            (which fixes the input shape) cannot be found.
    """
    checkpoint = resolve_checkpoint_path(run_dir_or_checkpoint)
    out = Path(out_path) if out_path is not None else checkpoint.parent / EXPORT_NAME
    check_export_target(out)  # before the (slow) load and trace
    spec = input_spec_of(checkpoint)
    model = load_grown(checkpoint)
    return export_model(model, spec, out)


def input_spec_of(checkpoint: str | Path) -> InputSpec:
    """The input spec a run's checkpoint records (or, for older checkpoints, its task's)."""
    data = load_checkpoint(checkpoint)
    if isinstance(data.get("input_spec"), dict):
        return InputSpec.from_dict(data["input_spec"])
    config = data.get("config")
    if not isinstance(config, dict) or "task" not in config:
        raise CheckpointError(f"checkpoint {str(checkpoint)!r} holds no run config (no task to export for)")
    task = get_task(
        config["task"],
        data_dir=config.get("data_dir"),
        text_file=config.get("text_file"),
        batch_size=config.get("batch_size"),
    )
    return InputSpec.of_task(task)


def _metadata(model: MorphogeneticModel, spec: InputSpec, out: Path) -> dict[str, Any]:
    seeds = [
        {
            "slot": s.slot_id,
            "blueprint": s.state.blueprint_id,
            "stage": s.stage.name,
            "alpha": s.alpha,
            "params": s.seed_params,
        }
        for s in model.slots()
        if s.stage in OUTPUT_STAGES
    ]
    return {
        "format": EXPORT_FORMAT,
        "program": out.name,
        "task": spec.task,
        "topology": model.topology,
        "input_shape": ["batch", *spec.shape],
        "input_dtype": spec.dtype,
        "input_normalization": None
        if spec.normalization is None
        else {**spec.normalization, "formula": "x = (raw / divide_by - mean) / std, per channel"},
        "num_classes": spec.num_classes,
        "output_shape": ["batch", spec.num_classes]
        if model.topology == "cnn"
        else ["batch", *spec.shape, spec.num_classes],
        "params": sum(p.numel() for p in model.parameters()),
        "seeds": seeds,
        "torch_version": torch.__version__,
        "load": f"torch.export.load({out.name!r}).module()(x)",
    }
