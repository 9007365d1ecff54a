"""inject_slots: seeds grown inside ordinary models (a ResNet, a nanoGPT, an MLP) chosen by name."""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import esper
from esper.errors import CheckpointError, IncompatibleBlueprintError, InjectionError, ShapeError
from esper.kasmina.blueprints import BlueprintRegistry
from esper.kasmina.flat_slot import FlatSeedSlot
from esper.kasmina.host import MorphogeneticModel
from esper.kasmina.inject import InjectedModel, inject_slots
from esper.kasmina.slot import SeedSlot
from esper.leyline.alpha import AlphaAlgorithm, AlphaCurve
from esper.leyline.stages import SeedStage
from esper.tolaria.export import bake_final

from .helpers import FAST_GATES, OpCounter, assert_unchanged, drive, snapshot, tiny_model


# ----------------------------------------------------------------- the users' models
class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock: two 3x3 convs with BatchNorm, a residual, one shared ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            conv = nn.Conv2d(c_in, c_out, 1, stride, bias=False)
            self.downsample = nn.Sequential(conv, nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    """A tiny torchvision-style ResNet over 3x8x8 images."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.relu = nn.ReLU(inplace=True)
        self.layer1 = nn.Sequential(BasicBlock(8, 8), BasicBlock(8, 8))
        self.layer2 = nn.Sequential(BasicBlock(8, 16, stride=2))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer2(self.layer1(x))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class CausalSelfAttention(nn.Module):
    def __init__(self, d: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.n_head = n_head
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.attn_dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(c, dim=2)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(k.shape[-1])  # (B, nh, T, T)
        att = att.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), float("-inf")).softmax(-1)
        y = self.attn_dropout(att) @ v
        return self.c_proj(y.transpose(1, 2).reshape(b, t, c)), att


class Block(nn.Module):
    """A nanoGPT block that returns ``(x, attention weights)``, as Hugging Face blocks return tuples."""

    def __init__(self, d: int, n_head: int, dropout: float) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(d)
        self.attn = CausalSelfAttention(d, n_head, dropout)
        self.ln_2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        y, att = self.attn(self.ln_1(x))
        x = x + y
        return x + self.mlp(self.ln_2(x)), att


class GPT(nn.Module):
    """nanoGPT's layout (``transformer.h.0`` ...) over 12 tokens, width 8."""

    def __init__(self, vocab: int = 12, d: int = 8, n_layer: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(vocab, d),
                "wpe": nn.Embedding(16, d),
                "drop": nn.Dropout(dropout),
                "h": nn.ModuleList(Block(d, 2, dropout) for _ in range(n_layer)),
                "ln_f": nn.LayerNorm(d),
            }
        )
        self.lm_head = nn.Linear(d, vocab, bias=False)

    def forward(self, idx: Tensor) -> Tensor:
        tr = self.transformer
        x = tr["drop"](tr["wte"](idx) + tr["wpe"](torch.arange(idx.shape[1])))
        for block in tr["h"]:
            x, _ = block(x)
        return self.lm_head(tr["ln_f"](x))


class MLP(nn.Module):
    """2-D features: ``(B, 6) -> (B, 12) -> (B, 12) -> (B, 3)`` with one shared activation."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.fc2 = nn.Linear(12, 12)
        self.act = nn.GELU()
        self.head = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


def _resnet_input(b: int = 4) -> Tensor:
    return torch.randn(b, 3, 8, 8)


def _gpt_input(b: int = 3) -> Tensor:
    return torch.randint(0, 12, (b, 6))


def _mlp_input(b: int = 5) -> Tensor:
    return torch.randn(b, 6)


# (factory, input, targets, expected slot ids): one case per kind of user model.
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], Tensor], Any, list[str]]] = {
    "resnet": (ResNet, _resnet_input, r"layer\d\.\d", ["layer1_0", "layer1_1", "layer2_0"]),
    "gpt": (GPT, _gpt_input, ["h.0", "h.1"], ["transformer_h_0", "transformer_h_1"]),
    "mlp": (MLP, _mlp_input, ["fc1", "fc2"], ["fc1", "fc2"]),
}


def _build(case: str, seed: int = 0, **kw: Any) -> tuple[nn.Module, InjectedModel, Tensor]:
    """A freshly built model (fixed init), its injected twin, and an input batch."""
    factory, make_input, targets, _ = CASES[case]
    torch.manual_seed(seed)
    bare = factory()
    x = make_input()
    host = copy.deepcopy(bare)
    model = inject_slots(host, targets, example_input=x, gates=kw.pop("gates", FAST_GATES), **kw)
    assert isinstance(model, InjectedModel)
    return bare, model, x


def _loss(out: Tensor) -> Tensor:
    return out.float().square().mean()


def _features(slot: SeedSlot, b: int = 2) -> Tensor:
    """Random features that fit ``slot``."""
    if isinstance(slot, FlatSeedSlot):
        return torch.randn(b, slot.channels)
    return torch.randn(b, slot.channels, 4, 4) if slot.topology == "cnn" else torch.randn(b, 5, slot.channels)


def _grow(
    slot: SeedSlot,
    stage: SeedStage,
    blueprint: str | None = None,
    algorithm: AlphaAlgorithm = AlphaAlgorithm.ADD,
    **kw: Any,
) -> SeedSlot:
    """Walk ``slot`` to ``stage`` and perturb the seed so that it changes the function."""
    drive(slot, stage, blueprint, algorithm, x=_features(slot), **kw)
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.add_(0.3 * torch.randn_like(p))
    return slot


def _grads(module: nn.Module) -> dict[str, Tensor | None]:
    return {n: None if p.grad is None else p.grad.clone() for n, p in module.named_parameters()}


def _state_of(model: nn.Module) -> dict[str, Any]:
    """Everything a refused call must leave alone: tensors, attributes, hooks, modes, RNG."""
    return {
        "tensors": {k: v.clone() for k, v in model.state_dict().items()},
        "modules": {
            name: (
                {k: id(v) for k, v in vars(m).items()},
                dict(m._forward_hooks),
                dict(m._forward_pre_hooks),
                m.training,
            )
            for name, m in model.named_modules()
        },
        "rng": torch.get_rng_state(),
    }


def _assert_state(model: nn.Module, before: dict[str, Any]) -> None:
    after = _state_of(model)
    assert after["modules"] == before["modules"]
    assert after["tensors"].keys() == before["tensors"].keys()
    for k, v in before["tensors"].items():
        assert torch.equal(after["tensors"][k], v), k
    assert torch.equal(after["rng"], before["rng"])


# ----------------------------------------------------------------- selection and layouts
def test_public_api():
    assert esper.inject_slots is inject_slots
    assert "inject_slots" in esper.__all__


@pytest.mark.parametrize("case", list(CASES))
def test_slots_follow_targets_with_ids_topology_and_width(case):
    _, model, _ = _build(case)
    assert isinstance(model, MorphogeneticModel)
    assert list(model.seed_slots) == CASES[case][3]
    assert [s.slot_id for s in model.slots()] == CASES[case][3]
    expected = {
        "resnet": [("cnn", 8, False), ("cnn", 8, False), ("cnn", 16, False)],
        "gpt": [("transformer", 8, False)] * 2,
        "mlp": [("transformer", 12, True)] * 2,
    }[case]
    got = [(s.topology, s.channels, isinstance(s, FlatSeedSlot)) for s in model.slots()]
    assert got == expected
    assert model.topology == expected[0][0]
    assert all(s.stage == SeedStage.DORMANT and s.gates is FAST_GATES for s in model.slots())
    assert model.slot(CASES[case][3][0]).isolate_blend_input == (case == "resnet")


def test_regex_fullmatch_and_suffix_list_select_like_peft():
    host = ResNet()
    model = inject_slots(host, ["conv1"])  # Conv2d: no example_input needed
    assert model.targets == {
        "conv1": "conv1",
        "layer1_0_conv1": "layer1.0.conv1",
        "layer1_1_conv1": "layer1.1.conv1",
        "layer2_0_conv1": "layer2.0.conv1",
    }
    assert [(s.topology, s.channels) for s in model.slots()] == [("cnn", 8)] * 3 + [("cnn", 16)]
    # fullmatch: "layer1" alone, not layer1.0...; a suffix entry needs a whole name part
    assert list(inject_slots(ResNet(), "layer1", example_input=_resnet_input()).targets) == ["layer1"]
    assert list(inject_slots(ResNet(), ["downsample.1"]).targets) == ["layer2_0_downsample_1"]
    two = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 4))
    assert list(inject_slots(two, ".*", example_input=torch.randn(2, 4)).targets) == ["0", "1"]  # no root


def test_slots_are_in_execution_order_when_example_input_shows_it():
    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Linear(4, 4)
            self.early = nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.late(self.early(x))

    model = inject_slots(Reversed(), ["late", "early"], example_input=torch.randn(2, 4))
    assert list(model.targets) == ["early", "late"]
    assert [s.slot_id for s in model.slots()] == ["early", "late"]


def test_without_example_input_the_type_must_tell_the_layout():
    host = ResNet()
    model = inject_slots(host, ["layer2.0.bn2", "layer1.0.conv2"])
    assert {s.slot_id: s.channels for s in model.slots()} == {"layer2_0_bn2": 16, "layer1_0_conv2": 8}
    other = ResNet()
    before = _state_of(other)
    with pytest.raises(InjectionError, match=r"'layer1\.0'.*BasicBlock.*example_input"):
        inject_slots(other, ["layer1.0", "conv1"])
    _assert_state(other, before)


def test_config_records_targets_and_from_config_asks_for_a_fresh_model():
    _, model, _ = _build("mlp")
    config = model.config()
    assert config["injected"] is True
    assert config["host_class"].endswith("MLP")
    assert config["target_modules"] == ["fc1", "fc2"]
    assert config["slots"][0] == {
        "module": "fc1", "slot": "fc1", "topology": "transformer", "layout": "(B, C)", "channels": 12
    }
    with pytest.raises(CheckpointError, match=r"inject_slots.*\['fc1', 'fc2'\].*load_state_dict"):
        MorphogeneticModel.from_config(config)


def test_the_injected_model_keeps_every_attribute_of_a_built_in_one():
    """A guard for merges: state that MorphogeneticModel.__init__ gains must be set here too."""
    _, model, _ = _build("mlp")
    assert set(vars(tiny_model("cnn"))) <= set(vars(model))


# ----------------------------------------------------------------- the host is untouched
@pytest.mark.parametrize("case", list(CASES))
def test_host_state_dict_keys_unchanged_and_pretrained_checkpoint_loads_strictly(case):
    bare, model, _ = _build(case)
    assert model.host.state_dict().keys() == bare.state_dict().keys()
    assert all(k.startswith(("host.", "seed_slots.")) for k in model.state_dict())
    _grow(model.slots()[0], SeedStage.BLENDING)
    torch.manual_seed(5)
    pretrained = CASES[case][0]().state_dict()
    model.host.load_state_dict(pretrained, strict=True)
    for k, v in pretrained.items():
        assert torch.equal(model.host.state_dict()[k], v)
    seed_ids = {id(p) for p in model.get_seed_parameters()}
    assert seed_ids and not seed_ids & {id(p) for p in model.get_host_parameters()}
    assert len(model.get_host_parameters()) == len(list(bare.parameters()))
    assert model.active_seed_params == sum(p.numel() for p in model.get_seed_parameters())


@pytest.mark.parametrize("case", list(CASES))
def test_dormant_and_germinated_slots_are_bit_identical_in_outputs_and_grads(case):
    bare, model, x = _build(case)
    bare.train()
    model.train()  # BatchNorm in training mode: statistics must move identically too
    for step in range(2):
        if step == 1:
            for slot in model.slots():
                slot.germinate("noop" if slot.topology == "cnn" else "lora")
        y_bare, y = bare(x), model(x)
        assert torch.equal(y, y_bare)
        _loss(y_bare).backward()
        _loss(y).backward()
        for (name, g), g_bare in zip(_grads(model.host).items(), _grads(bare).values(), strict=True):
            assert g is not None and g_bare is not None and torch.equal(g, g_bare), name
        for k, v in bare.state_dict().items():
            assert torch.equal(model.host.state_dict()[k], v), k


@pytest.mark.parametrize("case", list(CASES))
def test_an_inactive_slot_is_not_called_and_adds_no_op(case):
    bare, model, x = _build(case)
    calls = []
    for slot in model.slots():
        slot.register_forward_pre_hook(lambda m, a: calls.append(m.slot_id))
    with torch.no_grad(), OpCounter() as bare_ops:
        bare(x)
    with torch.no_grad(), OpCounter() as ops:
        model(x)
    assert ops.names == bare_ops.names and calls == []
    _grow(model.slots()[0], SeedStage.TRAINING)
    model(x)
    assert calls == [model.slots()[0].slot_id]


def test_tuple_outputs_pass_their_first_element_through_the_slot_and_the_rest_untouched():
    bare, model, x = _build("gpt")
    block = model.host.transformer["h"][0]
    seen: list[Any] = []
    block.register_forward_hook(lambda m, a, out: seen.append(out))  # runs after the slot's hook
    inner: list[Any] = []
    block.attn.register_forward_hook(lambda m, a, out: inner.append(out[1]))
    slot = _grow(model.slot("transformer_h_0"), SeedStage.BLENDING, tempo=2)
    slot.step_epoch()
    with torch.no_grad():
        model(x)
    out = seen[0]
    assert type(out) is tuple and len(out) == 2
    assert out[1] is inner[0]  # the attention weights, untouched
    ln_in = bare.transformer["drop"](bare.transformer["wte"](x) + bare.transformer["wpe"](torch.arange(6)))
    with torch.no_grad():
        host_out, _ = bare.transformer["h"][0](ln_in)
        expected = torch.lerp(host_out, slot.seed(host_out), slot.alpha)
    torch.testing.assert_close(out[0], expected, rtol=0, atol=1e-6)


# ----------------------------------------------------------------- lifecycle on injected slots
def test_mlp_blend_is_the_lerp_at_the_slot_and_prune_restores_the_host():
    bare, model, x = _build("mlp")
    slot = _grow(model.slot("fc1"), SeedStage.BLENDING, "mlp_small", tempo=4)
    alphas = []
    for _ in range(4):
        slot.step_epoch()
        alphas.append(slot.alpha)
        with torch.no_grad():
            h = bare.fc1(x)
            mixed = torch.lerp(h, slot.seed(h.unsqueeze(1)).squeeze(1), slot.alpha)
            expected = bare.head(bare.act(bare.fc2(bare.act(mixed))))
            assert torch.equal(model(x), expected)
    assert alphas == [0.25, 0.5, 0.75, 1.0]
    assert not torch.equal(model(x), bare(x))
    assert model.prune_seed(slot="fc1")
    assert torch.equal(model(x), bare(x))


@pytest.mark.parametrize("case", list(CASES))
def test_prune_restores_the_host_function(case):
    bare, model, x = _build(case)
    bare.eval()
    model.eval()
    for slot in model.slots():
        _grow(slot, SeedStage.HOLDING, tempo=1)
    assert not torch.equal(model(x), bare(x))
    for slot in model.slots():
        assert model.prune_seed(slot=slot.slot_id, reason="test")
    assert torch.equal(model(x), bare(x)) and model.active_seed_params == 0


@pytest.mark.parametrize("case", list(CASES))
def test_training_stage_is_straight_through(case):
    bare, model, x = _build(case)
    slot = model.slots()[0]
    _grow(slot, SeedStage.TRAINING)
    y = model(x)
    y_bare = bare(x)
    assert torch.equal(y, y_bare)
    _loss(y).backward()
    _loss(y_bare).backward()
    for (name, g), g_bare in zip(_grads(model.host).items(), _grads(bare).values(), strict=True):
        assert g is not None and g_bare is not None and torch.equal(g, g_bare), name
    seed_grads = [p.grad for p in model.get_seed_parameters()]
    assert seed_grads and all(g is not None for g in seed_grads)
    assert any(g.abs().sum() > 0 for g in seed_grads if g is not None)


@pytest.mark.parametrize("case", list(CASES))
def test_full_lifecycle_through_the_gates_to_fossilized(case):
    bare, model, x = _build(case)
    slot = model.slots()[-1]
    model.germinate_seed("norm", slot=slot.slot_id, alpha_algorithm=AlphaAlgorithm.GATE, blend_tempo_epochs=2)
    assert slot.stage == SeedStage.GERMINATED and torch.equal(model(x), bare(x))
    assert slot.advance_stage().passed and slot.stage == SeedStage.TRAINING
    result = slot.advance_stage()
    assert not result.passed and slot.stage == SeedStage.TRAINING  # no epochs, no gradients yet
    _loss(model(x)).backward()  # a backward through the whole model reaches the seed
    slot.step_epoch()
    assert slot.advance_stage().passed and slot.stage == SeedStage.BLENDING
    with torch.no_grad():
        for p in slot.seed_parameters():
            p.add_(0.3 * torch.randn_like(p))
    slot.step_epoch()
    slot.step_epoch()
    assert slot.alpha == 1.0 and slot.advance_stage().passed and slot.stage == SeedStage.HOLDING
    assert not torch.equal(model(x), bare(x))
    slot.step_epoch()
    slot.record_contribution(0.5)
    assert slot.advance_stage().passed and slot.stage == SeedStage.FOSSILIZED
    assert model.count_fossilized_seeds() == 1
    _loss(model(x)).backward()  # fossilized: the seed joins the host's gradient flow
    assert all(p.grad is not None for p in slot.seed_parameters())


def test_flat_slot_refuses_blueprints_that_need_a_sequence_and_changes_nothing():
    _, model, _ = _build("mlp")
    slot = model.slot("fc2")
    names = slot.blueprint_names()
    assert "attention" not in names
    residual = [s.name for s in BlueprintRegistry.list_for_topology("transformer") if not s.is_width]
    assert set(names) == set(residual) - {"attention"}  # and no width: an injected model does not widen
    before = snapshot(slot)
    with pytest.raises(IncompatibleBlueprintError, match=r"'attention'.*'fc2'.*\(B, C\).*lora") as err:
        model.germinate_seed("attention", slot="fc2")
    assert isinstance(err.value, ValueError)
    assert_unchanged(slot, before)
    with pytest.raises(ShapeError, match=r"\(B, C\) with C=12, got shape \(5, 7\)"):
        _grow(slot, SeedStage.TRAINING)(torch.randn(5, 7))
    # a CNN slot is offered the CNN blueprints, a sequence slot every transformer one
    assert SeedSlot("s", 4, "transformer").blueprint_names() == residual


@pytest.mark.parametrize("algorithm", list(AlphaAlgorithm))
@pytest.mark.parametrize("blueprint", FlatSeedSlot("s", 12).blueprint_names())
def test_every_flat_blueprint_blends_2d_features(blueprint, algorithm):
    _, model, x = _build("mlp")
    slot = _grow(model.slot("fc1"), SeedStage.BLENDING, blueprint, algorithm, tempo=2)
    slot.step_epoch()
    y = model(x)
    assert y.shape == (5, 3) and torch.isfinite(y).all()
    _loss(y).backward()
    # per-sample alphas, as counterfactual evaluation passes them, broadcast over (B, C)
    with torch.no_grad(), slot.force_alpha(torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0]).view(5, 1, 1)):
        per_sample = model(x)
    with torch.no_grad(), slot.force_alpha(0.0):
        off = model(x)
    with torch.no_grad(), slot.force_alpha(1.0):
        on = model(x)
    torch.testing.assert_close(per_sample[0::2], off[0::2], rtol=0, atol=0)
    torch.testing.assert_close(per_sample[1::2], on[1::2], rtol=0, atol=0)


# ----------------------------------------------------------------- copies, checkpoints, compile, export
def test_deepcopy_is_independent_and_its_hooks_follow_the_copied_slots():
    bare, model, x = _build("resnet")
    twin = copy.deepcopy(model)
    for sid in model.seed_slots:
        target = twin.host.get_submodule(twin.targets[sid])
        hooks = list(target._forward_hooks.values())
        assert len(hooks) == 1 and hooks[0].slot is twin.slot(sid) and twin.slot(sid) is not model.slot(sid)
    _grow(twin.slot("layer1_1"), SeedStage.BLENDING)
    twin.slot("layer1_1").set_alpha(0.5)
    model.eval()
    twin.eval()
    bare.eval()
    assert model.slot("layer1_1").stage == SeedStage.DORMANT
    assert torch.equal(model(x), bare(x))
    assert not torch.equal(twin(x), bare(x))


def _train_steps(model: nn.Module, opt: torch.optim.Optimizer, x: Tensor, steps: int = 2) -> None:
    for _ in range(steps):
        opt.zero_grad(set_to_none=True)
        _loss(model(x)).backward()
        opt.step()


@pytest.mark.parametrize("case", list(CASES))
def test_checkpoint_into_a_freshly_injected_copy_continues_bit_identically(case):
    _, model, x = _build(case)
    first, last = model.slots()[0], model.slots()[-1]
    _grow(first, SeedStage.TRAINING, tempo=4)
    first.state.alpha_controller.alpha_curve = AlphaCurve.COSINE
    _grow(last, SeedStage.BLENDING, "norm", AlphaAlgorithm.GATE, tempo=5)
    last.step_epoch()
    _train_steps(model, torch.optim.SGD(model.parameters(), lr=0.05), x)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)

    _, fresh, _ = _build(case, seed=7)  # other initial weights: everything comes from the file
    fresh.load_state_dict(state)
    for a, b in zip(model.slots(), fresh.slots(), strict=True):
        assert (b.stage, b.alpha, b.state.blueprint_id) == (a.stage, a.alpha, a.state.blueprint_id)
    assert torch.equal(fresh(x), model(x))
    opt_a, opt_b = (torch.optim.SGD(m.parameters(), lr=0.05) for m in (model, fresh))
    _train_steps(model, opt_a, x)
    _train_steps(fresh, opt_b, x)
    for m in (model, fresh):
        for s in m.slots():
            s.step_epoch()
    assert [s.alpha for s in fresh.slots()] == [s.alpha for s in model.slots()]
    assert torch.equal(fresh(x), model(x))
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v) if isinstance(v, Tensor) else fresh.state_dict()[k] == v


@pytest.mark.slow
@pytest.mark.parametrize("case", ["resnet", "gpt"])
def test_compiled_injected_model_does_not_recompile_while_alpha_ramps(case):
    from torch._dynamo.testing import CompileCounter

    torch._dynamo.reset()
    try:
        bare, model, x = _build(case)
        model.eval()
        bare.eval()
        counter = CompileCounter()
        compiled = torch.compile(model, fullgraph=True, backend=counter)
        with torch.no_grad():
            assert torch.equal(compiled(x), bare(x))  # compiled while every slot is DORMANT
        slot = _grow(model.slots()[1], SeedStage.BLENDING, tempo=4)
        slot.step_epoch()  # alpha 0.25: the seed shows
        with torch.no_grad():
            assert torch.equal(compiled(x), model(x)) and not torch.equal(model(x), bare(x))
            grown = counter.frame_count
            assert grown <= 2  # the slot turning active is seen: one recompile
            while slot.alpha < 1.0:
                slot.step_epoch()
                assert torch.equal(compiled(x), model(x))  # the new alpha is seen, not baked in
            slot.set_alpha(0.25)
            assert torch.equal(compiled(x), model(x))
            assert counter.frame_count == grown  # no recompile as alpha ramps
            assert slot.advance_stage().passed
            assert torch.equal(compiled(x), model(x))
            assert counter.frame_count <= grown + 1  # a stage change may recompile once
    finally:
        torch._dynamo.reset()


@pytest.mark.slow
@pytest.mark.parametrize("case", ["resnet", "mlp"])
def test_export_with_a_fossilized_seed_equals_the_model_for_any_batch(case):
    _, model, x = _build(case)
    fossil, other = model.slots()[0], model.slots()[1]
    _grow(fossil, SeedStage.FOSSILIZED)
    _grow(other, SeedStage.HOLDING)
    other.set_alpha(0.0)  # a HOLDING seed is baked at its alpha: switched off here
    baked = bake_final(model)
    assert baked.slot(other.slot_id).seed is not None and baked.slot(fossil.slot_id).seed is not None
    dynamic = torch.export.ShapesCollection()  # keyed by tensor: forward is (*args, **kwargs)
    dynamic[x] = {0: torch.export.Dim("batch", min=1, max=64)}
    with torch.no_grad():
        program = torch.export.export(baked, (x,), dynamic_shapes=dynamic.dynamic_shapes(baked, (x,)))
        program = program.module()
        for b in (2, 7):
            xb = CASES[case][1](b) if case == "mlp" else _resnet_input(b)
            torch.testing.assert_close(program(xb), baked(xb), rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(program(x), model.eval()(x), rtol=1e-5, atol=1e-6)
        assert not torch.equal(program(x), bake_final(_build(case)[1])(x))  # the seed is in it


# ----------------------------------------------------------------- bad input
class DictEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        return {"h": self.proj(x)}


class DictNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.encoder = DictEncoder()
        self.head = nn.Linear(4, 2)
        self.unused = nn.Linear(4, 4)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.encoder(x)["h"])


BAD_TARGETS = [
    ("nothing", ["blocks.0"], r"'blocks\.0' matches no module of DictNet.*encoder\.proj"),
    ("typo", ["encoder.prj"], r"DictNet\. Did you mean 'encoder\.proj'\? Modules of DictNet: \['encoder',"),
    ("one of two", ["head", "heads"], r"'heads' matches no module"),
    ("regex", r"layer\d", r"'layer\\\\d' matches no module"),
    ("root regex", "", r"matches only the root module"),
    ("root entry", [""], r"matches only the root module"),
    ("dict output", ["encoder"], r"'encoder' of DictNet returns a dict.*fits: \['encoder\.proj'\]"),
    ("not called", ["unused"], r"'unused' .*was not called"),
    ("bad regex", "enc(", r"not a regular expression"),
    ("empty list", [], r"non-empty list"),
    ("not a name", [3], r"non-empty list"),
]


@pytest.mark.parametrize(("targets", "match"), [b[1:] for b in BAD_TARGETS], ids=[b[0] for b in BAD_TARGETS])
def test_bad_targets_name_the_target_list_candidates_and_change_nothing(targets, match):
    model = DictNet().train()
    model.encoder.eval()  # mixed modes must come back as they were
    x = torch.randn(2, 4)
    before = _state_of(model)
    with pytest.raises(InjectionError, match=match) as err:
        inject_slots(model, targets, example_input=x)
    assert isinstance(err.value, ValueError)
    _assert_state(model, before)


def test_outputs_of_the_wrong_rank_or_dtype_and_shared_modules_are_refused():
    class Odd(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.flat = nn.Flatten(0)  # (B, C) -> (B*C,)
            self.ids = nn.Identity()
            self.act = nn.ReLU()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: Tensor) -> Tensor:
            return self.flat(self.act(self.fc(self.act(x)))) + self.ids(x.long()).flatten()

    model, x = Odd(), torch.randn(2, 4)
    before = _state_of(model)
    with pytest.raises(InjectionError) as err:
        inject_slots(model, ["flat", "ids", "act"], example_input=x)
    message = str(err.value)  # every problem at once
    assert "'flat' of Odd returns a 1-D tensor of shape (8,)" in message
    assert "'ids' of Odd returns a torch.int64 tensor" in message
    assert "'act' of Odd was called 2 times" in message
    assert "['fc']" in message
    _assert_state(model, before)


def test_example_input_leaves_no_trace_and_a_failing_one_is_reported():
    model = GPT(dropout=0.2).train()
    model.transformer["h"][1].eval()
    resnet = ResNet().train()
    x, bad = _resnet_input(1), torch.randn(2, 3, 3)
    before, before_resnet = _state_of(model), _state_of(resnet)
    injected = inject_slots(resnet, ["layer1.0", "fc"], example_input=x)  # B=1 works: eval mode
    assert [s.channels for s in injected.slots()] == [8, 5]
    for k, v in before_resnet["tensors"].items():  # BatchNorm statistics untouched
        assert torch.equal(resnet.state_dict()[k], v), k
    assert all(m.training for m in resnet.modules()) and torch.equal(torch.get_rng_state(), before["rng"])
    with pytest.raises(InjectionError, match=r"example_input did not run through GPT: .*Pass a tensor"):
        inject_slots(model, ["h.0"], example_input=bad)
    _assert_state(model, before)

    class Noisy(nn.Module):  # draws random numbers in any mode
        def forward(self, x: Tensor) -> Tensor:
            return x + 0.01 * torch.rand_like(x)

    noisy = nn.Sequential(nn.Linear(4, 4), Noisy())
    x = torch.randn(2, 4)
    rng = torch.get_rng_state()
    assert inject_slots(noisy, ["0", "1"], example_input=x).slot("1").channels == 4
    assert torch.equal(torch.get_rng_state(), rng)


def test_clashing_slot_ids_and_second_injection_are_refused():
    class Clash(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Module()
            self.a.b_c = nn.Conv2d(1, 2, 1)
            self.a_b = nn.Module()
            self.a_b.c = nn.Conv2d(2, 2, 1)

    model = Clash()
    before = _state_of(model)
    with pytest.raises(InjectionError, match=r"'a\.b_c' and 'a_b\.c' both give slot id 'a_b_c'"):
        inject_slots(model, ["b_c", "c"])
    _assert_state(model, before)
    host = ResNet()
    injected = inject_slots(host, ["conv1"])
    before = _state_of(host)
    with pytest.raises(InjectionError, match="inject_slots was called on this model before"):
        inject_slots(host, ["conv2"])
    with pytest.raises(InjectionError, match="already has slots"):
        inject_slots(injected, ["conv2"])
    with pytest.raises(InjectionError, match=r"plain nn\.Module"):
        inject_slots("resnet", ["conv2"])  # type: ignore[arg-type]
    _assert_state(host, before)


def test_a_slot_id_that_shadows_a_module_dict_attribute_is_refused_cleanly():
    class Named(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.keys = nn.Conv2d(1, 2, 1)

    model = Named()
    before = _state_of(model)
    with pytest.raises(InjectionError, match="not usable as a module name"):
        inject_slots(model, ["keys"])
    _assert_state(model, before)


def test_a_corrupted_flat_slot_checkpoint_is_refused():
    _, model, _ = _build("mlp")
    _grow(model.slot("fc1"), SeedStage.TRAINING, "mlp_small")
    state = model.state_dict()
    state["seed_slots.fc1._extra_state"]["blueprint_id"] = "attention"
    _, fresh, _ = _build("mlp")
    with pytest.raises(CheckpointError, match=r"'fc1'.*'attention'.*\(B, C\)"):
        fresh.load_state_dict(state)
    assert fresh.slot("fc1").stage == SeedStage.DORMANT and fresh.slot("fc1").seed is None
