"""Register ``esper/Morphogenesis-v0`` with Gymnasium without importing gymnasium up front.

Gymnasium 1.x has no plugin entry points, so a package registers its environments when it is
imported. Importing gymnasium (and numpy) from ``import esper`` would cost ~0.2 s that the CLI
and most scripts never need; instead a one-shot import hook registers the environment right
after gymnasium itself is imported, whichever of the two is imported first.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence

__all__ = ["ENV_ENTRY_POINT", "ENV_ID", "register_env", "register_when_gymnasium_loads"]

ENV_ID = "esper/Morphogenesis-v0"
ENV_ENTRY_POINT = "esper.simic.env:MorphogenesisEnv"


def register_env() -> None:
    """Register :data:`ENV_ID` with gymnasium (a no-op when it is already registered)."""
    import gymnasium

    if ENV_ID not in gymnasium.registry:
        gymnasium.register(id=ENV_ID, entry_point=ENV_ENTRY_POINT)


class _RegisterAfterExec(importlib.abc.Loader):
    """Gymnasium's own loader, then :func:`register_env`; the module keeps the original loader."""

    def __init__(self, loader: importlib.abc.Loader) -> None:
        self._loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._loader.exec_module(module)
        module.__loader__ = self._loader  # no trace of the hook (tracebacks read source through it)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        register_env()


class _GymnasiumHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: wraps the loader of the first ``import gymnasium``, then leaves."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: types.ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "gymnasium":
            return None
        sys.meta_path.remove(self)  # one shot; also keeps the lookup below from finding us
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _RegisterAfterExec(spec.loader)
        return spec


def register_when_gymnasium_loads() -> None:
    """Register the environment now if gymnasium is loaded, else right after it is imported."""
    if "gymnasium" in sys.modules:
        register_env()
    elif not any(isinstance(finder, _GymnasiumHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _GymnasiumHook())
