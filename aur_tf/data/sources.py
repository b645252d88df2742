"""Sources: sets of clean images named by a spec string, loaded as float32 [N, H, W, C] in [0, 1].

Spec syntax: `KIND:LOCATION[?labels=L]`

- `tfds:NAME`     a TFDS image dataset, read with `tfds.load(NAME, as_supervised=True)` from
                  `CACHE_DIR/tfds` (splits 'train' and 'test'; images must have a fixed size).
- `npz:PATH`      a keras.datasets-style archive with arrays x_train, x_test (images [N,H,W] or
                  [N,H,W,C], uint8 0..255 or float in [0, 1]) and y_train, y_test (integer
                  labels [N] or [N, 1]; needed only with a labels filter).
- `folder:PATH`   a directory of PNG/JPEG files, see `_load_folder`.
- `mnist`         the built-in offline MNIST (50 000 train / 10 000 validation / 10 000 test),
                  see `mnist_offline`.
- `fashion_mnist[:FOLDER]`  Fashion-MNIST's four idx files from FOLDER, or where they are usually
                  kept (Debian's dataset-fashion-mnist, Keras's cache), see `fashion_mnist`.

Every source has three splits: train (the mixtures a run learns from), validation (evaluations
during training, checkpoint and setting choices) and test (scored once, at the end). Where a
dataset has no validation split of its own (tfds, npz, folders without `validation/`), it is
carved from train, never from test: image i of the train split goes to validation iff
`_held_out(str(i), VALIDATION)` (for folders, its relative path instead of i), about one in five,
the same on every machine.

`L` is a comma list of labels and inclusive ranges, e.g. `0-4`, `1,3,5`, `0-2,7`; labels are
integers 0..99999. `?` cannot appear in a location (it always starts the labels option).
Images keep their native size and channel count; gray images get a channel axis of size 1.
"""

import dataclasses
import hashlib
import os
import re
import zipfile
import zlib

import numpy as np

from aur_tf import images, memory, safe_io
from aur_tf.data import fashion_mnist, mnist_offline
from aur_tf.errors import UserError

_KINDS = ("tfds", "npz", "folder", "mnist", "fashion_mnist")
_KIND_HELP = "use tfds:NAME, npz:PATH, folder:PATH, mnist or fashion_mnist[:FOLDER]"
# Kinds whose location may be left out, and those that take none.
_LOCATION_OPTIONAL = ("fashion_mnist",)
# Caps the size of a label set so a typo such as 0-999999999 cannot exhaust memory.
_MAX_LABEL = 99_999
# Images with more channels than this are almost always channels-first arrays read as
# channels-last, which would silently produce nonsense images.
_MAX_CHANNELS = 4
# Float images may overshoot [0, 1] by rounding error only.
_RANGE_TOLERANCE = 1e-6
_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")
SPLITS = mnist_offline.SPLITS  # ("train", "validation", "test"), the order used everywhere
# `_held_out(key, part)` holds for about one key in this many, independently for each part: a
# hash, not a random draw, so the splits are the same on every machine and adding or removing
# images never moves others between splits.
_HELD_OUT_ONE_IN = 5
# Which 8 bytes of the key's sha256 decide each held-out split. TEST keeps the rule folders had
# before there was a validation split, so their test images did not change.
TEST, VALIDATION = 0, 1
# What an npz source may hold (arrays that the loader reads; any other member is ignored).
_NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
# Where the free memory cannot be read (aur_tf.memory), the most an npz source's arrays may
# declare: enough for ImageNet-scale sets at 64x64, far below what a lying header claims.
_NPZ_FALLBACK_BUDGET = 16 * 2**30
# What a loader may meet in a file it was pointed at: gone or unreadable (OSError), too large
# (MemoryError), a name that cannot be encoded for the OS (UnicodeError).
_READ_ERRORS = (OSError, MemoryError, UnicodeError)


def _shown(text) -> str:
    """`text` quoted for a message, as one printable line (safe_io.printable)."""
    return f"'{safe_io.printable(text)}'"


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """A parsed source spec.

    kind: one of 'tfds', 'npz', 'folder', 'mnist', 'fashion_mnist'.
    location: dataset name or path as written ('' for mnist, and fashion_mnist without one).
    labels: the integer labels to keep, or None to keep every image.
    """

    kind: str
    location: str
    labels: frozenset[int] | None

    @classmethod
    def parse(cls, text: str) -> "SourceSpec":
        """Parse `KIND:LOCATION[?labels=L]`; UserError with a readable message on bad syntax."""
        stripped = text.strip()
        if not stripped:
            raise UserError(f"empty source spec: {_KIND_HELP}")
        # No path may hold one, and the OS calls that would meet it raise ValueError, not OSError.
        if "\0" in stripped:
            raise UserError(f"source spec {_shown(text)} contains a NUL character: remove it")
        head, has_query, query = stripped.partition("?")
        kind, _, location = head.partition(":")
        if kind not in _KINDS:
            raise UserError(f"unknown source kind {_shown(kind)} in {_shown(text)}: {_KIND_HELP}")
        if kind == "mnist" and location:
            raise UserError(
                f"the built-in mnist source takes no location, got {_shown(text)}: "
                f"write mnist or mnist?labels=L"
            )
        if kind not in ("mnist", *_LOCATION_OPTIONAL) and not location:
            raise UserError(
                f"source {_shown(text)} has no location: write {kind}:"
                f"{'NAME' if kind == 'tfds' else 'PATH'}"
            )
        labels = _parse_labels_option(query, text) if has_query else None
        return cls(kind=kind, location=location, labels=labels)

    def __str__(self) -> str:
        text = f"{self.kind}:{self.location}" if self.location else self.kind
        if self.labels is not None:
            text += f"?labels={_format_labels(self.labels)}"
        return text


@dataclasses.dataclass(frozen=True)
class SourceImages:
    """Clean images of one source.

    train: [N, H, W, C] float32 in [0, 1].
    validation: [V, H, W, C] float32 in [0, 1], same H, W, C as train.
    test: [M, H, W, C] float32 in [0, 1], same H, W, C as train.
    name: the spec text, for messages.
    train_labels, validation_labels, test_labels: [N], [V] and [M] int64 labels of those images
        when the spec has a labels filter (the labels it was checked against), None otherwise.
        Only evaluation diagnostics read them.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    name: str
    train_labels: np.ndarray | None = None
    validation_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None


def load_source(spec: str | SourceSpec, *, cache_dir: str) -> SourceImages:
    """Load, label-filter and validate the train and test images of a source.

    Args:
        spec: a spec string or parsed SourceSpec.
        cache_dir: directory for downloads and caches (TFDS data under `cache_dir/tfds`, the
            offline MNIST wheel and its decoded .npz directly in it).

    Returns:
        SourceImages with train, validation and test images, each [N, H, W, C] float32 in
        [0, 1] with the same H, W and C >= 1.

    Raises:
        UserError: bad spec, missing or corrupt files, images of the wrong rank, dtype or range,
            NaN/Inf, empty splits, or a labels filter that selects nothing.
    """
    if isinstance(spec, SourceSpec):
        name = str(spec)
    else:
        name = spec
        spec = SourceSpec.parse(spec)
    # Each loader returns the raw `{split: (x, y)}`, y None without labels; a loader whose
    # dataset has no validation split leaves it to be carved from train.
    loader = {
        "tfds": _load_tfds,
        "npz": _load_npz,
        "folder": _load_folder,
        "mnist": _load_mnist,
        "fashion_mnist": _load_fashion_mnist,
    }[spec.kind]
    try:
        raw = loader(spec, name, cache_dir)
    # A safety net: each loader names what failed where it can, but reading user files must not
    # end in a traceback whatever the operating system reports.
    except _READ_ERRORS as error:
        raise UserError(
            f"cannot read source {_shown(name)} ({_shown(error)}): check its files and free memory"
        ) from error
    if "validation" not in raw:
        x, y = raw["train"]
        x = _checked_images(x, name, "train")
        y = None if spec.labels is None else _checked_labels(y, len(x), name, "train")
        raw["train"], raw["validation"] = _carve_validation(x, y)
    fields = {}
    for split in SPLITS:
        fields[split], fields[f"{split}_labels"] = _finish_split(
            *raw[split], spec.labels, name, split
        )
        if fields[split].shape[1:] != fields["train"].shape[1:]:
            raise UserError(
                f"source {_shown(name)}: train images are {fields['train'].shape[1:]} "
                f"but {split} images are {fields[split].shape[1:]} (H, W, C): make "
                "every split the same size"
            )
    return SourceImages(name=name, **fields)


def _held_out(key: str, part: int) -> bool:
    """Whether the image named `key` goes to held-out split `part` (TEST or VALIDATION): bytes
    8*part .. 8*part+7 of its sha256, read as a big-endian integer, divide by _HELD_OUT_ONE_IN."""
    digest = hashlib.sha256(key.encode("utf-8", "surrogateescape")).digest()
    return int.from_bytes(digest[8 * part : 8 * part + 8], "big") % _HELD_OUT_ONE_IN == 0


def _carve_validation(x, y):
    """Splits a train split's images `x` `[N, H, W, C]` and labels `y` (`[N]` or None) into
    ((x, y) train, (x, y) validation) by `_held_out` of each image's index."""
    chosen = np.fromiter((_held_out(str(i), VALIDATION) for i in range(len(x))), bool, len(x))
    return (
        (x[~chosen], None if y is None else y[~chosen]),
        (x[chosen], None if y is None else y[chosen]),
    )


def _parse_labels_option(query: str, text: str) -> frozenset[int]:
    option, has_value, value = query.partition("=")
    if option != "labels" or not has_value:
        raise UserError(
            f"unknown option {_shown(query)} in source {_shown(text)}: the only option "
            f"is ?labels=L, e.g. ?labels=0-4 or ?labels=1,3,5"
        )
    if not value.strip():
        raise UserError(
            f"empty label list in source {_shown(text)}: write e.g. ?labels=0-4 or ?labels=1,3,5"
        )
    labels = set()
    for item in value.split(","):
        low_text, is_range, high_text = item.strip().partition("-")
        low = _parse_label(low_text, item, text)
        high = _parse_label(high_text, item, text) if is_range else low
        if high < low:
            raise UserError(
                f"label range {_shown(item.strip())} in source {_shown(text)} is "
                f"backwards: write {high}-{low}"
            )
        labels.update(range(low, high + 1))
    return frozenset(labels)


def _parse_label(token: str, item: str, text: str) -> int:
    token = token.strip()
    # ASCII digits only: int() would also accept '1_0', '+3' and non-Latin digits.
    if not re.fullmatch(r"[0-9]+", token, flags=re.ASCII):
        raise UserError(
            f"bad label {_shown(item.strip())} in source {_shown(text)}: labels are "
            f"integers or ranges such as 0-4, separated by commas"
        )
    # Checking the digit count first keeps int() away from huge strings.
    if len(token.lstrip("0")) > len(str(_MAX_LABEL)) or int(token) > _MAX_LABEL:
        raise UserError(
            f"label {token} in source {_shown(text)} is too large: labels are 0..{_MAX_LABEL}"
        )
    return int(token)


def _format_labels(labels) -> str:
    """Compact text for a set of integer labels, e.g. {0,1,2,7} -> '0-2,7'."""
    ordered = sorted(int(label) for label in labels)
    runs = []
    for label in ordered:
        if runs and label == runs[-1][1] + 1:
            runs[-1][1] = label
        else:
            runs.append([label, label])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in runs)


def _finish_split(x, y, labels, name: str, split: str):
    """Validate one split, apply the labels filter and convert to float32 [N, H, W, C] in [0, 1].

    Returns the images and, with a labels filter, the kept images' `[N]` int64 labels (else None).
    """
    x = _checked_images(x, name, split)
    if labels is None:
        return _to_unit_float(x, name, split), None
    y = _checked_labels(y, len(x), name, split)
    kept = _label_mask(y, labels, name, split)
    return _to_unit_float(x[kept], name, split), y[kept]


def _checked_images(x, name: str, split: str) -> np.ndarray:
    """A split's images as a non-empty `[N, H, W, C]` array, C <= _MAX_CHANNELS, values as read."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., np.newaxis]
    if x.ndim != 4:
        raise UserError(
            f"{split} images of source {_shown(name)} have shape {x.shape}: expected "
            f"[N, H, W] or [N, H, W, C]"
        )
    if x.shape[-1] > _MAX_CHANNELS:
        raise UserError(
            f"{split} images of source {_shown(name)} have shape {x.shape}, i.e. "
            f"{x.shape[-1]} channels: expected channels-last [N, H, W, C] with C <= "
            f"{_MAX_CHANNELS} (transpose channels-first data)"
        )
    if len(x) == 0:
        where = (
            "train split (validation is carved from it)"
            if split == "validation"
            else (f"{split} split")
        )
        raise UserError(
            f"source {_shown(name)} has no {split} images (shape {x.shape}): add "
            f"images to its {where}"
        )
    if 0 in x.shape:
        raise UserError(
            f"{split} images of source {_shown(name)} are empty (shape {x.shape}): "
            f"store images of at least 1x1 pixel"
        )
    return x


def _checked_labels(y, count: int, name: str, split: str) -> np.ndarray:
    """The `[count]` int64 labels of a split, from `[count]` or `[count, 1]` integers."""
    if y is None:
        raise UserError(
            f"source {_shown(name)} has no {split} labels, so ?labels cannot select "
            f"images: remove the ?labels option or provide labels"
        )
    y = np.asarray(y)
    # keras.datasets stores some label arrays as [N, 1] (e.g. CIFAR-10).
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.dtype.kind not in "iu" or y.shape != (count,):
        raise UserError(
            f"{split} labels of source {_shown(name)} are {y.dtype} {y.shape}: "
            f"expected integers of shape [{count}] matching the images"
        )
    return y.astype(np.int64)


def _label_mask(y: np.ndarray, labels: frozenset[int], name: str, split: str) -> np.ndarray:
    mask = np.isin(y, np.fromiter(labels, dtype=np.int64))
    if not mask.any():
        raise UserError(
            f"?labels={_format_labels(labels)} selects no {split} images of source "
            f"{_shown(name)}: its {split} labels are {_format_labels(np.unique(y))}"
        )
    return mask


def _to_unit_float(x: np.ndarray, name: str, split: str) -> np.ndarray:
    if x.dtype == np.uint8:
        return x.astype(np.float32) / np.float32(255)
    if x.dtype.kind != "f":
        raise UserError(
            f"{split} images of source {_shown(name)} are {x.dtype}: store uint8 "
            f"0..255 or float in [0, 1]"
        )
    if not np.isfinite(x).all():
        raise UserError(
            f"{split} images of source {_shown(name)} contain NaN or Inf: fix or drop those images"
        )
    low, high = float(x.min()), float(x.max())
    if low < -_RANGE_TOLERANCE or high > 1 + _RANGE_TOLERANCE:
        raise UserError(
            f"float {split} images of source {_shown(name)} span [{low:g}, {high:g}], "
            f"not [0, 1]: rescale them (e.g. divide 0..255 data by 255)"
        )
    return np.clip(x, 0, 1).astype(np.float32)


def _load_mnist(spec: SourceSpec, name: str, cache_dir: str):
    arrays = mnist_offline.load_mnist(cache_dir)
    return {split: arrays[2 * i : 2 * i + 2] for i, split in enumerate(SPLITS)}


def _load_fashion_mnist(spec: SourceSpec, name: str, cache_dir: str):
    return fashion_mnist.load(spec.location)


def _load_npz(spec: SourceSpec, name: str, cache_dir: str):
    """The splits of an npz source, read by safe_io.load_npz: never unpickled, each array's
    header checked against the file and the free memory before anything is allocated."""
    path = os.path.expanduser(spec.location)
    if os.path.isdir(path):
        raise UserError(
            f"npz path {_shown(path)} of source {_shown(name)} is a directory, not a "
            f"file: name the .npz file, or use "
            f"folder:{safe_io.printable(spec.location)} for a folder of images"
        )
    if not os.path.exists(path):
        raise UserError(
            f"npz file {_shown(path)} of source {_shown(name)} does not exist: check the path"
        )
    fix = "re-create it with np.savez(path, x_train=..., y_train=..., x_test=..., y_test=...)"

    def select(present):
        missing = [key for key in ("x_train", "x_test") if key not in present]
        if missing:
            raise UserError(
                f"{_shown(path)} of source {_shown(name)} lacks {', '.join(missing)} "
                f"(it has {', '.join(present) or 'no arrays'}): {fix}"
            )
        return [key for key in _NPZ_KEYS if key in present]

    try:
        loaded = dict(
            safe_io.load_npz(path, memory.available_bytes() or _NPZ_FALLBACK_BUDGET, select)
        )
    except safe_io.FileRefused as error:
        raise UserError(
            f"cannot read npz file {_shown(path)} of source {_shown(name)}: {error}"
        ) from None
    except zipfile.BadZipFile as error:
        if _holds_one_array(path):
            raise UserError(
                f"{_shown(path)} of source {_shown(name)} holds a single array, not "
                f"an .npz archive: {fix}"
            ) from None
        raise UserError(
            f"cannot read npz file {_shown(path)} of source {_shown(name)} ({error}): "
            f"the file is corrupt or not an .npz; {fix}"
        ) from error
    # How a corrupt archive or member shows itself depends on where it breaks.
    except (OSError, ValueError, EOFError, zlib.error) as error:
        raise UserError(
            f"cannot read npz file {_shown(path)} of source {_shown(name)} ({error}): "
            f"the file is corrupt or not an .npz; {fix}"
        ) from error
    return {split: (loaded[f"x_{split}"], loaded.get(f"y_{split}")) for split in ("train", "test")}


def _holds_one_array(path: str) -> bool:
    """Whether `path` starts with a valid .npy header: np.save's output, not np.savez's."""
    try:
        with safe_io.open_regular(path) as f:
            reader = safe_io.NPY_HEADER_READERS.get(np.lib.format.read_magic(f))
            return reader is not None and reader(f) is not None
    except (OSError, ValueError, safe_io.FileRefused):
        return False


def _load_tfds(spec: SourceSpec, name: str, cache_dir: str):
    # Imported here: TFDS is slow to import and only this kind needs it.
    import tensorflow_datasets as tfds

    data_dir = os.path.join(cache_dir, "tfds")
    arrays = {}
    for split in ("train", "test"):
        # TFDS signals a missing dataset, a missing split or a failed download through many
        # unrelated exception types; each one means the same to the user, so all are reported.
        try:
            dataset = tfds.load(spec.location, split=split, as_supervised=True, data_dir=data_dir)
        except Exception as error:
            detail = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            raise UserError(
                f"cannot load TFDS dataset {_shown(spec.location)} split "
                f"{_shown(split)} for source {_shown(name)} ({detail}): check the "
                f"name, or prepare it with tfds.builder(NAME, "
                f"data_dir={_shown(data_dir)}).download_and_prepare() on a machine "
                "with network"
            ) from error
        if not (isinstance(dataset.element_spec, tuple) and len(dataset.element_spec) == 2):
            raise UserError(
                f"TFDS dataset {_shown(spec.location)} of source {_shown(name)} has no "
                f"(image, label) supervised keys: use a supervised image dataset"
            )
        image_shape = dataset.element_spec[0].shape
        if not image_shape.is_fully_defined():
            raise UserError(
                f"TFDS dataset {_shown(spec.location)} of source {_shown(name)} has "
                f"images of varying size {image_shape}: use a fixed-size dataset or "
                f"export it as a folder: source"
            )
        images, labels = [], []
        for image_batch, label_batch in tfds.as_numpy(dataset.batch(1024)):
            images.append(image_batch)
            labels.append(label_batch)
        if not images:
            raise UserError(
                f"TFDS dataset {_shown(spec.location)} split {_shown(split)} of source "
                f"{_shown(name)} is empty: use a dataset with images in both splits"
            )
        arrays[split] = (np.concatenate(images), np.concatenate(labels))
    return arrays


def _load_folder(spec: SourceSpec, name: str, cache_dir: str):
    """Images from a directory tree of PNG/JPEG files.

    Layout: if the folder has both `train/` and `test/`, those are the splits, with
    `validation/` as the third if present, else validation carved from `train/` by
    `_held_out(relative path, VALIDATION)`; otherwise every image under the folder is split by
    its relative path: test if `_held_out(path, TEST)`, else validation if
    `_held_out(path, VALIDATION)`, else train (about 64/16/20). Relative paths are taken from
    the folder, with '/' separators. Within a split, if every immediate subfolder is named by an
    integer and no image sits directly in the split folder, the subfolder names are the labels
    (`train/3/x.png` has label 3); otherwise there are no labels. Order is fixed: within each
    folder, its files by name, then its subfolders by name. Files and folders whose name starts
    with '.' (e.g. .ipynb_checkpoints) and files with other extensions are skipped. A FIFO,
    socket or device named like an image is an error, not skipped (it is never opened, so it
    cannot block the run): skipping it would silently drop an image the folder claims to hold.

    Pixels (`aur_tf.images.decode`): 8-bit gray -> /255 with C = 1, 16-bit gray PNG -> /65535
    with C = 1, RGB -> /255 with C = 3; alpha is dropped (RGBA -> RGB, LA -> L: transparent pixels
    keep their stored colour); palette images are converted to RGB. Every image must have the
    same H, W and C.

    Symlinks are never followed out of the folder: one that resolves outside it is an error, and
    symlinked folders inside it are not descended into (their targets are already walked).
    """
    root = os.path.realpath(os.path.expanduser(spec.location))
    if not os.path.isdir(root):
        raise UserError(
            f"image folder {_shown(spec.location)} of source {_shown(name)} does not "
            f"exist or is not a directory: check the path"
        )
    present = {split: os.path.isdir(os.path.join(root, split)) for split in SPLITS}
    if present["train"] != present["test"] or (present["validation"] and not present["train"]):
        has = [split for split in SPLITS if present[split]]
        raise UserError(
            f"image folder {_shown(root)} of source {_shown(name)} has "
            f"{'/, '.join(has)}/ but not both train/ and test/: add the missing ones, "
            "or move all images out of them for an automatic split"
        )
    files = {split: [] for split in SPLITS}
    try:
        if present["train"]:
            for split in SPLITS:
                if present[split]:
                    files[split] = _list_images(root, os.path.join(root, split), name)
            if not present["validation"]:
                pooled, files["train"] = files["train"], []
                for path, label in pooled:
                    held_out = _held_out(_relative_key(root, path), VALIDATION)
                    files["validation" if held_out else "train"].append((path, label))
        else:
            for path, label in _list_images(root, root, name):
                key = _relative_key(root, path)
                split = (
                    "test"
                    if _held_out(key, TEST)
                    else "validation"
                    if _held_out(key, VALIDATION)
                    else "train"
                )
                files[split].append((path, label))
    # Unreadable folders, or links that cannot be resolved (e.g. into another user's /proc).
    except OSError as error:
        raise UserError(
            f"cannot list image folder {_shown(root)} of source {_shown(name)} "
            f"({error}): make it readable, or remove what cannot be read"
        ) from error
    arrays = {}
    for split, split_files in files.items():
        if not split_files:
            raise UserError(
                f"image folder {_shown(root)} of source {_shown(name)} has no {split} "
                "images (.png, .jpg, .jpeg): add images, or use train/ and test/ "
                "subfolders"
            )
        labels = [label for _, label in split_files]
        arrays[split] = (
            _stack_images([path for path, _ in split_files], name),
            None if None in labels else np.array(labels, dtype=np.int64),
        )
    return arrays


def _relative_key(root: str, path: str) -> str:
    return os.path.relpath(path, root).replace(os.sep, "/")


def _list_images(root: str, top: str, name: str) -> list[tuple[str, int | None]]:
    """(path, label or None) of the image files under top (a split folder inside root)."""
    _check_inside(root, top, name)
    entries = sorted(entry for entry in os.listdir(top) if not entry.startswith("."))
    subfolders = [entry for entry in entries if os.path.isdir(os.path.join(top, entry))]
    labelled = (
        bool(subfolders)
        and all(entry.isascii() and entry.isdigit() for entry in subfolders)
        and not any(_is_image_name(entry) for entry in entries if entry not in subfolders)
    )
    found = []
    for directory, dirnames, filenames in os.walk(top, followlinks=False):
        # Sorting in place fixes os.walk's descent order; pruning hides dot-folders from it.
        dirnames[:] = sorted(entry for entry in dirnames if not entry.startswith("."))
        for entry in dirnames + filenames:
            if os.path.islink(os.path.join(directory, entry)):
                _check_inside(root, os.path.join(directory, entry), name)
        for entry in sorted(filenames):
            if entry.startswith(".") or not _is_image_name(entry):
                continue
            path = os.path.join(directory, entry)
            label = int(os.path.relpath(path, top).split(os.sep)[0]) if labelled else None
            found.append((path, label))
    return found


def _is_image_name(entry: str) -> bool:
    return entry.lower().endswith(_IMAGE_EXTENSIONS)


def _check_inside(root: str, path: str, name: str) -> None:
    target = os.path.realpath(path)
    if os.path.commonpath([root, target]) != root:
        raise UserError(
            f"{_shown(path)} in the image folder of source {_shown(name)} links to "
            f"{_shown(target)}, outside the folder: copy the file into the folder "
            "instead of linking"
        )


def _stack_images(paths: list[str], name: str) -> np.ndarray:
    images = [_read_image(path, name) for path in paths]
    for path, image in zip(paths, images):
        if image.shape != images[0].shape:
            raise UserError(
                f"images of source {_shown(name)} differ in size: {_shown(paths[0])} "
                f"is {images[0].shape} but {_shown(path)} is {image.shape} (H, W, C): "
                f"resize them to one size and use one colour mode"
            )
    return np.stack(images)


def _read_image(path: str, name: str) -> np.ndarray:
    """One image as float32 [H, W, C] in [0, 1] (C = 1 for gray, 3 for colour)."""
    try:
        # A regular file only: a FIFO or device under an image's name would block or never end.
        with safe_io.open_regular(path) as file:
            return images.decode(file).pixels
    except safe_io.FileRefused as error:
        raise UserError(
            f"image {_shown(path)} of source {_shown(name)} {error}: replace it with "
            "an image file or delete it"
        ) from None
    except MemoryError:
        raise UserError(
            f"image {_shown(path)} of source {_shown(name)} is too large to decode in "
            "the free memory: resize it"
        ) from None
    except (OSError, images.ImageError) as error:
        raise UserError(
            f"cannot decode image {_shown(path)} of source {_shown(name)} ({error}): "
            f"replace or delete the file"
        ) from error
