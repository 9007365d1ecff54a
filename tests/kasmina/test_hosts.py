"""The CNN and transformer hosts: injection points, shapes, input checks and constructor checks."""

from __future__ import annotations

import pytest
import torch

from esper.errors import ShapeError
from esper.kasmina.host import CNNHost, InjectionSpec, TransformerHost, build_host


def test_cnn_segments_double_per_block_in_execution_order():
    host = CNNHost()
    assert host.topology == "cnn"
    assert host.segment_channels == {"r0c0": 32, "r0c1": 64, "r0c2": 128}
    assert list(host.segment_channels) == ["r0c0", "r0c1", "r0c2"]
    assert host.injection_specs() == [
        InjectionSpec("r0c0", 32, 0, "cnn"),
        InjectionSpec("r0c1", 64, 1, "cnn"),
        InjectionSpec("r0c2", 128, 2, "cnn"),
    ]


@pytest.mark.parametrize(("pool_layers", "sizes"), [(None, [8, 4, 2]), (1, [8, 8, 8]), (0, [16, 16, 16])])
def test_cnn_pool_layers(pool_layers, sizes):
    host = CNNHost(num_classes=5, n_blocks=3, base_channels=4, in_channels=1, pool_layers=pool_layers)
    h = host.embed(torch.randn(2, 1, 16, 16))
    seen = []
    for block, (sid, channels) in zip(host.blocks, host.segment_channels.items(), strict=True):
        h = block(h)
        assert h.shape[1] == channels, sid
        seen.append(h.shape[-1])
    assert seen == sizes
    assert host(torch.randn(2, 1, 16, 16)).shape == (2, 5)


def test_cnn_forward_is_embed_blocks_finish():
    host = CNNHost(num_classes=3, n_blocks=2, base_channels=4).eval()
    x = torch.randn(2, 3, 8, 8)
    h = host.embed(x)
    for block in host.blocks:
        h = block(h)
    assert torch.equal(host.finish(h), host(x))


@pytest.mark.parametrize("shape", [(2, 1, 8, 8), (2, 4, 8, 8), (3, 8, 8), (2, 3, 8, 8, 1)])
def test_cnn_wrong_input_shape_gives_the_expected_shape(shape):
    host = CNNHost(in_channels=3)
    with pytest.raises(ShapeError, match=r"\(B, 3, H, W\)") as err:
        host(torch.randn(shape))
    assert isinstance(err.value, ValueError)
    assert str(tuple(shape)) in str(err.value)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"num_classes": 0},
        {"n_blocks": 0},
        {"base_channels": -1},
        {"in_channels": 2.0},
        {"n_blocks": True},
        {"pool_layers": 4},
        {"pool_layers": -1},
        {"pool_layers": 1.0},
    ],
)
def test_cnn_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        CNNHost(**kwargs)


def _lm(**kw) -> TransformerHost:
    args = {"vocab_size": 11, "n_embd": 8, "n_head": 2, "n_layer": 3, "block_size": 6, **kw}
    return TransformerHost(**args)


def test_transformer_segments_and_output():
    host = _lm()
    assert host.topology == "transformer"
    assert host.segment_channels == {"r0c0": 8, "r0c1": 8, "r0c2": 8}
    assert [s.index for s in host.injection_specs()] == [0, 1, 2]
    tokens = torch.randint(0, 11, (2, 6))
    assert host(tokens).shape == (2, 6, 11)
    assert host(tokens[:, :3]).shape == (2, 3, 11)
    assert host.lm_head.weight is host.tok_emb.weight  # weight tying


def test_transformer_is_causal():
    host = _lm().eval()
    tokens = torch.randint(0, 11, (2, 6))
    changed = tokens.clone()
    changed[:, -1] = (changed[:, -1] + 1) % 11
    torch.testing.assert_close(host(tokens)[:, :-1], host(changed)[:, :-1])


@pytest.mark.parametrize(
    "x",
    [
        torch.randint(0, 11, (2, 7)),  # longer than block_size
        torch.randn(2, 6),  # float, not tokens
        torch.randint(0, 11, (2, 6, 1)),
        torch.randint(0, 11, (6,)),
    ],
    ids=["too-long", "float", "rank-3", "rank-1"],
)
def test_transformer_wrong_input_gives_the_expected_shape(x):
    host = _lm()
    with pytest.raises(ShapeError, match=r"\(B, T\) with T <= 6") as err:
        host(x)
    assert isinstance(err.value, ValueError)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vocab_size": 0},
        {"n_embd": 9},  # not divisible by n_head=2
        {"n_head": 0},
        {"n_layer": -1},
        {"block_size": 0},
        {"dropout": 1.0},
        {"dropout": -0.1},
        {"n_embd": 8.0},
    ],
)
def test_transformer_bad_constructor_arguments(kwargs):
    with pytest.raises(ValueError):
        _lm(**kwargs)


@pytest.mark.parametrize(
    "host",
    [CNNHost(num_classes=4, n_blocks=2, base_channels=8, in_channels=1, pool_layers=1), _lm(dropout=0.1)],
    ids=["cnn", "transformer"],
)
def test_config_rebuilds_the_host(host):
    config = host.config()
    rebuilt = build_host(type(host).__name__, config)
    assert type(rebuilt) is type(host) and rebuilt.config() == config
    assert rebuilt.segment_channels == host.segment_channels
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in host.state_dict().items()
    }


def test_build_host_unknown_name():
    with pytest.raises(ValueError, match="CNNHost"):
        build_host("ResNet", {})
