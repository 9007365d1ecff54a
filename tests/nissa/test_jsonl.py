"""JSONL sink and reader: flushed per line, resumable, tolerant of a torn last line only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from esper.leyline.events import AlphaChanged, RunFinished, SeedPruned
from esper.nissa import EventLogError, JsonlSink, read_events


def _alpha(epoch: int) -> AlphaChanged:
    return AlphaChanged(epoch=epoch, slot="r0c1", seed_id="s1", alpha=epoch / 10)


def test_each_event_is_on_disk_while_the_sink_is_open(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path)
    for epoch in range(3):
        sink.emit(_alpha(epoch))
        lines = path.read_text().splitlines()  # a second reader, sink still open
        assert len(lines) == epoch + 1
        assert json.loads(lines[-1])["epoch"] == epoch
    sink.close()
    sink.close()  # idempotent
    assert read_events(path) == [_alpha(0), _alpha(1), _alpha(2)]


def test_torn_last_line_is_skipped(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(_alpha(1))
        sink.emit(_alpha(2))
    full = path.read_bytes()
    path.write_bytes(full + full.splitlines(keepends=True)[0][:17])  # killed mid-write
    assert read_events(path) == [_alpha(1), _alpha(2)]


def test_complete_last_line_without_newline_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_text(json.dumps(_alpha(1).to_dict()))
    assert read_events(path) == [_alpha(1)]


@pytest.mark.parametrize(
    "bad", [b'{"event": "alpha_changed", "ep\n', b"not json\n", b'{"event": "nope", "epoch": 1}\n']
)
def test_corruption_before_the_end_names_the_line(tmp_path: Path, bad: bytes) -> None:
    path = tmp_path / "events.jsonl"
    good = (json.dumps(_alpha(1).to_dict()) + "\n").encode()
    path.write_bytes(good + bad + good)
    with pytest.raises(EventLogError, match=r"events\.jsonl:2: not a valid event"):
        read_events(path)


def test_corrupt_last_line_with_newline_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes((json.dumps(_alpha(1).to_dict()) + "\n{oops\n").encode())
    with pytest.raises(EventLogError, match=":2:"):
        read_events(path)


def test_append_resumes_after_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(_alpha(1))
    with open(path, "a") as f:
        f.write('{"event": "alpha_ch')  # killed mid-write
    with JsonlSink(path, append=True) as sink:
        sink.emit(SeedPruned(epoch=2, slot="r0c1", seed_id="s1", reason="resumed"))
    assert read_events(path) == [
        _alpha(1),
        SeedPruned(epoch=2, slot="r0c1", seed_id="s1", reason="resumed"),
    ]


def test_without_append_the_log_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(_alpha(1))
    with JsonlSink(path) as sink:
        sink.emit(RunFinished(epoch=3))
    assert read_events(path) == [RunFinished(epoch=3)]


def test_append_to_a_missing_file_creates_it(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path, append=True) as sink:
        sink.emit(_alpha(4))
    assert read_events(path) == [_alpha(4)]


def test_a_log_deleted_while_written_is_noticed(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    with JsonlSink(path) as sink:
        sink.emit(RunFinished(epoch=0, summary={}))
        path.unlink()
        with pytest.raises(EventLogError, match="deleted while the run was writing it"):
            sink.emit(RunFinished(epoch=1, summary={}))
