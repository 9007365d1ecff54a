"""Checkpoints: atomic writes, ``weights_only`` loads, and rebuilding a grown model from one file."""

from __future__ import annotations

import io
import pickle
import random
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from esper.errors import CheckpointError
from esper.kasmina.model import MorphogeneticModel
from esper.nissa.io import atomic_write_bytes

__all__ = [
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_NAME",
    "check_state_fits",
    "load_checkpoint",
    "load_grown",
    "load_weights_file",
    "rng_state",
    "save_checkpoint",
    "set_rng_state",
]

CHECKPOINT_NAME = "checkpoint.pt"
CHECKPOINT_FORMAT = "esper-checkpoint-v1"


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> Path:
    """Write ``payload`` (tensors and primitives only) atomically: a kill never leaves half a file."""
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # an Engine used without run_training
    return atomic_write_bytes(path, buffer.getvalue())


def resolve_checkpoint_path(path: str | Path) -> Path:
    """A checkpoint file, or a run directory holding ``checkpoint.pt``."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT_NAME
    if not p.is_file():
        raise CheckpointError(
            f"no checkpoint at {str(p)!r}: pass a run directory that holds {CHECKPOINT_NAME} "
            f"or the checkpoint file itself"
        )
    return p


def load_weights_file(path: Path, map_location: str | torch.device, what: str) -> Any:
    """``torch.load(weights_only=True)``; any failure is a CheckpointError naming ``what`` and the file.

    torch itself checks each storage's declared size against its zip record before reading it,
    so a file cannot make this allocate more than it holds.
    """
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, OSError, pickle.UnpicklingError, zipfile.BadZipFile, ValueError) as exc:
        reason = _load_failure(exc)
        raise CheckpointError(f"{what} {str(path)!r} is corrupt or unreadable: {reason}") from None


def _load_failure(exc: BaseException) -> str:
    """torch's reason, without its advice to load with ``weights_only=False`` (that runs the
    file's code: never the fix for a file Esper did not write)."""
    text = str(exc)
    marker = "WeightsUnpickler error: "
    if marker in text:
        reason = text[text.index(marker) + len(marker) :].split(". Please use", 1)[0].strip()
        return f"{reason} (Esper loads only tensors and primitives)"
    lines = [line for line in text.splitlines() if line.strip() and "weights_only" not in line]
    return lines[0].strip() if lines else type(exc).__name__


def check_state_fits(skeleton: torch.nn.Module, state: Any, source: str) -> None:
    """Refuse ``state`` unless it holds a tensor of the right shape for every tensor of ``skeleton``.

    Build ``skeleton`` from the file's config on the meta device (no memory): a config that
    claims a larger model than the file holds is refused before anything is allocated.
    """
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: the weights are not a state dict (got {type(state).__name__})")
    for key, expected in skeleton.state_dict().items():
        if not isinstance(expected, torch.Tensor):
            continue  # extra state (slot lifecycle records)
        held = state.get(key)
        shape = tuple(held.shape) if isinstance(held, torch.Tensor) else None
        if shape != tuple(expected.shape):
            raise CheckpointError(
                f"{source}: its config describes {key} of shape {tuple(expected.shape)} but the file "
                f"holds {'no such tensor' if shape is None else f'shape {shape}'}; the file is corrupt "
                f"or was edited (re-create it with Esper)"
            )


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True``; a corrupt or foreign file is a CheckpointError."""
    p = resolve_checkpoint_path(path)
    data = load_weights_file(p, map_location, "checkpoint")
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{str(p)!r} is not an Esper checkpoint (expected format {CHECKPOINT_FORMAT!r})"
        )
    return data


def load_grown(
    path: str | Path, map_location: str | torch.device = "cpu", *, model: nn.Module | None = None
) -> MorphogeneticModel:
    """Rebuild the grown model (host + seeds, in their stages) from a run's checkpoint.

    Args:
        path: a run directory or a ``checkpoint.pt``.
        map_location: where to put the weights.
        model: for a model made by ``esper.inject_slots``: a freshly built instance of the
            user's model (or one already injected the same way). Without it, the model
            factory the run recorded (``--model``) builds it.

    Returns:
        the model in eval mode.
    """
    file = resolve_checkpoint_path(path)
    data = load_checkpoint(file, map_location)
    source = f"checkpoint {str(file)!r}"
    try:
        config, state = data["model_config"], data["model"]
    except KeyError as exc:
        raise CheckpointError(f"{source} has no model: missing {exc}") from exc
    if config.get("injected"):
        grown = _reinjected(data, source, model)
        grown.load_state_dict(state)  # all or nothing; the user's model fixes the shapes
        return grown.to(map_location).eval()
    if model is not None:
        raise CheckpointError(
            f"{source} holds one of Esper's own hosts ({config.get('host_class')!r}), which it "
            "rebuilds itself: call load_grown without model="
        )
    try:
        with torch.device("meta"):  # shapes only: the config may claim any size
            skeleton = MorphogeneticModel.from_config(config)
    except (RuntimeError, ValueError, TypeError, OverflowError) as exc:
        raise CheckpointError(f"{source}: its model config is invalid: {exc}") from None
    check_state_fits(skeleton, state, source)
    grown = MorphogeneticModel.from_config(config)
    grown.load_state_dict(state)
    return grown.to(map_location).eval()


def _reinjected(data: dict[str, Any], where: str, model: nn.Module | None) -> MorphogeneticModel:
    """The empty injected model of a checkpoint (the input spec's zeros read the layouts)."""
    from esper.tolaria.user_code import reinject

    spec = data.get("input_spec")
    example = None
    if isinstance(spec, dict):
        example = torch.zeros((2, *spec["shape"]), dtype=getattr(torch, str(spec["dtype"])))
    return reinject(model, data["model_config"], data.get("config"), example, where)


def rng_state() -> dict[str, Any]:
    """The global RNG states (torch, Python, CUDA) as tensors and primitives."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "python": list(internal),
        "python_version": version,
        "python_gauss": gauss,
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
