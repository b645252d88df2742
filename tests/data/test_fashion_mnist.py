"""aur_tf.data.fashion_mnist on tiny idx files written by the tests."""

import gzip
import os

import numpy as np
import pytest

from aur_tf.data import fashion_mnist
from aur_tf.data.sources import load_source
from aur_tf.errors import UserError


def _idx(array):
    """The idx encoding of a uint8 array."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    return header + array.astype(np.uint8).tobytes()


def _write_folder(folder, train=30, test=10, compress=True, **replace):
    """The four files of a tiny Fashion-MNIST (labels 0..9 in turn); `replace` maps a file's
    key (x_train, ...) to the bytes to write instead."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (train, 28, 28)),
        "y_train": np.arange(train) % 10,
        "x_test": rng.integers(0, 256, (test, 28, 28)),
        "y_test": np.arange(test) % 10,
    }
    os.makedirs(folder, exist_ok=True)
    for key, stem in fashion_mnist.FILES.items():
        content = replace.get(key, _idx(arrays[key]))
        if compress:
            with gzip.open(os.path.join(folder, f"{stem}.gz"), "wb") as f:
                f.write(content)
        else:
            with open(os.path.join(folder, stem), "wb") as f:
                f.write(content)
    return arrays


@pytest.mark.parametrize("compress", [True, False])
def test_reads_the_four_files_of_a_named_folder(tmp_path, compress):
    arrays = _write_folder(tmp_path / "fm", compress=compress)
    loaded = fashion_mnist.load(str(tmp_path / "fm"))
    for split in ("train", "test"):
        np.testing.assert_array_equal(loaded[split][0], arrays[f"x_{split}"])
        np.testing.assert_array_equal(loaded[split][1], arrays[f"y_{split}"])
        assert loaded[split][0].dtype == np.uint8


def test_a_source_filters_labels_and_carves_validation_from_train(tmp_path):
    arrays = _write_folder(tmp_path / "fm")
    images = load_source(f"fashion_mnist:{tmp_path / 'fm'}?labels=0,1", cache_dir="unused")
    # Train images 0 and 1 go to validation (`sources._held_out`), 10, 11, 20 and 21 stay.
    np.testing.assert_array_equal(images.validation_labels, [0, 1])
    np.testing.assert_array_equal(images.train_labels, [0, 1, 0, 1])
    np.testing.assert_array_equal(images.test_labels, [0, 1])
    np.testing.assert_array_equal(
        images.test[..., 0], arrays["x_test"][[0, 1]].astype(np.float32) / 255
    )


def test_without_a_folder_the_usual_places_are_searched_in_order(tmp_path, monkeypatch):
    system, keras_cache = tmp_path / "system", tmp_path / "keras"
    monkeypatch.setattr(fashion_mnist, "SYSTEM_FOLDER", str(system))
    monkeypatch.setattr(fashion_mnist, "KERAS_FOLDER", str(keras_cache))
    from_keras = _write_folder(keras_cache, train=20)
    np.testing.assert_array_equal(fashion_mnist.load()["train"][0], from_keras["x_train"])
    from_system = _write_folder(system, train=10)
    np.testing.assert_array_equal(fashion_mnist.load()["train"][0], from_system["x_train"])


def test_no_files_and_no_network_is_one_line_saying_how_to_get_them(tmp_path, monkeypatch):
    import keras

    monkeypatch.setattr(fashion_mnist, "SYSTEM_FOLDER", str(tmp_path / "none"))
    monkeypatch.setattr(fashion_mnist, "KERAS_FOLDER", str(tmp_path / "none"))

    def offline():
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    with pytest.raises(UserError, match="name resolution.*apt-get install dataset-fashion-mnist"):
        fashion_mnist.load()


@pytest.mark.parametrize(
    "key, content, expected",
    [
        ("x_train", b"\0\0\x08", "shorter than its header"),
        ("x_train", bytes([0, 0, 0x0D, 3]) + bytes(12), "not 000008"),
        ("y_train", _idx(np.zeros((3, 2), np.uint8)), "has 2 dimensions, expected 1"),
        ("x_test", _idx(np.zeros((10, 28, 28), np.uint8))[:-5], "holds 7835 of the 7840 values"),
        ("x_test", _idx(np.zeros((10, 28, 28), np.uint8)) + b"x", "holds more than the 7840"),
        ("x_test", bytes([0, 0, 8, 3]) + (1 << 20).to_bytes(4, "big") * 3, "more than any"),
        ("y_test", _idx(np.zeros(9, np.uint8)), "10 test images but 9 labels"),
    ],
)
def test_damaged_files_are_one_line_errors(tmp_path, key, content, expected):
    _write_folder(tmp_path / "fm", compress=False, **{key: content})
    with pytest.raises(UserError, match=expected) as caught:
        fashion_mnist.load(str(tmp_path / "fm"))
    assert "\n" not in str(caught.value)


def test_a_folder_without_the_files_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="does not hold the four idx files"):
        fashion_mnist.load(str(tmp_path / "empty"))


def test_a_corrupt_gzip_is_one_line(tmp_path):
    _write_folder(tmp_path / "fm")
    (tmp_path / "fm" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b\x08garbage")
    with pytest.raises(UserError, match="cannot read .*train-images"):
        fashion_mnist.load(str(tmp_path / "fm"))


def test_a_fifo_in_place_of_a_file_is_refused_without_blocking(tmp_path):
    _write_folder(tmp_path / "fm", compress=False)
    fifo = tmp_path / "fm" / "t10k-labels-idx1-ubyte"
    fifo.unlink()
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="t10k-labels.*not a regular file|does not hold"):
        fashion_mnist.load(str(tmp_path / "fm"))
