"""Property test: random width growth, residual seeds, prunes and fossilizations over every slot.

Whatever the sequence, the model runs, its host matches the config it reports (shapes and
parameter counts), the optimizer follows every replaced parameter, fossilizing keeps the
function, a refused call changes nothing, and a checkpoint reloads into a fresh model exactly.
"""

from __future__ import annotations

import io

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from esper.errors import EsperError
from esper.kasmina.host import CNNHost, MorphogeneticModel, build_host
from esper.kasmina.optim_remap import carry_optimizer_state
from esper.kasmina.width import WidthSeed
from esper.leyline.stages import SeedStage

from .helpers import FAST_GATES, assert_model_unchanged, model_snapshot

SLOTS = ["r0c0", "r0c1", "r0c2"]
BLUEPRINTS = ["widen", "widen_half", "conv_small", "noop"]


def _host() -> CNNHost:
    return CNNHost(num_classes=3, n_blocks=3, base_channels=2, pool_layers=2)


class WidthLifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.model = MorphogeneticModel(_host(), gates=FAST_GATES)
        self.opt = torch.optim.AdamW(self.model.get_host_parameters(), lr=1e-2)
        self.x = torch.randn(4, 3, 8, 8, generator=torch.Generator().manual_seed(3))

    def _eval(self) -> torch.Tensor:
        self.model.eval()
        with torch.no_grad():
            out = self.model(self.x)
        self.model.train()
        return out

    def _call(self, fn):
        before = model_snapshot(self.model)
        try:
            result = fn()
        except (ValueError, RuntimeError) as exc:
            assert isinstance(exc, EsperError), exc
            assert_model_unchanged(self.model, before)
            return None
        carry_optimizer_state(self.opt, self.model.take_param_remaps())
        return result

    @rule(sid=st.sampled_from(SLOTS), blueprint=st.sampled_from(BLUEPRINTS))
    def germinate(self, sid, blueprint):
        self._call(lambda: self.model.germinate_seed(blueprint, slot=sid))

    @rule(
        sid=st.sampled_from(SLOTS),
        blueprint=st.sampled_from(["widen", "widen_half", "widen", "conv_small"]),
        steps=st.integers(2, 6),
    )
    def grow(self, sid, blueprint, steps):
        """What a controller does: germinate (fast tempo), then train and advance, epoch by epoch."""
        self._call(lambda: self.model.germinate_seed(blueprint, slot=sid, blend_tempo_epochs=1))
        for _ in range(steps):
            self.train_step()
            self.advance(sid)

    @rule()
    def train_step(self):
        self.opt.zero_grad()
        self.model(self.x).square().mean().backward()
        self.opt.step()
        with torch.no_grad():  # the seeds learn too (they have no optimizer here)
            for p in self.model.get_seed_parameters():
                if p.grad is not None:
                    p.sub_(0.05 * p.grad)
        for slot in self.model.slots():
            slot.step_epoch()

    @rule(sid=st.sampled_from(SLOTS))
    def advance(self, sid):
        slot = self.model.slot(sid)
        if slot.stage == SeedStage.HOLDING:
            slot.record_contribution(1.0)
        width = isinstance(slot.seed, WidthSeed) and slot.stage == SeedStage.HOLDING
        before = self._eval()
        result = self._call(slot.advance_stage)
        if width and result is not None and result.passed:
            assert slot.seed is None and slot.stage == SeedStage.FOSSILIZED
            torch.testing.assert_close(self._eval(), before, rtol=1e-4, atol=1e-5)

    @rule(sid=st.sampled_from(SLOTS), alpha=st.floats(0.0, 1.0))
    def set_alpha(self, sid, alpha):
        slot = self.model.slot(sid)
        if slot.stage in (SeedStage.BLENDING, SeedStage.HOLDING):
            slot.set_alpha(alpha)

    @rule(sid=st.sampled_from(SLOTS))
    def prune(self, sid):
        self._call(lambda: self.model.prune_seed(slot=sid))

    @rule(from_config=st.booleans())
    def checkpoint(self, from_config):
        buffer = io.BytesIO()
        torch.save(self.model.state_dict(), buffer)
        buffer.seek(0)
        state = torch.load(buffer, weights_only=True)
        if from_config:
            fresh = MorphogeneticModel.from_config(self.model.config())
        else:
            fresh = MorphogeneticModel(_host(), gates=FAST_GATES)
        fresh.load_state_dict(state)
        fresh.eval()
        with torch.no_grad():
            assert torch.equal(fresh(self.x), self._eval())

    @invariant()
    def shapes_match_the_config(self):
        host = self.model.host
        rebuilt = build_host(type(host).__name__, host.config())
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in host.state_dict().items()
        }
        assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in host.parameters())
        assert {s.slot_id: s.channels for s in self.model.slots()} == host.segment_channels
        held = [id(p) for g in self.opt.param_groups for p in g["params"]]
        assert held == [id(p) for p in host.parameters()]
        assert self.model._width.live == any(s.widening for s in self.model.slots())
        out = self._eval()
        assert out.shape == (4, 3) and bool(out.isfinite().all())


TestWidthLifecycle = WidthLifecycle.TestCase
TestWidthLifecycle.settings = settings(
    max_examples=30, stateful_step_count=25, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
