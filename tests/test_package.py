"""What a newcomer meets first: a fast ``import esper``, the Gymnasium id, the README's imports."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_esper_loads_neither_torch_nor_gymnasium_nor_matplotlib():
    heavy = ("torch", "gymnasium", "matplotlib", "numpy", "sklearn")
    loaded = _run(f"import sys, esper; print([m for m in {heavy!r} if m in sys.modules])")
    assert loaded == "[]"


def test_public_names_load_on_first_use():
    names = _run("import esper; print(esper.CNNHost.__name__, esper.load_grown.__name__)")
    assert names == "CNNHost load_grown"
    gates = _run("from esper import MorphogeneticModel, QualityGates; print(QualityGates().embargo_epochs)")
    assert gates == "5"
    missing = _run("import esper\ntry:\n    esper.nope\nexcept AttributeError as exc:\n    print(exc)")
    assert missing == "module 'esper' has no attribute 'nope'"


@pytest.mark.parametrize(
    "imports",
    ["import esper\nimport gymnasium as gym", "import gymnasium as gym\nimport esper"],
    ids=["esper-first", "gymnasium-first"],
)
def test_gym_make_finds_the_environment_after_import_esper(imports):
    code = imports + (
        "\nenv = gym.make('esper/Morphogenesis-v0', episode_length=2)\n"
        "print(type(env.unwrapped).__name__, gym.spec('esper/Morphogenesis-v0').entry_point)\n"
        "print(type(gym.__spec__.loader).__module__)"  # the hook leaves gymnasium's own loader
    )
    env_name, loader_module = _run(code).splitlines()
    assert env_name == "MorphogenesisEnv esper.simic.env:MorphogenesisEnv"
    assert not loader_module.startswith("esper")


def test_the_environment_class_is_where_the_readme_says():
    found = _run("from esper.simic import MorphogenesisEnv, ENV_ID; print(MorphogenesisEnv.__name__, ENV_ID)")
    assert found == "MorphogenesisEnv esper/Morphogenesis-v0"
