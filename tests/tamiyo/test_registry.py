"""The controller registry: every run-config controller is registered, built by name, listed."""

from __future__ import annotations

import pytest
import torch
from obs_kit import make_obs

from esper.errors import ConfigError
from esper.leyline.observation import Policy
from esper.tamiyo import ControllerRegistry, HeuristicPolicy, RandomPolicy, StaticPolicy, make_controller
from esper.tamiyo.features import observation_features
from esper.tamiyo.learned import LearnedPolicy
from esper.tamiyo.masks import ActionLayout
from esper.tamiyo.policy_net import FactoredPolicy, save_policy
from esper.tolaria.config import CONTROLLERS, RunConfig

EXPECTED = {
    "heuristic": HeuristicPolicy,
    "static": StaticPolicy,
    "random": RandomPolicy,
    "policy": LearnedPolicy,
}


def test_every_controller_a_run_config_accepts_is_registered():
    assert ControllerRegistry.names() == sorted(CONTROLLERS)
    assert all(spec.description for spec in ControllerRegistry.list_controllers())


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory):
    obs = make_obs()
    torch.manual_seed(0)
    net = FactoredPolicy(observation_features(obs).shape[0], ActionLayout.from_observation(obs).head_sizes)
    path = tmp_path_factory.mktemp("policy") / "policy.pt"
    save_policy(net, path)
    return str(path)


@pytest.mark.parametrize("name", sorted(CONTROLLERS))
def test_make_controller_builds_each_registered_controller(name, policy_file):
    config = RunConfig(controller=name, policy=policy_file if name == "policy" else None)
    controller = make_controller(config)
    assert isinstance(controller, Policy) and type(controller) is EXPECTED[name]
    assert type(ControllerRegistry.create(name, config)) is EXPECTED[name]


def test_unknown_name_lists_the_known_ones_and_suggests_the_closest():
    hint = r"unknown controller 'heuristc'.*'random'.*Did you mean 'heuristic'"
    with pytest.raises(ConfigError, match=hint):
        ControllerRegistry.get("heuristc")


def test_a_duplicate_name_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        ControllerRegistry.register("static")(lambda config: StaticPolicy())
    assert type(make_controller(RunConfig(controller="static"))) is StaticPolicy
