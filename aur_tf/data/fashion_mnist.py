"""Fashion-MNIST from its four standard idx files, found offline where they are usually kept.

The files are `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`, `t10k-images-idx3-ubyte` and
`t10k-labels-idx1-ubyte`, each optionally gzipped (`.gz`), as Zalando publishes them. They are
looked for, in order, in the folder the source spec names, in `/usr/share/datasets/fashion-mnist`
(Debian's package `dataset-fashion-mnist`), and in Keras's cache `~/.keras/datasets/fashion-mnist`
(where `keras.datasets.fashion_mnist.load_data()` downloads them); where none has them, that Keras
call downloads them, which needs network. The 60 000 training images are the train split (the
source carves validation from it) and the 10 000 t10k images the test split.

The idx format: a big-endian header (two zero bytes, a type code, the number of dimensions n, then
n 32-bit dimensions) followed by the values in row-major order. Only unsigned bytes (type 0x08)
occur in Fashion-MNIST and only they are read.
"""

import contextlib
import gzip
import os
import zlib

import numpy as np

from aur_tf import safe_io
from aur_tf.errors import UserError

FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
SYSTEM_FOLDER = "/usr/share/datasets/fashion-mnist"
KERAS_FOLDER = os.path.join("~", ".keras", "datasets", "fashion-mnist")
_UNSIGNED_BYTE = 0x08
# Fashion-MNIST's largest file holds 47 MB of pixels; a header declaring far more is damage, and
# refusing it keeps a corrupt file from allocating memory it claims.
_MAX_VALUES = 1 << 28
_DIMENSIONS = {"x": 3, "y": 1}


def load(location=""):
    """The four Fashion-MNIST arrays.

    Args:
      location: a folder holding the idx files; '' looks in the usual places (module docstring).

    Returns:
      `{"train": (x, y), "test": (x, y)}`: x `[N, 28, 28]` uint8, y `[N]` uint8 labels 0..9,
      N = 60 000 and 10 000 for the published files.

    Raises:
      UserError: the files are missing, unreadable or not idx files of the expected shapes.
    """
    folder = _find_folder(location)
    arrays = {
        name: read_idx(_path(folder, stem), _DIMENSIONS[name[0]]) for name, stem in FILES.items()
    }
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if len(x) != len(y):
            raise UserError(
                f"Fashion-MNIST in {folder}: {len(x)} {split} images but {len(y)} "
                "labels: replace the damaged files"
            )
    return {split: (arrays[f"x_{split}"], arrays[f"y_{split}"]) for split in ("train", "test")}


def _path(folder, stem):
    """The idx file `stem` in `folder`, plain or gzipped; None if neither exists."""
    for name in (stem, f"{stem}.gz"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def _has_every_file(folder):
    return all(_path(folder, stem) for stem in FILES.values())


def _find_folder(location):
    if location:
        folder = os.path.expanduser(location)
        if not os.path.isdir(folder) or not _has_every_file(folder):
            raise UserError(
                f"Fashion-MNIST folder {location!r} does not hold the four idx files "
                f"({', '.join(FILES.values())}, optionally .gz): check the path"
            )
        return folder
    for folder in (SYSTEM_FOLDER, os.path.expanduser(KERAS_FOLDER)):
        if os.path.isdir(folder) and _has_every_file(folder):
            return folder
    return _download()


def _download():
    """Keras's own download into its cache folder; UserError where there is no network."""
    import keras

    try:
        keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # Keras reports a failed download by many exception types.
        detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
        raise UserError(
            f"Fashion-MNIST is not on this machine and cannot be downloaded "
            f"({detail}): install Debian's dataset-fashion-mnist (apt-get install "
            f"dataset-fashion-mnist), or copy the four idx files into a folder and "
            f"write fashion_mnist:FOLDER"
        ) from None
    folder = os.path.expanduser(KERAS_FOLDER)
    if not _has_every_file(folder):
        raise UserError(
            f"keras.datasets.fashion_mnist.load_data() left no idx files in "
            f"{folder}: copy the four idx files into a folder and write "
            f"fashion_mnist:FOLDER"
        )
    return folder


def read_idx(path, dimensions):
    """An idx file of unsigned bytes with `dimensions` dimensions, as a uint8 array.

    Raises:
      UserError: the file is unreadable, truncated, too long, or not such an idx file.
    """
    try:
        with (
            safe_io.open_regular(path) as raw,
            (
                gzip.GzipFile(fileobj=raw) if path.endswith(".gz") else contextlib.nullcontext(raw)
            ) as f,
        ):
            header = f.read(4 + 4 * dimensions)
            problem = _header_problem(header, dimensions)
            if problem:
                raise UserError(f"{path} is not a Fashion-MNIST idx file ({problem}): replace it")
            shape = tuple(
                int.from_bytes(header[4 + 4 * i : 8 + 4 * i], "big") for i in range(dimensions)
            )
            count = int(np.prod(shape, dtype=np.int64))
            if count > _MAX_VALUES:
                raise UserError(
                    f"{path} declares {shape} values, more than any Fashion-MNIST "
                    "file holds: it is damaged; replace it"
                )
            body = f.read(count + 1)
    except (OSError, EOFError, zlib.error, safe_io.FileRefused) as error:
        raise UserError(
            f"cannot read {safe_io.printable(path)} ({error}): replace the file"
        ) from None
    if len(body) != count:
        held = "more than" if len(body) > count else f"{len(body)} of"
        raise UserError(
            f"{path} holds {held} the {count} values its header declares: it is damaged; replace it"
        )
    return np.frombuffer(body, np.uint8).reshape(shape)


def _header_problem(header, dimensions):
    """What is wrong with an idx header, or None."""
    if len(header) < 4 + 4 * dimensions:
        return "it is shorter than its header"
    if header[:2] != b"\0\0" or header[2] != _UNSIGNED_BYTE:
        return f"its header starts {header[:3].hex()}, not 000008 (unsigned bytes)"
    if header[3] != dimensions:
        return f"it has {header[3]} dimensions, expected {dimensions}"
    return None
