"""What a newcomer meets first: a fast ``import esper``, the Gymnasium id, the README's imports.

What ``import esper`` loads is only visible in a fresh interpreter: those checks run in a
subprocess that stops short of torch; the rest runs here.
"""

from __future__ import annotations

import subprocess
import sys

import gymnasium as gym
import pytest

import esper

HEAVY = ("torch", "gymnasium", "matplotlib", "numpy", "sklearn")


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(
    "imports",
    ["import esper\nimport gymnasium as gym", "import gymnasium as gym\nimport esper"],
    ids=["esper-first", "gymnasium-first"],
)
def test_import_esper_is_light_and_registers_the_environment_either_way(imports):
    code = imports + (
        "\nimport sys\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'sklearn') if m in sys.modules]\n"
        "print(heavy, gym.spec('esper/Morphogenesis-v0').entry_point)\n"
        "print(type(gym.__spec__.loader).__module__)"  # the hook leaves gymnasium's own loader
    )
    registered, loader_module = _run(code).splitlines()
    assert registered == "[] esper.simic.env:MorphogenesisEnv"
    assert not loader_module.startswith("esper")


def test_import_esper_alone_loads_nothing_heavy():
    assert _run(f"import sys, esper; print([m for m in {HEAVY!r} if m in sys.modules])") == "[]"


def test_gym_make_builds_the_environment():
    env = gym.make("esper/Morphogenesis-v0", episode_length=2)
    assert type(env.unwrapped).__name__ == "MorphogenesisEnv"


def test_public_names_load_on_first_use():
    from esper import MorphogeneticModel, QualityGates

    assert esper.CNNHost.__name__ == "CNNHost" and MorphogeneticModel.__name__ == "MorphogeneticModel"
    assert QualityGates().embargo_epochs == 5 and callable(esper.load_grown)
    assert set(esper.__all__) <= set(dir(esper))
    with pytest.raises(AttributeError, match="module 'esper' has no attribute 'nope'"):
        _ = esper.nope


def test_the_environment_class_is_where_the_readme_says():
    from esper.simic import ENV_ID, MorphogenesisEnv

    assert ENV_ID == "esper/Morphogenesis-v0" and gym.spec(ENV_ID).entry_point.endswith(":MorphogenesisEnv")
    assert MorphogenesisEnv.__module__ == "esper.simic.env"
