"""Mixed precision: resolve the AMP mode for a device and build the autocast context and scaler."""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager

import torch

__all__ = ["autocast_context", "make_scaler", "resolve_amp", "resolve_device"]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; anything else is parsed by torch."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a torch device (try 'cpu' or 'cuda')") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return dev


def resolve_amp(amp: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA with bf16 support, else ``"none"``.

    CPU defaults to none: on CPUs without native bf16 (like AVX2 machines) autocast runs
    convolutions ~10x slower than fp32.
    """
    if amp != "auto":
        return amp
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "none"


def autocast_context(amp: str, device: torch.device) -> AbstractContextManager[object]:
    """``torch.autocast`` for bf16/fp16, or a no-op context for ``"none"``."""
    if amp == "none":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[amp])


def make_scaler(amp: str, device: torch.device) -> torch.amp.GradScaler:
    """A GradScaler for ``device`` enabled only for fp16 (a bare GradScaler() means CUDA)."""
    return torch.amp.GradScaler(device.type, enabled=amp == "fp16")
