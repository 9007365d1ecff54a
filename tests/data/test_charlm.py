"""The character-level language task: built-in corpus, user text files, vocabulary, windows."""

from __future__ import annotations

import pytest
import torch

from esper.data import DatasetError, get_task
from esper.data.charlm import builtin_corpus, encode
from esper.errors import ConfigError


def _decode(vocab: tuple[str, ...], ids: torch.Tensor) -> str:
    return "".join(vocab[i] for i in ids.tolist())


def test_builtin_corpus_is_the_sorted_pydoc_topics():
    from pydoc_data.topics import topics

    text = builtin_corpus()
    assert text == "".join(topics[k] for k in sorted(topics))
    assert len(text) > 100_000


def test_encode_uses_the_sorted_character_set_and_round_trips():
    vocab, ids = encode("hello, wörld")
    assert vocab == tuple(sorted(set("hello, wörld")))
    assert ids.dtype == torch.int64 and _decode(vocab, ids) == "hello, wörld"


def test_builtin_task_windows_are_shifted_text():
    task = get_task("charlm", block_size=16, batch_size=4)
    assert task.topology == "transformer" and task.host_factory == "TransformerHost"
    assert task.input_shape == (16,) and task.num_classes == len(task.vocab)
    assert task.host_kwargs["vocab_size"] == len(task.vocab)
    assert task.host_kwargs["block_size"] == 16
    x, y = next(task.train_batches(torch.Generator().manual_seed(0)))
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(x[:, 1:], y[:, :-1])
    text = builtin_corpus()
    for row_x, row_y in zip(x, y, strict=True):
        window = _decode(task.vocab, row_x) + _decode(task.vocab, row_y[-1:])
        assert window in text


def test_split_is_ninety_ten_by_position(tmp_path):
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    path = tmp_path / "abc.txt"
    path.write_text(text, encoding="utf-8")
    task = get_task("charlm", text_file=path, block_size=10, batch_size=7)
    val = torch.cat([torch.cat([x[:, :1], y], dim=1) for x, y in task.val_batches()])
    assert task.n_train == (900 - 1) // 10 and task.n_val == (100 - 1) // 10
    assert _decode(task.vocab, val.reshape(-1)[:11]) == text[900:911]  # val starts at 90%
    assert _decode(task.vocab, val[1, :11]) == text[910:921]  # fixed, non-overlapping windows


def test_val_windows_are_deterministic_and_train_windows_seeded(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("the quick brown fox jumps over the lazy dog. " * 40, encoding="utf-8")
    task = get_task("charlm", text_file=str(path), block_size=8)
    val_a = [x for x, _ in task.val_batches()]
    val_b = [x for x, _ in task.val_batches()]
    assert all(torch.equal(a, b) for a, b in zip(val_a, val_b, strict=True))

    def train(seed: int) -> torch.Tensor:
        return torch.cat([x for x, _ in task.train_batches(torch.Generator().manual_seed(seed))])

    assert torch.equal(train(0), train(0)) and not torch.equal(train(0), train(1))
    assert task.options["text_file"] == str(path.resolve())


def test_text_file_vocabulary_comes_from_the_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("ab" * 500 + "é", encoding="utf-8")
    task = get_task("charlm", text_file=path, block_size=4)
    assert task.vocab == ("a", "b", "é") and task.num_classes == 3


def test_missing_text_file_says_what_to_pass(tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(DatasetError, match=r"nope\.txt") as err:
        get_task("charlm", text_file=missing)
    assert "UTF-8 text file" in str(err.value) and isinstance(err.value, ConfigError)


def test_non_utf8_text_file_is_refused(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9 ".encode("latin-1") * 300)
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        get_task("charlm", text_file=path)


def test_text_too_short_for_the_block_size_says_both_numbers(tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("x" * 200, encoding="utf-8")
    with pytest.raises(ConfigError, match=r"200 characters; block_size=64"):
        get_task("charlm", text_file=path, block_size=64)
    assert get_task("charlm", text_file=path, block_size=19).n_val == 1
