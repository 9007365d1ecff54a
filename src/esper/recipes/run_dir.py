"""The run folder: written only by its own kind of run, by one process at a time.

``RunDir.open(path, kind=..., resume=..., config=..., resumable=...)`` is a context manager
held for the whole run. It

- refuses a fresh run in a folder that holds any Esper artifact, and a resume of a folder
  that holds another kind of run (the kind is recorded in ``esper-run.json``);
- takes an exclusive ``fcntl.flock`` on ``.esper-run.lock``: a second writer is refused with
  the holder's PID; the kernel drops the lock when its holder dies, so a killed run never
  blocks its resume;
- on resume, refuses every config change outside ``resumable``, naming old and new values;
- on resume, removes the ``*.tmp`` files a kill during an atomic write leaves behind, and
  restores the intra-op thread count the run was recorded with (results depend on it).

Every refusal happens before anything is written, so a refused call changes nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Literal

import torch

from esper.errors import ConfigError
from esper.nissa.io import atomic_write_text

__all__ = ["ARTIFACTS", "KINDS", "LOCK_NAME", "MARKER_NAME", "RunDir", "RunDirLockedError"]

RunKind = Literal["train", "ppo", "eval"]
KINDS: tuple[str, ...] = ("train", "ppo", "eval")
MARKER_NAME = "esper-run.json"
LOCK_NAME = ".esper-run.lock"
MARKER_FORMAT = "esper-run-v1"
SUMMARY_NAME = "summary.json"
ARTIFACTS: tuple[str, ...] = (
    MARKER_NAME,
    "config.json",
    "events.jsonl",
    "metrics.csv",
    "checkpoint.pt",
    SUMMARY_NAME,
    "report.png",
    "tensorboard",
    "ppo_config.json",
    "ppo_checkpoint.pt",
    "policy.pt",
    "eval.json",
    "model.pt2",
    "model.json",
)
"""Files (and folders) that Esper writes into a run folder."""

_LEGACY_KIND = {"checkpoint.pt": "train", "ppo_checkpoint.pt": "ppo", "eval.json": "eval"}
"""For folders written before the marker existed: the kind their main artifact tells."""

_COMMAND = {"train": "esper train <controller>", "ppo": "esper train ppo", "eval": "esper eval"}


class RunDirLockedError(ConfigError):
    """Another process is writing to the run folder."""


class RunDir:
    """An open, locked run folder (see the module docstring); use :meth:`open`.

    Attributes:
        path: the folder.
        kind: ``"train"``, ``"ppo"`` or ``"eval"``.
        resume: whether this run continues one already in the folder.
    """

    def __init__(self, path: Path, kind: RunKind, resume: bool, lock_fd: int, created: bool) -> None:
        self.path, self.kind, self.resume = path, kind, resume
        self._lock_fd: int | None = lock_fd
        self._created = created

    # ----------------------------------------------------------------- opening
    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        kind: RunKind,
        resume: bool = False,
        config: Mapping[str, Any] | None = None,
        resumable: frozenset[str] = frozenset(),
    ) -> RunDir:
        """Check, lock and mark the run folder ``path`` for a run of ``kind``.

        Args:
            path: the run folder (created when missing).
            kind: what kind of run writes it.
            resume: continue the run already there (of the same kind).
            config: the run's settings as primitives (recorded; compared on resume).
            resumable: the settings a resume may change.

        Raises:
            ConfigError: the folder holds another run (or, on resume, another kind of run), or
                a resume changes a setting outside ``resumable``.
            RunDirLockedError: another process holds the folder.
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        folder = Path(path)
        settings = json.loads(json.dumps(dict(config or {})))  # as the marker will read back
        if (folder / LOCK_NAME).exists():  # a busy folder says so first, and changes nothing
            os.close(_lock(folder, create=False))
        _check(folder, kind, resume, settings, resumable)  # before writing anything
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        lock_fd = _lock(folder)
        run = cls(folder, kind, resume, lock_fd, created)
        try:
            _check(folder, kind, resume, settings, resumable)  # again, now that no one else writes
            threads = _recorded_threads(folder) if resume else None
            if resume:
                run._remove_tmp_files()
                _use_threads(folder, threads)
            previous = _read_marker(folder) if resume else None
            run._write_marker(settings, previous.get("resolved") if previous else None)
        except BaseException:
            run._close(failed=True)
            raise
        return run

    @staticmethod
    def is_summarised(path: str | os.PathLike[str]) -> bool:
        """Whether the run in ``path`` wrote its summary (a run killed before that can be finished)."""
        return (Path(path) / SUMMARY_NAME).is_file()

    # ----------------------------------------------------------------- while open
    def _remove_tmp_files(self) -> None:
        for leftover in self.path.glob("*.tmp"):
            if leftover.is_file():
                leftover.unlink()

    def record_resolved(self, resolved: Mapping[str, Any]) -> None:
        """Also record the settings with every default filled in (a resume may name either)."""
        marker = _read_marker(self.path) or {}
        self._write_marker(marker.get("config", {}), json.loads(json.dumps(dict(resolved))))

    def _write_marker(self, settings: dict[str, Any], resolved: dict[str, Any] | None) -> None:
        from esper import __version__

        marker: dict[str, Any] = {
            "format": MARKER_FORMAT,
            "kind": self.kind,
            "esper_version": __version__,
            "torch_threads": torch.get_num_threads(),
            "config": settings,
        }
        if resolved is not None:
            marker["resolved"] = resolved
        atomic_write_text(self.path / MARKER_NAME, json.dumps(marker, indent=2) + "\n")

    # ----------------------------------------------------------------- closing
    def close(self) -> None:
        """Release the lock (idempotent). The lock file stays: deleting it would race a new writer."""
        self._close(failed=False)

    def _close(self, failed: bool) -> None:
        if self._lock_fd is None:
            return
        if failed:
            self._remove_if_unused()
        os.close(self._lock_fd)  # releases the flock
        self._lock_fd = None

    def _remove_if_unused(self) -> None:
        """A run that failed before writing anything else leaves the folder as it found it."""
        ours = {MARKER_NAME, LOCK_NAME}
        if {p.name for p in self.path.iterdir()} <= ours:
            for name in ours:
                with contextlib.suppress(FileNotFoundError):
                    (self.path / name).unlink()
            if self._created:
                with contextlib.suppress(OSError):
                    self.path.rmdir()

    def __enter__(self) -> RunDir:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._close(failed=exc_type is not None)


# ----------------------------------------------------------------------------- checks
def _read_marker(folder: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads((folder / MARKER_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"{str(folder / MARKER_NAME)!r} is unreadable ({exc}); it marks an Esper run folder"
        ) from exc
    if not isinstance(marker, dict) or marker.get("kind") not in KINDS:
        raise ConfigError(f"{str(folder / MARKER_NAME)!r} is not an Esper run marker (no valid 'kind')")
    return marker


def _recorded_kind(folder: Path, marker: dict[str, Any] | None) -> str | None:
    if marker is not None:
        return str(marker["kind"])
    found = [kind for name, kind in _LEGACY_KIND.items() if (folder / name).exists()]
    return found[0] if found else None


def _check(
    folder: Path, kind: str, resume: bool, settings: dict[str, Any], resumable: frozenset[str]
) -> None:
    """Refuse a fresh run into a used folder, a resume of another kind, or a forbidden change."""
    if not folder.is_dir():
        if folder.exists():
            raise ConfigError(f"run folder {str(folder)!r} is a file; choose a folder for --out")
        return
    present = [name for name in ARTIFACTS if (folder / name).exists()]
    marker = _read_marker(folder)
    recorded = _recorded_kind(folder, marker)
    if not resume:
        if present:
            what = f"a {recorded!r} run" if recorded else "Esper files"
            resumable_here = kind != "eval" and recorded in (kind, None)
            hint = "continue it with --resume or " if resumable_here else ""
            raise ConfigError(
                f"{str(folder)!r} already holds a run ({what}: {', '.join(present)}); {hint}"
                f"choose another --out"
            )
        return
    if recorded is not None and recorded != kind:
        raise ConfigError(
            f"{str(folder)!r} holds a {recorded!r} run, not a {kind!r} run; continue it with "
            f"'{_COMMAND[recorded]}' or choose another folder"
        )
    if marker is not None and isinstance(marker.get("config"), dict):
        resolved = marker.get("resolved")
        resolved = resolved if isinstance(resolved, dict) else {}
        _check_unchanged(folder, marker["config"], resolved, settings, resumable)


def _check_unchanged(
    folder: Path,
    recorded: dict[str, Any],
    resolved: dict[str, Any],
    requested: dict[str, Any],
    resumable: frozenset[str],
) -> None:
    """A setting is unchanged if it equals the recorded one as given or as resolved (``lr=None``
    then, ``lr=0.003`` now: the task's default that None meant)."""
    changed = [
        f"{key}: saved {recorded.get(key)!r}, given {value!r}"
        for key, value in requested.items()
        if key not in resumable and value not in (recorded.get(key), resolved.get(key, recorded.get(key)))
    ]
    if changed:
        allowed = ", ".join(sorted(resumable)) or "nothing"
        raise ConfigError(
            f"cannot resume {str(folder)!r} with different settings than it was run with:\n  - "
            + "\n  - ".join(changed)
            + f"\n(a resume may change only: {allowed}; start a new run with --out for the rest)"
        )


# ----------------------------------------------------------------------------- lock and threads
def _lock(folder: Path, create: bool = True) -> int:
    """Take the folder's exclusive lock (non-blocking); ``create``: also record our PID in it."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
        os.close(fd)
        raise RunDirLockedError(
            f"{str(folder)!r} is being written by another Esper process (PID {holder}); wait for it "
            f"to finish (or stop it), or choose another --out"
        ) from None
    except BaseException:
        os.close(fd)
        raise
    if create:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode("ascii"), 0)
    return fd


def _recorded_threads(folder: Path) -> int | None:
    marker = _read_marker(folder)
    threads = marker.get("torch_threads") if marker else None
    return threads if isinstance(threads, int) and threads >= 1 else None


def _use_threads(folder: Path, recorded: int | None) -> None:
    """Continue with the thread count the run was recorded with: metrics depend on it."""
    current = torch.get_num_threads()
    if recorded is None or recorded == current:
        return
    warnings.warn(
        f"{str(folder)!r} was run with {recorded} intra-op threads and this process has {current}; "
        f"the resume uses {recorded} so that it reaches the same metrics",
        RuntimeWarning,
        stacklevel=3,
    )
    torch.set_num_threads(recorded)
