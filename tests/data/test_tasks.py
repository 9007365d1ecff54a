"""The task registry, the digits tasks, scoring, and hosts built from each task."""

from __future__ import annotations

import hashlib
import json
import sys

import numpy as np
import pytest
import torch

from esper.data import DEFAULT_TASK, Task, get_task, list_tasks, task_descriptions
from esper.data.digits import (
    SPLIT_SEED,
    VAL_FRACTION,
    load_digits_arrays,
    load_digits_splits,
    stratified_split,
)
from esper.errors import ConfigError

N_DIGITS = 1797
DIGITS_IMAGES_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
DIGITS_LABELS_SHA256 = "8ba4f891220f5e4c9c819638d1602d74b83618f167043c6da52a2a247841ddf0"


@pytest.fixture(scope="module")
def digits() -> Task:
    return get_task("digits")


def test_registry_lists_every_task_with_a_description():
    assert list_tasks() == ["charlm", "cifar10", "digits", "digits-impaired"]
    assert list(task_descriptions()) == list_tasks()
    assert all(task_descriptions().values())
    assert DEFAULT_TASK == "digits" and get_task().name == "digits"


def test_unknown_name_lists_the_tasks_and_suggests_the_closest():
    with pytest.raises(ConfigError) as err:
        get_task("digit")
    message = str(err.value)
    assert "'digit'" in message and "Did you mean 'digits'?" in message
    for name in list_tasks():
        assert name in message


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_bad_batch_size_is_refused_with_the_value(bad):
    with pytest.raises(ConfigError, match=r"batch_size=.*positive integer"):
        get_task("digits", batch_size=bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5])
def test_bad_block_size_is_refused_with_the_value(bad):
    with pytest.raises(ConfigError, match=r"block_size=.*positive integer"):
        get_task("charlm", block_size=bad)


@pytest.mark.parametrize(
    ("name", "option"),
    [
        ("digits", {"data_dir": "x"}),
        ("digits-impaired", {"block_size": 8}),
        ("charlm", {"data_dir": "x"}),
        ("cifar10", {"text_file": "t.txt"}),
    ],
)
def test_an_option_the_task_does_not_take_is_an_error(name, option):
    key = next(iter(option))
    with pytest.raises(ConfigError, match=f"does not take {key}"):
        get_task(name, **option)


def test_digits_tensors_have_the_documented_shapes_and_ranges(digits):
    assert digits.n_train + digits.n_val == N_DIGITS
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    assert digits.topology == "cnn" and digits.host_factory == "CNNHost"
    xs, ys = zip(*digits.val_batches(), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert x.shape == (digits.n_val, 1, 8, 8) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and set(y.tolist()) == set(range(10))
    assert x.isfinite().all() and x.abs().max() < 10


def test_digits_train_inputs_are_standardised(digits):
    x = torch.cat([b[0] for b in digits.train_batches(torch.Generator().manual_seed(0))])
    assert x.shape == (digits.n_train, 1, 8, 8)
    assert abs(x.mean().item()) < 1e-4 and abs(x.std().item() - 1) < 1e-3


def test_digits_split_is_stratified_disjoint_and_covers_everything():
    labels = torch.arange(N_DIGITS) % 10
    train, val = stratified_split(labels, VAL_FRACTION, SPLIT_SEED)
    assert sorted(torch.cat([train, val]).tolist()) == list(range(N_DIGITS))
    for cls in range(10):
        members = int((labels == cls).sum())
        assert int((labels[val] == cls).sum()) == round(VAL_FRACTION * members)


def test_digits_split_ignores_the_global_seed_and_follows_its_own():
    labels = torch.arange(200) % 4
    torch.manual_seed(1)
    first = stratified_split(labels, 0.25, seed=0)
    torch.manual_seed(2)
    again = stratified_split(labels, 0.25, seed=0)
    other = stratified_split(labels, 0.25, seed=1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[1], other[1])


def test_digits_val_labels_match_the_fixed_split(digits):
    target = torch.from_numpy(load_digits_arrays()[1]).long()
    _, val_idx = stratified_split(target, VAL_FRACTION, SPLIT_SEED)
    val_y = torch.cat([y for _, y in digits.val_batches()])
    assert torch.equal(val_y, target[val_idx])


def test_shipped_digits_are_sklearns_load_digits():
    # Checksums of sklearn.datasets.load_digits() (1.x): images.astype(uint8) and target.astype(uint8).
    images, labels = load_digits_arrays()
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    assert labels.shape == (1797,) and labels.dtype == np.uint8
    assert images.max() == 16 and images.min() == 0
    assert np.bincount(labels).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert hashlib.sha256(images.tobytes()).hexdigest() == DIGITS_IMAGES_SHA256
    assert hashlib.sha256(labels.tobytes()).hexdigest() == DIGITS_LABELS_SHA256


def test_digits_load_without_scikit_learn(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # any import of sklearn now fails
    load_digits_splits.cache_clear()
    task = get_task("digits")
    assert task.n_train + task.n_val == N_DIGITS


def test_digits_impaired_is_the_same_data_with_a_smaller_host(digits):
    impaired = get_task("digits-impaired")
    assert impaired.host_kwargs["base_channels"] < digits.host_kwargs["base_channels"]
    assert impaired.n_train == digits.n_train
    for (xa, ya), (xb, yb) in zip(impaired.val_batches(), digits.val_batches(), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_train_batches_use_the_task_batch_size_and_are_reproducible():
    task = get_task("digits", batch_size=100)
    assert task.batch_size == 100

    def labels(seed: int) -> torch.Tensor:
        return torch.cat([y for _, y in task.train_batches(torch.Generator().manual_seed(seed))])

    sizes = [len(y) for _, y in task.train_batches(torch.Generator().manual_seed(0))]
    assert sizes[:-1] == [100] * (len(sizes) - 1) and sum(sizes) == task.n_train
    assert torch.equal(labels(0), labels(0)) and not torch.equal(labels(0), labels(1))


def test_val_batches_are_the_same_every_time(digits):
    first = [y for _, y in digits.val_batches()]
    second = [y for _, y in digits.val_batches()]
    assert all(torch.equal(a, b) for a, b in zip(first, second, strict=True))


def test_options_are_primitives_that_rebuild_the_task():
    for name in ("digits", "digits-impaired", "charlm"):
        task = get_task(name)
        assert json.loads(json.dumps(task.host_kwargs)) == task.host_kwargs
        assert json.loads(json.dumps(task.options)) == task.options
        rebuilt = get_task(task.name, **task.options)
        assert rebuilt.host_kwargs == task.host_kwargs and rebuilt.n_train == task.n_train
        assert task.default_epochs > 0 and 0 < task.default_lr < 1


@pytest.mark.parametrize("name", ["digits", "digits-impaired", "charlm"])
def test_make_host_fits_the_task_batches(name):
    task = get_task(name)
    host = task.make_host()
    assert host.topology == task.topology
    x, y = next(task.train_batches(torch.Generator().manual_seed(0)))
    logits = host(x)
    assert logits.shape == (*y.shape, task.num_classes)
    loss = task.loss(logits, y)
    assert loss.dim() == 0 and loss.isfinite()
    loss.backward()
    assert all(p.grad is not None for p in host.parameters() if p.requires_grad)


def test_loss_is_cross_entropy_and_correct_counts_argmax_hits(digits):
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 1.0]])
    targets = torch.tensor([0, 0, 0])
    hits, count = digits.correct(logits, targets)
    assert isinstance(hits, torch.Tensor) and hits.dim() == 0 and hits.item() == 2
    assert count == 3
    expected = torch.nn.functional.cross_entropy(logits, targets)
    assert torch.allclose(digits.loss(logits, targets), expected)


def test_sequence_loss_and_accuracy_flatten_time():
    task = get_task("charlm")
    logits = torch.randn(2, 3, 5)
    targets = torch.randint(0, 5, (2, 3))
    expected = torch.nn.functional.cross_entropy(logits.reshape(6, 5), targets.reshape(6))
    assert torch.allclose(task.loss(logits, targets), expected)
    hits, count = task.correct(logits, targets)
    assert count == 6 and hits.item() == int((logits.argmax(-1) == targets).sum())


@pytest.mark.parametrize(("name", "key"), [("digits-impaired", "base_channels"), ("charlm", "n_embd")])
def test_host_channels_sets_the_hosts_width(name, key):
    task = get_task(name, host_channels=8)
    assert task.host_kwargs[key] == 8 and task.options["host_channels"] == 8
    wider = sum(p.numel() for p in get_task(name, host_channels=12).make_host().parameters())
    assert sum(p.numel() for p in task.make_host().parameters()) < wider
    assert get_task(name, **{k: v for k, v in task.options.items()}).host_kwargs == task.host_kwargs


def test_a_bad_host_width_names_the_value():
    with pytest.raises(ConfigError, match="host_channels=0 is invalid"):
        get_task("digits", host_channels=0)
