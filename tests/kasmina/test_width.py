"""Width growth: function preservation at birth, blending, prune, fossilize, optimizer state, checkpoints."""

from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from esper.errors import CheckpointError, UnknownSlotError, WidthGrowthError
from esper.kasmina.host import CNNHost, HostBase, MorphogeneticModel, TransformerHost, build_host
from esper.kasmina.optim_remap import carry_optimizer_state
from esper.kasmina.slot import SeedSlot
from esper.kasmina.width import ParamRemap, WidthSeed, WidthSite
from esper.leyline.stages import SeedStage

from .helpers import FAST_GATES, OpCounter, assert_model_unchanged, model_snapshot

# (topology, blueprint, slot, pool_layers): every supported site pattern.
SITES = [
    ("cnn", "widen", "r0c0", None),  # pooled block, conv reader
    ("cnn", "widen", "r0c1", None),  # last block, head (Linear after the global mean) reader
    ("cnn", "widen_half", "r0c0", 0),  # no pool
    ("cnn", "widen", "r0c1", 0),
    ("transformer", "widen_mlp", "r0c0", None),  # MLP hidden units
    ("transformer", "widen_mlp", "r0c1", None),
]
SITE_IDS = [f"{t}-{b}-{s}-pool{p}" for t, b, s, p in SITES]


def _model(topology: str, pool_layers: int | None = None, n_blocks: int = 2) -> MorphogeneticModel:
    torch.manual_seed(0)
    if topology == "cnn":
        host: HostBase = CNNHost(num_classes=3, n_blocks=n_blocks, base_channels=4, pool_layers=pool_layers)
    else:
        host = TransformerHost(vocab_size=11, n_embd=8, n_head=2, n_layer=n_blocks, block_size=8)
    return MorphogeneticModel(host, gates=FAST_GATES)


def _input(topology: str, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if topology == "cnn":
        return torch.randn(4, 3, 8, 8, generator=g)
    return torch.randint(0, 11, (4, 6), generator=g)


def _loss(out: torch.Tensor) -> torch.Tensor:
    return out.float().square().mean()


def _perturb(module: nn.Module, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)


def _to_stage(
    model: MorphogeneticModel, sid: str, stage: SeedStage, blueprint: str, x: torch.Tensor
) -> SeedSlot:
    """Germinate ``blueprint`` in ``sid`` and walk it to ``stage`` (backward through the model)."""
    slot = model.slot(sid)
    slot.germinate(blueprint, blend_tempo_epochs=2)
    order = [SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED]
    for nxt in order[: order.index(stage) + 1] if stage in order else []:
        if nxt == SeedStage.BLENDING:
            _loss(model(x)).backward()
            slot.step_epoch()
        elif nxt == SeedStage.HOLDING:
            slot.step_epoch()
            slot.step_epoch()
        elif nxt == SeedStage.FOSSILIZED:
            slot.step_epoch()
            slot.record_contribution(1.0)
        result = slot.advance_stage()
        assert result.passed, result
    model.zero_grad(set_to_none=True)
    return slot


def _host_grads(model: nn.Module, host: HostBase) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in host.named_parameters() if p.grad is not None}


def _width_seed(slot: SeedSlot) -> WidthSeed:
    assert isinstance(slot.seed, WidthSeed)
    return slot.seed


# --------------------------------------------------------------------------- birth and TRAINING
@pytest.mark.parametrize(("topology", "blueprint", "sid", "pool"), SITES, ids=SITE_IDS)
def test_training_is_bit_identical_and_new_params_learn(topology, blueprint, sid, pool):
    model = _model(topology, pool)
    bare = copy.deepcopy(model)
    x = _input(topology)
    slot = _to_stage(model, sid, SeedStage.TRAINING, blueprint, x)
    assert slot.widening and not slot.active and slot.seed_params > 0
    out, ref = model(x), bare(x)
    assert torch.equal(out, ref)
    _loss(out).backward()
    _loss(ref).backward()
    got, want = _host_grads(model, model.host), _host_grads(bare, bare.host)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name]), name
    seed = _width_seed(slot)
    # The zero outgoing weights learn first; the new units' own weights follow once they move.
    assert seed.read.weight.grad is not None and bool(seed.read.weight.grad.abs().sum() > 0)
    assert all(p.grad is not None and bool(p.grad.isfinite().all()) for p in seed.parameters())
    with torch.no_grad():
        seed.read.weight.add_(0.1)
    model.zero_grad(set_to_none=True)
    _loss(model(x)).backward()
    assert bool(seed.grow.weight.grad.abs().sum() > 0)
    assert torch.equal(model(x), bare(x))  # still straight-through: the forward is the host's


def test_germinated_width_seed_costs_nothing_and_births_are_identical_at_every_slot():
    model = _model("cnn", n_blocks=3)
    bare = copy.deepcopy(model).eval()
    x = _input("cnn")
    for sid in ("r0c0", "r0c1", "r0c2"):
        model.slot(sid).germinate("widen")
    assert not model._width.live  # GERMINATED: no compute, the plain forward
    for sid in ("r0c0", "r0c1", "r0c2"):
        model.slot(sid).advance_stage()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), bare(x))


# --------------------------------------------------------------------------- BLENDING
def _bn(z: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _cnn_reference(model: MorphogeneticModel, sid: str, seed: WidthSeed, a: float, x: torch.Tensor):
    """The eval forward of a 2-block CNN written out by hand, with ``a * read(new)`` added."""
    host = model.host
    assert isinstance(host, CNNHost)
    (conv0, bn0, *_), (conv1, bn1, *_) = host.blocks
    pools = [len(b) == 4 for b in host.blocks]

    def post(z, i):
        z = torch.relu(z)
        return F.max_pool2d(z, 2) if pools[i] else z

    assert seed.norm is not None
    h = post(_bn(F.conv2d(x, conv0.weight, padding=1), bn0), 0)
    z1 = F.conv2d(h, conv1.weight, padding=1)
    if sid == "r0c0":
        grown = post(_bn(F.conv2d(x, seed.grow.weight, padding=1), seed.norm), 0)
        z1 = z1 + a * F.conv2d(grown, seed.read.weight, padding=1)
    else:
        grown = post(_bn(F.conv2d(h, seed.grow.weight, padding=1), seed.norm), 1)
    h = post(_bn(z1, bn1), 1)
    logits = h.mean(dim=(2, 3)) @ host.head.weight.T + host.head.bias
    if sid == "r0c1":
        logits = logits + a * (grown.mean(dim=(2, 3)) @ seed.read.weight.T)
    return logits


@pytest.mark.parametrize("pool", [None, 0])
@pytest.mark.parametrize("sid", ["r0c0", "r0c1"])
@pytest.mark.parametrize("a", [0.0, 0.3, 1.0])
def test_cnn_blending_at_alpha_equals_the_hand_computed_reference(sid, pool, a):
    model = _model("cnn", pool)
    x = _input("cnn")
    slot = _to_stage(model, sid, SeedStage.BLENDING, "widen", x)
    seed = _width_seed(slot)
    _perturb(seed)
    with torch.no_grad():
        seed.norm.running_mean.uniform_(-0.5, 0.5)
        seed.norm.running_var.uniform_(0.5, 2.0)
    slot.set_alpha(a)
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), _cnn_reference(model, sid, seed, a, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("a", [0.0, 0.4, 1.0])
def test_transformer_blending_at_alpha_equals_the_hand_computed_reference(a):
    model = _model("transformer")
    x = _input("transformer")
    slot = _to_stage(model, "r0c1", SeedStage.BLENDING, "widen_mlp", x)
    seed = _width_seed(slot)
    _perturb(seed)
    slot.set_alpha(a)
    model.eval()
    host = model.host
    assert isinstance(host, TransformerHost)
    block = host.blocks[1]
    h = host.blocks[0](host.embed(x))
    y = block._attend(h)
    u = block.ln2(y)
    fc1, _, fc2, _ = block.mlp
    mlp = fc2(F.gelu(fc1(u))) + a * (F.gelu(u @ seed.grow.weight.T + seed.grow.bias) @ seed.read.weight.T)
    with torch.no_grad():
        torch.testing.assert_close(model(x), host.finish(y + mlp), rtol=1e-5, atol=1e-6)


def test_forced_alpha_zero_is_the_host_even_per_sample_on_the_head():
    model = _model("cnn").eval()  # eval: the host's BatchNorm statistics stay put
    bare = copy.deepcopy(model)
    x = _input("cnn")
    slot = _to_stage(model, "r0c1", SeedStage.HOLDING, "widen", x)
    _perturb(slot.seed)
    model.eval()
    with torch.no_grad():
        assert not torch.allclose(model(x), bare(x))
        with slot.force_alpha(0.0):
            assert torch.equal(model(x), bare(x))
        per_sample = torch.tensor([0.0, 1.0, 0.0, 1.0]).view(4, 1, 1, 1)  # the trainer's shape
        with slot.force_alpha(per_sample):
            out = model(x)
        full = model(x)
        assert torch.equal(out[0::2], bare(x)[0::2]) and torch.equal(out[1::2], full[1::2])


# --------------------------------------------------------------------------- prune
@pytest.mark.parametrize(("topology", "blueprint", "sid", "pool"), SITES, ids=SITE_IDS)
@pytest.mark.parametrize("stage", [SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.HOLDING])
def test_prune_restores_the_exact_host(topology, blueprint, sid, pool, stage):
    model = _model(topology, pool).eval()  # eval: training forwards would move BN statistics
    x = _input(topology)
    with torch.no_grad():
        expected = model(x)
    before = {k: v.clone() for k, v in model.host.state_dict().items()}
    ids = [id(p) for p in model.host.parameters()]
    slot = _to_stage(model, sid, stage, blueprint, x)
    _perturb(slot.seed)
    assert slot.prune("test")
    assert slot.seed is None and slot.state.width is None and not model._width.live
    after = model.host.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)
    assert [id(p) for p in model.host.parameters()] == ids
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), expected)


# --------------------------------------------------------------------------- fossilize
@pytest.mark.parametrize(("topology", "blueprint", "sid", "pool"), SITES, ids=SITE_IDS)
def test_fossilize_merges_into_plain_host_layers(topology, blueprint, sid, pool):
    model = _model(topology, pool)
    x = _input(topology)
    slot = _to_stage(model, sid, SeedStage.HOLDING, blueprint, x)
    assert slot.alpha == 1.0
    seed = _width_seed(slot)
    _perturb(seed)
    for _ in range(3):  # running statistics of the new channels move
        model(x)
    holding = copy.deepcopy(model)
    before_params = sum(p.numel() for p in model.parameters())
    slot.record_contribution(1.0)
    slot.step_epoch()
    assert slot.advance_stage().passed
    assert slot.stage == SeedStage.FOSSILIZED and slot.seed is None and not model._width.live
    assert slot.state.width == {"base": seed.base_units, "units": seed.units}
    assert sum(p.numel() for p in model.parameters()) == before_params  # moved, not copied
    with torch.no_grad():
        for train in (True, False):  # batch statistics, then the (equally updated) running ones
            model.train(train)
            holding.train(train)
            torch.testing.assert_close(model(x), holding(x), rtol=1e-5, atol=1e-6)
    config = model.host.config()
    index = int(sid[-1])
    if topology == "cnn":
        assert config["widths"][index] == seed.base_units + seed.units == slot.channels
    else:
        assert config["mlp_widths"][index] == seed.base_units + seed.units
        assert slot.channels == 8
    rebuilt = build_host(type(model.host).__name__, config)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.host.state_dict().items()
    }
    remaps = model.take_param_remaps()
    assert remaps and model.take_param_remaps() == []
    host_params = {id(p) for p in model.host.parameters()}
    assert all(id(r.new) in host_params and id(r.old) not in host_params for r in remaps)


def test_fossilize_grows_neighbouring_width_seeds_to_match():
    """Widening block 1 while blocks 0 and 2 grow too: their seeds gain zero rows / columns."""
    model = _model("cnn", n_blocks=3)
    x = _input("cnn")
    slots = [_to_stage(model, sid, SeedStage.HOLDING, "widen_half", x) for sid in ("r0c0", "r0c1", "r0c2")]
    for slot in slots:
        _perturb(slot.seed)
        slot.set_alpha(0.7)
    model.eval()
    with torch.no_grad():
        expected = model(x)
    middle = slots[1]
    middle.record_contribution(1.0)
    middle.step_epoch()
    assert middle.advance_stage(SeedStage.FOSSILIZED).passed
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    left, right = _width_seed(slots[0]), _width_seed(slots[2])
    assert left.read.weight.shape[0] == model.host.blocks[1][0].out_channels == 8 + 4
    assert right.grow.weight.shape[1] == model.host.blocks[2][0].in_channels == 12
    names = [r.name for r in model.take_param_remaps()]
    assert any("read.weight" in n for n in names) and any("grow.weight" in n for n in names)
    for slot in (slots[0], slots[2]):  # and they fossilize in turn
        slot.record_contribution(1.0)
        slot.step_epoch()
        assert slot.advance_stage(SeedStage.FOSSILIZED).passed
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected, rtol=1e-5, atol=1e-6)
    assert model.host.config()["widths"] == [6, 12, 24]


# --------------------------------------------------------------------------- optimizer state
def _check_carried(opt, remaps, saved, zero_keys):
    held = [p for g in opt.param_groups for p in g["params"]]
    for r in remaps:
        assert any(p is r.new for p in held) and not any(p is r.old for p in held)
        state = opt.state[r.new]
        for key in zero_keys:
            old = saved[id(r.old)][key]
            new = state[key]
            assert new.shape == r.new.shape
            assert torch.equal(new.narrow(r.dim, 0, old.shape[r.dim]), old)
            rest = new.narrow(r.dim, old.shape[r.dim], new.shape[r.dim] - old.shape[r.dim])
            assert not bool(rest.any())
        if "step" in saved[id(r.old)]:
            assert torch.equal(torch.as_tensor(state["step"]), torch.as_tensor(saved[id(r.old)]["step"]))


@pytest.mark.parametrize(
    ("make", "keys"),
    [
        (lambda ps: torch.optim.AdamW(ps, lr=1e-2), ("exp_avg", "exp_avg_sq")),
        (lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9), ("momentum_buffer",)),
    ],
    ids=["adamw", "sgd-momentum"],
)
@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_optimizer_state_carries_over_with_zero_moments_for_new_rows(make, keys, topology):
    model = _model(topology)
    x = _input(topology)
    blueprint = "widen" if topology == "cnn" else "widen_mlp"
    slot = _to_stage(model, "r0c0", SeedStage.HOLDING, blueprint, x)
    host_opt = make(model.get_host_parameters())
    for _ in range(2):
        host_opt.zero_grad()
        _loss(model(x)).backward()
        host_opt.step()
    saved = {
        id(p): {k: copy.deepcopy(v) for k, v in host_opt.state[p].items()} for p in model.host.parameters()
    }
    slot.record_contribution(1.0)
    slot.step_epoch()
    assert slot.advance_stage().passed
    remaps = model.take_param_remaps()
    assert carry_optimizer_state(host_opt, remaps) == len(remaps)
    _check_carried(host_opt, remaps, saved, keys)
    held = {id(p) for g in host_opt.param_groups for p in g["params"]}
    assert held == {id(p) for p in model.host.parameters()}
    host_opt.zero_grad()
    _loss(model(x)).backward()
    host_opt.step()  # the grown state is usable as is


def test_carry_skips_parameters_the_optimizer_does_not_hold_and_params_without_state():
    layer = nn.Linear(3, 2)
    opt = torch.optim.AdamW(layer.parameters())
    bigger = nn.Parameter(torch.zeros(4, 3))
    foreign = nn.Parameter(torch.zeros(1))
    remaps = [
        ParamRemap("w", layer.weight, bigger, 0),
        ParamRemap("x", foreign, nn.Parameter(torch.zeros(2)), 0),
    ]
    assert carry_optimizer_state(opt, remaps) == 1
    assert opt.param_groups[0]["params"][0] is bigger and bigger not in opt.state


# --------------------------------------------------------------------------- checkpoints
def _round_trip(state: dict) -> dict:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


@pytest.mark.parametrize("topology", ["cnn", "transformer"])
@pytest.mark.parametrize(
    "stage", [SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.HOLDING, SeedStage.FOSSILIZED]
)
@pytest.mark.parametrize("build", ["fresh", "from_config"])
def test_checkpoint_into_a_fresh_model_continues_bit_identically(topology, stage, build):
    model = _model(topology, n_blocks=3)
    x = _input(topology)
    blueprint = "widen" if topology == "cnn" else "widen_mlp"
    for sid in ("r0c0", "r0c1", "r0c2"):
        slot = _to_stage(model, sid, stage, blueprint, x)
        if slot.seed is not None:
            _perturb(slot.seed)
    if stage == SeedStage.FOSSILIZED:
        _perturb(model.host)
    state = _round_trip(model.state_dict())
    if build == "fresh":
        fresh = _model(topology, n_blocks=3)  # the host as built before any growth
    else:
        fresh = MorphogeneticModel.from_config(model.config())
    fresh.load_state_dict(state)
    assert fresh.host.config() == model.host.config()
    assert [s.channels for s in fresh.slots()] == [s.channels for s in model.slots()]
    opts = [torch.optim.SGD(m.parameters(), lr=0.1) for m in (model, fresh)]
    for _ in range(2):
        outs = []
        for m, opt in zip((model, fresh), opts, strict=True):
            opt.zero_grad()
            out = m(x)
            _loss(out).backward()
            opt.step()
            outs.append(out)
        assert torch.equal(outs[0], outs[1])
    for sa, sb in zip(model.slots(), fresh.slots(), strict=True):
        sa.step_epoch()
        sb.step_epoch()
        assert sa.alpha == sb.alpha and sa.stage == sb.stage
    for (ka, va), (kb, vb) in zip(model.state_dict().items(), fresh.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb) if isinstance(va, torch.Tensor) else va == vb, ka


def test_checkpoint_of_a_float64_model_widens_a_float64_host():
    model = _model("cnn").double()
    x = _input("cnn").double()
    _to_stage(model, "r0c0", SeedStage.FOSSILIZED, "widen", x)
    _perturb(_to_stage(model, "r0c1", SeedStage.BLENDING, "widen", x).seed)
    fresh = _model("cnn").double()
    fresh.load_state_dict(_round_trip(model.state_dict()))
    assert {p.dtype for p in fresh.parameters()} == {torch.float64}
    model.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_checkpoint_whose_widened_shapes_do_not_fit_is_refused_and_changes_nothing():
    model = _model("cnn")
    x = _input("cnn")
    _to_stage(model, "r0c0", SeedStage.FOSSILIZED, "widen", x)
    state = model.state_dict()
    other = MorphogeneticModel(
        CNNHost(num_classes=3, n_blocks=2, base_channels=4, widths=[6, 8]), gates=FAST_GATES
    )
    before = model_snapshot(other)
    with pytest.raises(CheckpointError, match=r"r0c0.*4 -> 8 units.*has 6.*expected 4 or 8"):
        other.load_state_dict(state)
    assert_model_unchanged(other, before)
    plain = _model("cnn").state_dict()
    before = model_snapshot(model)
    with pytest.raises(CheckpointError, match=r"r0c0.*was widened 4 -> 8"):
        model.load_state_dict(plain)
    assert_model_unchanged(model, before)
    # A load that fails after the host was widened (a bad tensor) undoes the widening.
    fresh = _model("cnn")
    before = model_snapshot(fresh)
    broken = dict(state)
    broken["host.head.weight"] = torch.zeros(3, 5)
    with pytest.raises(CheckpointError):
        fresh.load_state_dict(broken)
    assert_model_unchanged(fresh, before)
    assert fresh.host.config() == _model("cnn").host.config()


# --------------------------------------------------------------------------- memory format
def test_channels_last_inputs_and_weights_keep_working():
    model = _model("cnn", n_blocks=3)
    x = _input("cnn")
    for sid in ("r0c0", "r0c1", "r0c2"):
        _perturb(_to_stage(model, sid, SeedStage.BLENDING, "widen", x).seed)
        model.slot(sid).set_alpha(0.5)
    model.eval()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected)
        model.to(memory_format=torch.channels_last)
        torch.testing.assert_close(model(x.to(memory_format=torch.channels_last)), expected)
    for sid in ("r0c0", "r0c1"):
        slot = model.slot(sid)
        slot.step_epoch()
        slot.step_epoch()
        slot.set_alpha(1.0)
        assert slot.advance_stage().passed
        slot.record_contribution(1.0)
        slot.step_epoch()
        assert slot.advance_stage().passed
    with torch.no_grad():
        model.slot("r0c2").set_alpha(0.5)
        out = model(x.to(memory_format=torch.channels_last))
    assert out.shape == (4, 3) and bool(out.isfinite().all())


# --------------------------------------------------------------------------- bad input
def test_widening_beyond_max_width_is_refused_and_changes_nothing():
    model = _model("cnn")
    before = model_snapshot(model)
    with pytest.raises(WidthGrowthError, match=r"slot 'r0c0'.*4 -> 8 units exceeds max_width=6"):
        model.germinate_seed("widen", slot="r0c0", blueprint_kwargs={"max_width": 6})
    assert_model_unchanged(model, before)
    slot = model.germinate_seed("widen_half", slot="r0c0", blueprint_kwargs={"max_width": 6})
    assert slot.state.blueprint_kwargs == {"max_width": 6} and _width_seed(slot).units == 2


class _OddHead(CNNHost):
    """A CNN whose head is not a plain Linear: the last block's reader cannot be identified."""

    def __init__(self) -> None:
        super().__init__(num_classes=3, n_blocks=2, base_channels=4)
        self.head = nn.Sequential(nn.Linear(8, 3))


class _NoSites(HostBase):
    topology = "cnn"

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Conv2d(3, 4, 3, padding=1)])

    def embed(self, x):
        return x

    def finish(self, h):
        return h.mean(dim=(2, 3))

    def check_input(self, x):
        pass

    def config(self):
        return {}

    def _block_width(self, index):
        return 4


class _Mismatched(CNNHost):
    """A host whose width site names a reader that does not read the producer's channels."""

    def width_site(self, slot_id: str) -> WidthSite:
        site = super().width_site(slot_id)
        return WidthSite(slot_id, site.producer, site.norm, site.post, nn.Linear(5, 3))


@pytest.mark.parametrize(
    ("host", "match"),
    [
        (
            _OddHead,
            r"slot 'r0c1': widening block 1 \(8 channels\) needs a Conv2d or Linear reading them, "
            r"found Sequential",
        ),
        (_NoSites, r"slot 'r0c0': _NoSites names no width site"),
        (
            lambda: _Mismatched(num_classes=3, n_blocks=2, base_channels=4),
            r"slot 'r0c1'.*read the producer's 8 units",
        ),
    ],
    ids=["odd-head", "no-sites", "mismatched-reader"],
)
def test_a_reader_that_cannot_be_found_is_a_clear_error_and_changes_nothing(host, match):
    model = MorphogeneticModel(host(), gates=FAST_GATES)
    sid = list(model.seed_slots)[-1]
    before = model_snapshot(model)
    with pytest.raises(WidthGrowthError, match=match):
        model.germinate_seed("widen", slot=sid)
    assert_model_unchanged(model, before)
    assert model.slot(sid).param_estimate("widen") > 0  # the registry's figure, no crash


def test_a_bare_slot_refuses_width_blueprints_and_unknown_slots_are_named():
    slot = SeedSlot("r0c0", 4)
    with pytest.raises(WidthGrowthError, match="no host"):
        slot.germinate("widen")
    assert slot.stage == SeedStage.DORMANT and slot.seed is None
    with pytest.raises(UnknownSlotError):
        _model("cnn").host.width_site("r9c9")


# --------------------------------------------------------------------------- hot path
def test_a_germinated_width_seed_runs_exactly_the_host_ops():
    model = _model("cnn").eval()
    x = _input("cnn")
    with OpCounter() as bare, torch.no_grad():
        model(x)
    model.slot("r0c0").germinate("widen")
    with OpCounter() as germinated, torch.no_grad():
        model(x)
    assert germinated.names == bare.names


@pytest.mark.slow
@pytest.mark.parametrize("topology", ["cnn", "transformer"])
def test_compiled_model_follows_width_stages_and_does_not_recompile_as_alpha_ramps(topology):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    try:
        model = _model(topology).eval()
        x = _input(topology)
        blueprint = "widen" if topology == "cnn" else "widen_mlp"
        counter = CompileCounter()
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        slots = [_to_stage(model, sid, SeedStage.BLENDING, blueprint, x) for sid in ("r0c0", "r0c1")]
        for slot in slots:
            _perturb(slot.seed)
        with torch.no_grad():
            assert torch.equal(compiled(x), model(x))
            frames = counter.frame_count
            for _ in range(2):
                for slot in slots:
                    slot.step_epoch()
                assert torch.equal(compiled(x), model(x))
            slots[0].set_alpha(0.25)
            assert torch.equal(compiled(x), model(x))
            assert counter.frame_count == frames  # no recompile as alpha ramps
            for slot in slots:
                slot.prune()
            assert torch.equal(compiled(x), model(x))  # the plain route again (a guard failed)
    finally:
        torch._dynamo.reset()
