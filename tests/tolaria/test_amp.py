"""AMP: the mode per device, autocast contexts, and a GradScaler enabled only for fp16."""

from __future__ import annotations

import contextlib

import pytest
import torch

from esper.tolaria.amp import autocast_context, make_scaler, resolve_amp, resolve_device

CPU = torch.device("cpu")


def test_auto_is_none_on_cpu() -> None:
    assert resolve_amp("auto", CPU) == "none"


@pytest.mark.parametrize("mode", ["none", "bf16", "fp16"])
def test_explicit_modes_are_kept(mode: str) -> None:
    assert resolve_amp(mode, CPU) == mode


@pytest.mark.gpu
def test_auto_is_bf16_on_cuda_that_supports_it() -> None:
    expected = "bf16" if torch.cuda.is_bf16_supported() else "none"
    assert resolve_amp("auto", torch.device("cuda")) == expected


@pytest.mark.parametrize(("mode", "enabled"), [("none", False), ("bf16", False), ("fp16", True)])
def test_scaler_is_enabled_only_for_fp16(mode: str, enabled: bool) -> None:
    scaler = make_scaler(mode, CPU)
    assert scaler.is_enabled() is enabled


def test_fp16_scaler_on_cpu_really_scales() -> None:
    # A bare GradScaler() means CUDA and silently disables itself on CPU: ours is built for "cpu".
    scaler = make_scaler("fp16", CPU)
    loss = torch.tensor(2.0, requires_grad=True)
    scaled = scaler.scale(loss)
    assert scaled.item() == pytest.approx(2.0 * scaler.get_scale())
    assert scaler.get_scale() > 1.0


@pytest.mark.parametrize(("mode", "dtype"), [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_linear_layers_in_low_precision(mode: str, dtype: torch.dtype) -> None:
    layer = torch.nn.Linear(4, 3)
    with autocast_context(mode, CPU):
        out = layer(torch.randn(2, 4))
    assert out.dtype == dtype
    assert layer.weight.dtype == torch.float32


def test_none_is_a_no_op_context() -> None:
    assert isinstance(autocast_context("none", CPU), contextlib.nullcontext)
    with autocast_context("none", CPU):
        assert torch.nn.Linear(4, 3)(torch.randn(2, 4)).dtype == torch.float32


def test_resolve_device() -> None:
    assert resolve_device("cpu") == CPU
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
