"""CIFAR-10 from a folder in the official pickle format, written small and fake in tmp_path."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from esper.data import DatasetError, get_task
from esper.data.cifar import FOLDER_NAME, MEAN, STD, TEST_FILE, TRAIN_FILES
from esper.errors import ConfigError

PER_TRAIN_FILE = 8
N_TEST = 6


def _write_batch(path: Path, first_id: int, n: int) -> None:
    # Image i is filled with the value i + 1 (so a crop still says which image it is) and
    # labelled i % 10: the dict layout of the official files (bytes keys, labels a list).
    ids = np.arange(first_id, first_id + n)
    data = np.repeat((ids + 1).astype(np.uint8)[:, None], 3072, axis=1)  # (n, 3072)
    batch = {
        b"batch_label": b"fake",
        b"labels": [int(i % 10) for i in ids],
        b"data": data,
        b"filenames": [b"img%d.png" % i for i in ids],
    }
    with path.open("wb") as f:
        pickle.dump(batch, f, protocol=2)


@pytest.fixture(scope="module")
def cifar_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    folder = root / FOLDER_NAME
    folder.mkdir()
    for k, name in enumerate(TRAIN_FILES):
        _write_batch(folder / name, k * PER_TRAIN_FILE, PER_TRAIN_FILE)
    _write_batch(folder / TEST_FILE, 200, N_TEST)
    return root


def _image_ids(x: torch.Tensor) -> list[int]:
    # Undo the normalisation of the centre pixel (never padding after a 4-pixel crop).
    raw = (x[:, :, 16, 16] * torch.tensor(STD) + torch.tensor(MEAN)) * 255
    return (raw.round().long()[:, 0] - 1).tolist()


def test_both_data_dir_forms_load_the_same_data(cifar_root):
    parent = get_task("cifar10", data_dir=cifar_root)
    folder = get_task("cifar10", data_dir=str(cifar_root / FOLDER_NAME))
    assert parent.n_train == folder.n_train == 5 * PER_TRAIN_FILE
    assert parent.n_val == folder.n_val == N_TEST
    for (xa, ya), (xb, yb) in zip(parent.val_batches(), folder.val_batches(), strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert parent.options == {"data_dir": str(cifar_root.resolve()), "batch_size": 128}


def test_a_relative_data_dir_is_stored_absolute(cifar_root, monkeypatch):
    monkeypatch.chdir(cifar_root)
    task = get_task("cifar10", data_dir=".")
    assert task.options["data_dir"] == str(cifar_root.resolve())
    monkeypatch.chdir(cifar_root.parent)
    assert get_task(task.name, **task.options).n_train == task.n_train


def test_val_batches_are_the_normalised_test_batch_in_order(cifar_root):
    task = get_task("cifar10", data_dir=cifar_root, batch_size=4)
    assert task.input_shape == (3, 32, 32) and task.num_classes == 10
    xs, ys = zip(*task.val_batches(), strict=True)
    x, y = torch.cat(xs), torch.cat(ys)
    assert [len(b) for b in ys] == [4, 2]
    assert x.shape == (N_TEST, 3, 32, 32) and x.dtype == torch.float32
    pixels = (torch.arange(201, 207).float() / 255).view(-1, 1, 1, 1)  # image i is filled with i + 1
    expected = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.allclose(x, expected.expand_as(x), atol=1e-5)  # unaugmented: no padding, no crop
    assert y.tolist() == [i % 10 for i in range(200, 206)]


def test_train_epoch_is_augmented_labelled_and_sees_every_image_once(cifar_root):
    task = get_task("cifar10", data_dir=cifar_root, batch_size=16)
    seen, padded = [], 0
    black = -torch.tensor(MEAN) / torch.tensor(STD)  # a zero pixel, normalised
    for x, y in task.train_batches(torch.Generator().manual_seed(0)):
        assert x.shape[1:] == (3, 32, 32) and x.dtype == torch.float32
        ids = _image_ids(x)
        assert y.tolist() == [i % 10 for i in ids]
        seen += ids
        padded += int(torch.isclose(x[:, 0], black[0]).any(dim=(1, 2)).sum())
    assert sorted(seen) == list(range(5 * PER_TRAIN_FILE))
    assert padded > 0  # crops with an offset bring in black zero padding


def test_train_order_and_augmentation_follow_the_generator(cifar_root):
    task = get_task("cifar10", data_dir=cifar_root)

    def epoch(seed: int) -> torch.Tensor:
        gen = torch.Generator().manual_seed(seed)
        return torch.cat([x for x, _ in task.train_batches(gen)])

    assert torch.equal(epoch(3), epoch(3))
    assert not torch.equal(epoch(3), epoch(4))


def test_missing_folder_says_what_to_download_and_where(tmp_path):
    with pytest.raises(DatasetError) as err:
        get_task("cifar10", data_dir=tmp_path / "nowhere")
    message = str(err.value)
    assert isinstance(err.value, ConfigError)
    for needle in (
        "cifar-10-python.tar.gz",
        "https://www.cs.toronto.edu/~kriz/cifar.html",
        FOLDER_NAME,
        str(tmp_path / "nowhere"),
        "tar -xzf",
    ):
        assert needle in message


def test_incomplete_folder_lists_the_missing_files(cifar_root, tmp_path):
    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    for name in TRAIN_FILES[:3]:
        os.symlink(cifar_root / FOLDER_NAME / name, folder / name)
    with pytest.raises(DatasetError, match=r"missing: .*data_batch_4.*data_batch_5.*test_batch"):
        get_task("cifar10", data_dir=tmp_path)


def test_no_data_dir_explains_the_download():
    with pytest.raises(ConfigError, match=r"needs data_dir.*cifar-10-python.tar.gz"):
        get_task("cifar10")


def _copy_with_bad_test_batch(cifar_root: Path, tmp_path: Path, payload: bytes) -> Path:
    folder = tmp_path / FOLDER_NAME
    folder.mkdir()
    for name in TRAIN_FILES:
        os.symlink(cifar_root / FOLDER_NAME / name, folder / name)
    (folder / TEST_FILE).write_bytes(payload)
    return folder


@pytest.mark.parametrize(
    "payload",
    [
        b"not a pickle",
        pickle.dumps({b"data": np.zeros((2, 5), np.uint8), b"labels": [0, 1]}),
        pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}),
        pickle.dumps({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}),
        pickle.dumps([1, 2, 3]),
    ],
)
def test_corrupt_batch_file_is_named(cifar_root, tmp_path, payload):
    folder = _copy_with_bad_test_batch(cifar_root, tmp_path, payload)
    with pytest.raises(DatasetError, match=r"test_batch.*cifar-10-python.tar.gz"):
        get_task("cifar10", data_dir=folder)


def test_batch_files_cannot_run_code(cifar_root, tmp_path):
    payload = pickle.dumps({b"data": os.getcwd, b"labels": []})  # names a global function
    folder = _copy_with_bad_test_batch(cifar_root, tmp_path, payload)
    with pytest.raises(DatasetError, match=r"refusing global posix\.getcwd"):
        get_task("cifar10", data_dir=folder)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_numpy_arrays_load_from_every_pickle_protocol(cifar_root, tmp_path, protocol):
    batch = {b"data": np.full((3, 3072), 7, np.uint8), b"labels": [1, 2, 3]}
    folder = _copy_with_bad_test_batch(cifar_root, tmp_path, pickle.dumps(batch, protocol))
    task = get_task("cifar10", data_dir=folder)
    assert task.n_val == 3
