"""One hierarchy for user-facing errors: each message says what was given, what was expected, the fix."""

from __future__ import annotations


class EsperError(Exception):
    """Base class of every error Esper raises for user input."""


class ConfigError(EsperError, ValueError):
    """A configuration value (or several) is invalid."""


class UnknownSlotError(EsperError, ValueError):
    """A slot id that the model does not have."""


class UnknownBlueprintError(EsperError, ValueError):
    """A blueprint name that is not registered for the topology."""


class IncompatibleBlueprintError(EsperError, ValueError):
    """A registered blueprint that a slot's features cannot hold (attention on 2-D features)."""


class InjectionError(EsperError, ValueError):
    """``inject_slots`` cannot use the given targets: no match, the root, or an unusable output."""


class ShapeError(EsperError, ValueError):
    """A tensor whose shape does not match what the model expects."""


class IllegalTransitionError(EsperError, RuntimeError):
    """A lifecycle call that the slot's current stage does not allow."""


class CheckpointError(EsperError, ValueError):
    """A checkpoint that is missing, corrupted, or does not fit the model."""


class WidthGrowthError(EsperError, ValueError):
    """A width growth the host cannot take: no reader, an unsupported layer, or too wide."""


class BackendError(EsperError, RuntimeError):
    """A distributed backend that is not installed, does not answer, or does not match the driver."""


def did_you_mean(given: str, known: list[str] | tuple[str, ...]) -> str:
    """Return a ' Did you mean X?' hint for the closest known name, or ''."""
    import difflib

    close = difflib.get_close_matches(given, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def plural(count: int, noun: str) -> str:
    """``"1 epoch"``, ``"3 epochs"``: a count with its noun in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
