"""Bad input wherever it enters ends the run with one line and exit status 2, damaging nothing.

Every case starts from a copy of a finished tiny run (`run/`, its source `data/digits.npz`),
breaks one thing, runs the command line in-process (the same `parse_flags` and `main` that
`main.py` runs, without paying for a TensorFlow start per case) and checks: exit status 2, exactly
one `error:` line that names the problem and its fix, no traceback, every file that existed before
byte-identical afterwards, and no `config.json` left in a fresh workdir (a corrected command must
not be refused as "a different run").
"""

import errno
import functools
import glob
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import zipfile

import numpy as np
import pytest
from absl import flags
from cli_helpers import ROOT, assert_one_line_error, snapshot, write_npz_source
from PIL import Image

import main  # noqa: F401  (defines the flags parsed here)
from aur_tf import cli, train_lib
from aur_tf.config import Config
from aur_tf.data import mnist_offline
from aur_tf.data.sources import SourceImages, load_source
from aur_tf.errors import UserError

# Every case runs the command line in a subprocess; fuzzing; root-only filesystems.
pytestmark = pytest.mark.slow

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
hnp = pytest.importorskip("hypothesis.extra.numpy")

NPZ = "data/digits.npz"
# A finished 2-step run; every case appends its own flags, later flags win.
BASE_ARGS = [
    f"--source_a=npz:{NPZ}?labels=0-4",
    f"--source_b=npz:{NPZ}?labels=5-9",
    "--workdir=run",
    "--cache_dir=cache",
    "--train_mixtures=16",
    "--test_mixtures=8",
    "--batch_pairs=4",
    "--mask_width=4",
    "--disc_width=4",
    "--train_steps=2",
    "--checkpoint_every=1",
    "--eval_every=2",
    "--log_every=1",
]
FRESH = "--workdir=fresh"


def write_digits(path, **changes):
    """The good source archive (40 train / 16 test 8x8 images), with `changes` applied."""
    write_npz_source(path, train_count=40, test_count=16, side=8, **changes)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("finished")
    (root / "data").mkdir()
    write_digits(root / NPZ)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        flags.FLAGS.unparse_flags()
        cli.parse_flags(["main.py", *BASE_ARGS])
        train_lib.train(cli.settings_from_flags(Config))
    return root


@pytest.fixture
def case(finished_run, tmp_path, monkeypatch):
    """A private copy of the finished run, as the working directory."""
    root = tmp_path / "case"
    shutil.copytree(finished_run, root, symlinks=True)
    monkeypatch.chdir(root)
    return root


@pytest.fixture
def no_hang():
    """Fails a test that blocks (on a FIFO, say) for a minute instead of letting it hang."""

    def give_up(signum, frame):
        raise TimeoutError("blocked for 60 s")

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


# --- setups: each breaks one thing in the case directory ------------------------------------


def replace_npz(**changes):
    return lambda root: write_digits(root / NPZ, **changes)


def write_bytes(relative, content):
    def setup(root):
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content(root) if callable(content) else content)

    return setup


def truncate(relative, keep=0.5):
    return write_bytes(
        relative,
        lambda root: (root / relative).read_bytes()[
            : int(len((root / relative).read_bytes()) * keep)
        ],
    )


def save_png(relative, array, mode=None):
    path_parts = relative.split("/")

    def setup(root):
        path = root.joinpath(*path_parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array, mode).save(path)

    return setup


def image_folder(*extra):
    """A valid 8x8 gray folder `data/imgs` with train/ and test/, plus `extra` setups.

    train/a.png is carved out for validation, train/e.png stays in train (`_held_out`).
    """
    gray = np.full((8, 8), 200, np.uint8)

    def setup(root):
        for name in ("train/a.png", "train/e.png", "test/a.png"):
            save_png(f"data/imgs/{name}", gray)(root)
        for step in extra:
            step(root)

    return setup


def both(*setups):
    def setup(root):
        for step in setups:
            step(root)

    return setup


def npy_bytes(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def png_bytes(array, mode=None, image_format="PNG"):
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format=image_format)
    return buffer.getvalue()


def damage_checkpoints(which, how):
    """Applies `how(path)` to the `which` file ('index' or 'data') of every checkpoint."""

    def setup(root):
        directory = root / "run" / "checkpoints"
        for path in sorted(directory.glob(f"ckpt-*.{'index' if which == 'index' else 'data-*'}")):
            how(path)

    return setup


def cut_half(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def flip_bytes(path):
    data = bytearray(path.read_bytes())
    for offset in range(0, len(data), 7):
        data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def only_a_garbage_state_file(root):
    directory = root / "run" / "checkpoints"
    for path in directory.glob("ckpt-*"):
        os.remove(path)
    (directory / "checkpoint").write_bytes(b"\xff")


def make_fifo(relative):
    return lambda root: os.mkfifo(root / relative)


def bind_socket(relative):
    def setup(root):
        # Bound by its path relative to the case directory (the working directory): a socket's
        # absolute path may exceed the 108 bytes that sockets allow.
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind(relative)

    return setup


def write_zip(relative, members):
    """An archive of `members` {name: bytes or a setup-time function of the case root}."""

    def setup(root):
        with zipfile.ZipFile(root / relative, "w") as archive:
            for name, content in members.items():
                archive.writestr(name, content(root) if callable(content) else content)

    return setup


def npy_header_only(shape):
    """A .npy whose header declares `shape` (uint8) but that holds 64 bytes of data."""
    header = f"{{'descr': '|u1', 'fortran_order': False, 'shape': {shape}, }}".ljust(117) + "\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header.encode() + bytes(64)


def undecodable(text):
    """`text` with bytes that are not UTF-8, as Python gives them in argv and file names."""
    return os.fsdecode(os.fsencode(text).replace(b"XX", b"\xff\xfe"))


FOLDER_A = ["--source_a=folder:data/imgs", FRESH]
RGB = np.zeros((8, 8, 3), np.uint8)
RGBA = np.zeros((8, 8, 4), np.uint8)
GRAY = np.full((8, 8), 100, np.uint8)

# (id, setup or None, extra flags, regex the error line must match)
CASES = [
    # -- flags
    ("unknown-flag", None, ["--no_such_flag=1"], r"no_such_flag.*--helpfull"),
    ("int-flag-text", None, ["--train_steps=many"], r"train_steps"),
    ("zero-steps", None, ["--train_steps=0"], r"--train_steps=0 must be a positive integer"),
    ("alpha-nan", None, ["--alpha=nan"], r"--alpha=nan .*finite"),
    ("beta-inf", None, ["--beta=inf"], r"--beta=inf .*finite"),
    ("lr-inf", None, ["--mask_learning_rate=inf"], r"--mask_learning_rate=inf .*finite"),
    ("lr-nan", None, ["--disc_learning_rate=nan"], r"--disc_learning_rate=nan"),
    ("energy-margin-1", None, ["--energy_margin=1"], r"--energy_margin=1.0 must be in \[0, 1\)"),
    ("energy-margin-nan", None, ["--energy_margin=nan"], r"--energy_margin=nan must be in"),
    ("beta-fade-negative", None, ["--beta_fade_steps=-1"], r"--beta_fade_steps=-1 must be in 0"),
    ("noise-negative", None, ["--instance_noise=-1"], r"--instance_noise=-1.0 must be finite"),
    (
        "disc-normalization-unknown",
        None,
        ["--disc_normalization=layer"],
        r"--disc_normalization=layer is not one of: batch, spectral",
    ),
    (
        "select-without-score",
        None,
        ["--select=unsupervised", "--unsupervised_mixtures=0"],
        r"--select=unsupervised .*--unsupervised_mixtures=0 turns off",
    ),
    (
        "average-with-select",
        None,
        ["--average_checkpoints=4", "--select=unsupervised", "--keep_checkpoints=4"],
        r"--average_checkpoints=4 averages .* --select=unsupervised picks one",
    ),
    (
        "average-more-than-kept",
        None,
        ["--average_checkpoints=8", "--keep_checkpoints=3"],
        r"--average_checkpoints=8 .* --keep_checkpoints=3 keeps fewer: raise it to 8",
    ),
    ("average-zero", None, ["--average_checkpoints=0"], r"--average_checkpoints=0 must be a pos"),
    ("seed-negative", None, ["--seed=-1", FRESH], r"--seed=-1 .*0 \.\. 4294967295"),
    ("seed-huge", None, ["--seed=99999999999999999999", FRESH], r"--seed=9+ .*0 \.\. 4294967295"),
    ("image-size", None, ["--image_size=48"], r"--image_size=48 is not one of: 32, 64"),
    ("channels-2", None, ["--channels=2"], r"--channels=2 is not one of: 1, 3"),
    ("channels-mismatch", None, ["--channels=3", FRESH], r"1 channel\(s\) but --channels=3"),
    ("batch-too-big", None, ["--batch_pairs=100"], r"--batch_pairs=100 needs 200 mixtures"),
    (
        "mixtures-too-many",
        None,
        ["--train_mixtures=900000000", FRESH],
        r"not enough memory for --train_mixtures=900000000 .*: lower them",
    ),
    # -- absurd sizes, refused before TensorFlow allocates anything
    (
        "mixtures-absurd",
        None,
        ["--train_mixtures=1000000000000", FRESH],
        r"--train_mixtures=1000000000000 is absurdly large: at most 1000000000",
    ),
    (
        "mask-width-absurd",
        None,
        ["--mask_width=100000", FRESH],
        r"not enough memory for .*--mask_width=100000 .*: lower them",
    ),
    ("disc-width-absurd", None, ["--disc_width=1000000", FRESH], r"not enough memory"),
    (
        "batch-absurd",
        None,
        ["--batch_pairs=500000000", "--train_mixtures=1000000000", FRESH],
        r"not enough memory for .*--batch_pairs=500000000",
    ),
    (
        "validation-mixtures-absurd",
        None,
        ["--validation_mixtures=999999999", FRESH],
        r"--validation_mixtures=999999999 .*need at least .* GB but .* GB are available",
    ),
    (
        "steps-absurd",
        None,
        ["--train_steps=100000000000000000000", FRESH],
        r"--train_steps=1+0+ is absurdly large",
    ),
    ("keep-absurd", None, ["--keep_checkpoints=10000000000"], r"--keep_checkpoints=.* absurdly"),
    ("stray-argument", None, ["stray"], r"unexpected arguments \['stray'\]"),
    ("flagfile-missing", None, ["--flagfile=data/none.cfg"], r"Unable to open flagfile"),
    ("flagfile-directory", None, ["--flagfile=data"], r"Unable to open flagfile"),
    ("workdir-empty", None, ["--workdir="], r"--workdir is empty"),
    (
        "cache-dir-is-file",
        None,
        [f"--cache_dir={NPZ}", "--source_a=mnist?labels=0-4", FRESH],
        r"cannot create cache dir .*writable --cache_dir",
    ),
    # -- source specs
    ("spec-empty", None, ["--source_a=", FRESH], r"empty source spec: use tfds"),
    ("spec-kind", None, ["--source_a=oops:x", FRESH], r"unknown source kind 'oops'"),
    ("spec-no-location", None, ["--source_a=npz:", FRESH], r"has no location: write npz:PATH"),
    ("spec-backwards", None, [f"--source_a=npz:{NPZ}?labels=5-2", FRESH], r"backwards: write 2-5"),
    ("spec-bad-label", None, [f"--source_a=npz:{NPZ}?labels=1e3", FRESH], r"bad label '1e3'"),
    ("spec-option", None, [f"--source_a=npz:{NPZ}?label=1", FRESH], r"unknown option 'label=1'"),
    ("spec-mnist-location", None, ["--source_a=mnist:/x", FRESH], r"takes no location"),
    ("spec-same-sources", None, [f"--source_a=npz:{NPZ}?labels=5-9", FRESH], r"must differ"),
    ("npz-missing", None, ["--source_a=npz:data/none.npz", FRESH], r"does not exist: check"),
    ("npz-is-directory", None, ["--source_a=npz:data", FRESH], r"not a file"),
    ("folder-is-file", None, [f"--source_a=folder:{NPZ}", FRESH], r"not a directory"),
    (
        "labels-select-nothing",
        None,
        [f"--source_a=npz:{NPZ}?labels=42", FRESH],
        r"\?labels=42 selects no train images .*labels are 0-9",
    ),
    # -- npz files (same command as the finished run: the file changed under it)
    ("npz-empty", write_bytes(NPZ, b""), [], r"cannot read npz file .*corrupt or not an \.npz"),
    ("npz-truncated", truncate(NPZ), [], r"cannot read npz file"),
    ("npz-garbage", write_bytes(NPZ, b"\x93NUMPY garbage" * 50), [], r"cannot read npz file"),
    (
        "npz-single-array",
        write_bytes(NPZ, lambda root: npy_bytes(np.zeros((2, 8, 8), np.uint8))),
        [],
        r"single array, not an \.npz",
    ),
    (
        "npz-pickled-objects",
        replace_npz(x_train=np.array([None, {}], dtype=object)),
        [],
        r"cannot read npz file .*(pickle|object)",
    ),
    (
        "npz-nan",
        replace_npz(x_train=np.full((40, 8, 8), np.nan, np.float32)),
        [],
        r"contain NaN or Inf: fix or drop",
    ),
    (
        "npz-inf",
        replace_npz(x_test=np.full((16, 8, 8), np.inf, np.float16)),
        [],
        r"contain NaN or Inf",
    ),
    (
        "npz-float-0-255",
        replace_npz(x_train=np.full((40, 8, 8), 255.0)),
        [],
        r"span \[255, 255\], not \[0, 1\]: rescale",
    ),
    (
        "npz-int64",
        replace_npz(x_train=np.zeros((40, 8, 8), np.int64)),
        [],
        r"are int64: store uint8 0\.\.255 or float in \[0, 1\]",
    ),
    ("npz-uint16", replace_npz(x_train=np.zeros((40, 8, 8), np.uint16)), [], r"are uint16"),
    ("npz-bool", replace_npz(x_train=np.zeros((40, 8, 8), bool)), [], r"are bool"),
    ("npz-complex", replace_npz(x_train=np.zeros((40, 8, 8), complex)), [], r"are complex128"),
    (
        "npz-rank-2",
        replace_npz(x_train=np.zeros((40, 64), np.uint8)),
        [],
        r"shape \(40, 64\): expected \[N, H, W\] or \[N, H, W, C\]",
    ),
    (
        "npz-rank-5",
        replace_npz(x_train=np.zeros((40, 1, 8, 8, 1), np.uint8)),
        [],
        r"expected \[N, H, W\] or \[N, H, W, C\]",
    ),
    ("npz-scalar", replace_npz(x_train=np.uint8(3)), [], r"have shape \(\)"),
    (
        "npz-channels-first",
        replace_npz(x_train=np.zeros((40, 1, 8, 8), np.uint8)),
        [],
        r"transpose channels-first",
    ),
    (
        "npz-2-channels",
        replace_npz(
            x_train=np.zeros((40, 8, 8, 2), np.uint8), x_test=np.zeros((16, 8, 8, 2), np.uint8)
        ),
        [],
        r"2 channel\(s\) but --channels=1",
    ),
    (
        "npz-rgba-into-gray",
        replace_npz(
            x_train=np.zeros((40, 8, 8, 4), np.uint8), x_test=np.zeros((16, 8, 8, 4), np.uint8)
        ),
        [],
        r"4 channel\(s\) but --channels=1",
    ),
    (
        "npz-no-images",
        replace_npz(x_train=np.zeros((0, 8, 8), np.uint8), y_train=np.zeros(0, np.int64)),
        [],
        r"has no train images",
    ),
    (
        "npz-zero-width",
        replace_npz(x_train=np.zeros((40, 8, 0), np.uint8)),
        [],
        r"train images of source .* are empty \(shape \(40, 8, 0, 1\)\)",
    ),
    (
        "npz-split-sizes",
        replace_npz(x_test=np.zeros((16, 9, 8), np.uint8)),
        [],
        r"train images are \(8, 8, 1\) but test images are \(9, 8, 1\)",
    ),
    ("npz-no-x-test", replace_npz(x_test=None), [], r"lacks x_test"),
    ("npz-no-labels", replace_npz(y_train=None), [], r"has no train labels, so \?labels"),
    (
        "npz-float-labels",
        replace_npz(y_train=np.zeros(40)),
        [],
        r"expected integers of shape \[40\]",
    ),
    (
        "npz-short-labels",
        replace_npz(y_train=np.zeros(39, np.int64)),
        [],
        r"int64 \(39,\): expected integers of shape \[40\]",
    ),
    (
        "npz-test-labels-miss",
        replace_npz(y_test=np.zeros(16, np.int64)),
        [],
        r"selects no test images",
    ),
    # -- image folders
    (
        "png-empty",
        image_folder(write_bytes("data/imgs/train/b.png", b"")),
        FOLDER_A,
        r"cannot decode image .*b\.png.*replace or delete",
    ),
    (
        "png-truncated",
        image_folder(
            write_bytes(
                "data/imgs/train/b.png",
                lambda root: png_bytes(np.arange(64, dtype=np.uint8).reshape(8, 8))[:40],
            )
        ),
        FOLDER_A,
        r"cannot decode image .*b\.png",
    ),
    (
        "png-garbage",
        image_folder(write_bytes("data/imgs/train/b.png", b"\x89PNG\r\n\x1a\n" * 9)),
        FOLDER_A,
        r"cannot decode image",
    ),
    (
        "gif-named-png",
        image_folder(
            write_bytes("data/imgs/train/b.png", lambda root: png_bytes(GRAY, image_format="GIF"))
        ),
        FOLDER_A,
        r"cannot decode image",
    ),
    (
        "jpeg-truncated",
        image_folder(
            write_bytes(
                "data/imgs/test/b.jpg", lambda root: png_bytes(RGB + 90, image_format="JPEG")[:100]
            )
        ),
        FOLDER_A,
        r"cannot decode image",
    ),
    (
        "rgba-png-into-gray",
        both(
            *(
                save_png(f"data/imgs/{name}", RGBA, "RGBA")
                for name in ("train/a.png", "train/e.png", "test/a.png")
            )
        ),
        FOLDER_A,
        r"3 channel\(s\) but --channels=1",
    ),
    (
        "rgba-and-gray-pngs",
        image_folder(save_png("data/imgs/train/b.png", RGBA, "RGBA")),
        FOLDER_A,
        r"differ in size.*one colour mode",
    ),
    (
        "png-sizes-differ",
        image_folder(save_png("data/imgs/train/b.png", np.zeros((9, 8), np.uint8))),
        FOLDER_A,
        r"differ in size",
    ),
    ("folder-empty", lambda root: (root / "data/imgs").mkdir(), FOLDER_A, r"has no train images"),
    (
        "folder-no-test",
        save_png("data/imgs/train/a.png", GRAY),
        FOLDER_A,
        r"has train/ but not both train/ and test/",
    ),
    # train/3/d.png is carved out for validation, train/3/a.png stays in train.
    (
        "folder-labels-miss",
        both(
            save_png("data/imgs/train/3/a.png", GRAY),
            save_png("data/imgs/train/3/d.png", GRAY),
            save_png("data/imgs/test/3/a.png", GRAY),
        ),
        ["--source_a=folder:data/imgs?labels=1", FRESH],
        r"selects no train images .*labels are 3",
    ),
    (
        "folder-symlink-out",
        image_folder(lambda root: os.symlink(root / NPZ, root / "data/imgs/train/b.png")),
        FOLDER_A,
        r"outside the folder",
    ),
    # -- files that are not regular files, where an input file is expected: never opened
    (
        "png-fifo",
        image_folder(make_fifo("data/imgs/train/b.png")),
        FOLDER_A,
        r"image '.*/train/b\.png' of source 'folder:data/imgs' is a FIFO, not a regular file",
    ),
    (
        "jpeg-fifo-in-labels",
        both(
            save_png("data/imgs/train/3/a.png", GRAY),
            save_png("data/imgs/train/3/d.png", GRAY),
            save_png("data/imgs/test/3/a.png", GRAY),
            make_fifo("data/imgs/test/3/b.jpg"),
        ),
        FOLDER_A,
        r"test/3/b\.jpg' of source .* is a FIFO",
    ),
    (
        "png-socket",
        image_folder(bind_socket("data/imgs/test/b.png")),
        FOLDER_A,
        r"b\.png' of source .* is a socket",
    ),
    (
        "npz-fifo",
        make_fifo("data/f.npz"),
        ["--source_a=npz:data/f.npz", FRESH],
        r"cannot read npz file 'data/f\.npz' .*: is a FIFO",
    ),
    (
        "flagfile-fifo",
        make_fifo("data/f.cfg"),
        ["--flagfile=data/f.cfg", FRESH],
        r"flagfile data/f\.cfg: it is a FIFO",
    ),
    (
        "flagfile-nested-fifo",
        both(make_fifo("data/f.cfg"), write_bytes("data/outer.cfg", b"--flagfile=data/f.cfg\n")),
        ["--flagfile", "data/outer.cfg", FRESH],
        r"flagfile data/f\.cfg: it is a FIFO",
    ),
    # -- npz members that are not arrays, or whose header lies about their size
    (
        "npz-header-huge",
        write_zip(
            "data/huge.npz",
            {
                "x_train.npy": npy_header_only((10**11, 8, 8)),
                "x_test.npy": npy_bytes(np.zeros((4, 8, 8), np.uint8)),
            },
        ),
        ["--source_a=npz:data/huge.npz", FRESH],
        r"array x_train: its header declares uint8 \[100000000000, 8, 8\] .* truncated or corrupt",
    ),
    (
        "npz-text-member",
        write_zip(
            "data/text.npz",
            {"x_train": b"not an array", "x_test.npy": npy_bytes(np.zeros((4, 8, 8), np.uint8))},
        ),
        ["--source_a=npz:data/text.npz", FRESH],
        r"member x_train is not a \.npy array",
    ),
    # -- names that are not valid UTF-8 or hold newlines: printed as one printable line
    (
        "png-undecodable-name",
        image_folder(write_bytes(undecodable("data/imgs/test/XX.png"), b"garbage")),
        FOLDER_A,
        r"cannot decode image '.*/test/\\xff\\xfe\.png' .*not a PNG or JPEG image",
    ),
    (
        "npz-undecodable-newline-name",
        None,
        [undecodable("--source_a=npz:data/XX\n.npz"), FRESH],
        r"npz file 'data/\\xff\\xfe\\n\.npz' .*does not exist",
    ),
    (
        "npz-newline-name-channels",
        lambda root: shutil.copy(root / NPZ, root / "data" / "a\nb.npz"),
        ["--source_a=npz:data/a\nb.npz?labels=0-4", "--channels=3", FRESH],
        r"source 'npz:data/a\\nb\.npz\?labels=0-4' has 1 channel\(s\) but --channels=3",
    ),
    (
        "workdir-undecodable",
        None,
        [undecodable("--workdir=runXX")],
        r"--workdir=run\\xff\\xfe is not valid UTF-8",
    ),
    (
        "workdir-nul-in-flagfile",
        write_bytes("data/nul.cfg", b"--workdir=a\0b\n"),
        ["--flagfile=data/nul.cfg"],
        r"--workdir=a\\x00b contains a NUL character",
    ),
    (
        "flagfile-undecodable",
        write_bytes("data/bad.cfg", b"--mask_width=4\n# caf\xe9\n"),
        ["--flagfile=data/bad.cfg", FRESH],
        r"flagfile data/bad\.cfg: not UTF-8 text",
    ),
    (
        "flag-name-undecodable",
        None,
        [undecodable("--XX=1"), FRESH],
        r"Unknown command line flag '\\xff\\xfe'",
    ),
    (
        "folder-unresolvable-link",
        image_folder(lambda root: os.symlink("/proc/1/cwd", root / "data/imgs/train/b.png")),
        FOLDER_A,
        r"cannot list image folder .*make it readable|outside the folder",
    ),
    (
        "spec-nul-in-flagfile",
        write_bytes("data/nul.cfg", b"--source_a=folder:data/x\0y\n"),
        ["--flagfile=data/nul.cfg", FRESH],
        r"contains a NUL character",
    ),
    # -- the workdir
    ("workdir-is-file", None, [f"--workdir={NPZ}"], r"cannot write to --workdir=.*writable"),
    ("workdir-under-file", None, [f"--workdir={NPZ}/run"], r"cannot write to --workdir"),
    (
        "checkpoints-is-file",
        write_bytes("fresh/checkpoints", b"not a folder"),
        [FRESH],
        r"fresh/checkpoints is not a directory",
    ),
    (
        "tensorboard-is-file",
        write_bytes("fresh/tensorboard", b"not a folder"),
        [FRESH],
        r"fresh/tensorboard is not a directory",
    ),
    (
        "config-json-garbage",
        write_bytes("run/config.json", b"{not json"),
        [],
        r"run/config\.json is not readable JSON",
    ),
    ("config-json-truncated", truncate("run/config.json"), [], r"config\.json is not readable"),
    ("config-json-list", write_bytes("run/config.json", b"[1, 2]"), [], r"config\.json"),
    ("config-other-run", None, ["--mask_width=8"], r"holds a run made with --mask_width=4"),
    (
        "eval-json-garbage",
        write_bytes("run/eval.json", b"\x00\x01"),
        ["--train_steps=3"],
        r"run/eval\.json is not readable JSON",
    ),
    (
        "eval-json-history",
        write_bytes("run/eval.json", b'{"history": [{"psnr_db": 1}]}'),
        ["--train_steps=3"],
        r"eval\.json",
    ),
    (
        "eval-json-machines",
        write_bytes("run/eval.json", b'{"history": [], "machines": "x"}'),
        ["--train_steps=3"],
        r"eval\.json: \w+ is missing or of the wrong type",
    ),
    # -- checkpoints (the newest is damaged too, so nothing is left to fall back to)
    (
        "ckpt-data-truncated",
        damage_checkpoints("data", cut_half),
        [],
        r"cannot restore .*checkpoints.*damaged",
    ),
    ("ckpt-data-flipped", damage_checkpoints("data", flip_bytes), [], r"cannot restore"),
    ("ckpt-index-garbage", damage_checkpoints("index", flip_bytes), [], r"cannot restore"),
    (
        "ckpt-index-empty",
        damage_checkpoints("index", lambda path: path.write_bytes(b"")),
        [],
        r"cannot restore",
    ),
    ("ckpt-data-missing", damage_checkpoints("data", os.remove), [], r"cannot restore"),
    (
        "ckpt-state-file-alone",
        only_a_garbage_state_file,
        [],
        r"checkpoint is unreadable and there are no checkpoint files next to it: delete it",
    ),
    (
        "ckpt-other-model",
        lambda root: os.remove(root / "run/config.json"),
        ["--mask_width=8"],
        r"cannot restore .*do not match this run's settings",
    ),
]


@pytest.mark.parametrize(
    "setup, args, expected", [case[1:] for case in CASES], ids=[case[0] for case in CASES]
)
def test_bad_input_is_refused_in_one_line(case, run_cli, no_hang, setup, args, expected):
    if setup:
        setup(case)
    before = snapshot(case)
    status, _, err = run_cli(*BASE_ARGS, *args)
    assert_one_line_error(status, err, expected)
    error = next(line for line in err.splitlines() if line.startswith("error: "))
    assert error.isprintable(), error
    after = snapshot(case)
    assert {path: after.get(path) for path in before} == before
    assert not (case / "fresh" / "config.json").exists()


WORKER = {"worker": ["localhost:20001", "localhost:20002"]}


@pytest.mark.parametrize(
    "tf_config, expected",
    [
        (
            {"cluster": WORKER, "task": {"type": "worker", "index": 2}},
            r"task index 2 is not an integer in 0 \.\. 1",
        ),
        ({"cluster": WORKER, "task": {"type": "worker", "index": -1}}, r"task index -1"),
        ({"cluster": WORKER, "task": {"type": "worker", "index": "0"}}, r"task index \"0\""),
        (
            {"cluster": {"worker": "localhost:20001"}, "task": {"type": "worker", "index": 0}},
            r"cluster 'worker' is \"localhost:20001\": give a non-empty list of host:port",
        ),
        (
            {"cluster": WORKER, "task": {"type": "chief", "index": 0}},
            r"\"type\" must be a role of the cluster, one of worker",
        ),
        (
            {"cluster": {"ps": ["localhost:20001"]}, "task": {"type": "ps", "index": 0}},
            r"role 'ps': --strategy=multi_worker takes chief and worker only",
        ),
        (
            {
                "cluster": {**WORKER, "chief": ["localhost:20003", "localhost:20004"]},
                "task": {"type": "chief", "index": 0},
            },
            r"has 2 chiefs: at most one",
        ),
        (
            {
                "cluster": {"worker": ["localhost:20001", "localhost:20001"]},
                "task": {"type": "worker", "index": 0},
            },
            r"lists localhost:20001 more than once",
        ),
        (
            {"cluster": {"worker": ["localhost"]}, "task": {"type": "worker", "index": 0}},
            r"address 'localhost': write host:port",
        ),
        ({"cluster": WORKER, "task": {"index": 0}}, r"\"type\" must be a role of the cluster"),
    ],
    ids=[
        "index-out-of-range",
        "index-negative",
        "index-text",
        "addresses-not-a-list",
        "missing-chief",
        "ps-role",
        "two-chiefs",
        "same-address-twice",
        "no-port",
        "no-task-type",
    ],
)
def test_bad_cluster_config_is_refused_in_one_line(
    case, run_cli, no_hang, monkeypatch, tf_config, expected
):
    """$TF_CONFIG is checked before TensorFlow reads it, which would raise a traceback or wait
    forever for a task that cannot exist."""
    monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    before = snapshot(case)
    status, _, err = run_cli(*BASE_ARGS, "--strategy=multi_worker", FRESH)
    assert_one_line_error(status, err, r"\$TF_CONFIG.*" + expected + r".*see docs/scaling-out\.md")
    assert snapshot(case) == before


# --- a full disk ----------------------------------------------------------------------------

NO_SPACE = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _open_path(fd):
    return os.readlink(f"/proc/self/fd/{fd}")


def _fail_fsync_of(name, monkeypatch):
    real_fsync = os.fsync

    # The file is written under a temporary name holding its own, then renamed.
    def fsync(fd):
        if name in os.path.basename(_open_path(fd)):
            raise NO_SPACE
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def _fail_samples_write(monkeypatch):
    def savez_compressed(file, **arrays):
        file.write(b"part of an archive")
        raise NO_SPACE

    monkeypatch.setattr(np, "savez_compressed", savez_compressed)


# The finished run is evaluated again: eval.json, then samples.npz (eval.json then legitimately
# records the new evaluation).
@pytest.mark.parametrize(
    "full_at, fail, written_before",
    [
        ("config.json", functools.partial(_fail_fsync_of, "config.json"), ()),
        ("eval.json", functools.partial(_fail_fsync_of, "eval.json"), ()),
        ("samples.npz", _fail_samples_write, ("run/eval.json",)),
    ],
    ids=["config.json", "eval.json", "samples.npz"],
)
def test_full_disk_on_a_file_write_keeps_the_old_file(
    case, run_cli, monkeypatch, full_at, fail, written_before
):
    fail(monkeypatch)
    before = snapshot(case)
    status, _, err = run_cli(*BASE_ARGS)
    assert_one_line_error(
        status,
        err,
        rf"cannot write .*run/{re.escape(full_at)} \(No space "
        rf"left on device\): free disk space",
    )
    after = snapshot(case)
    kept = {path: after.get(path) for path in before if path not in written_before}
    assert kept == {path: before[path] for path in kept}
    assert not glob.glob("run/*.tmp") + glob.glob("run/.*.tmp")


def test_full_disk_on_a_checkpoint_keeps_the_last_one(case, run_cli, monkeypatch):
    import tensorflow as tf

    def save(manager, checkpoint_number=None, **kwargs):
        # What TensorFlow raises when the disk fills up mid-checkpoint (seen on a full tmpfs).
        raise tf.errors.ResourceExhaustedError(
            None,
            None,
            f"{manager.directory}/ckpt-{checkpoint_number}_temp/part-00000-of-00001."
            "data-00000-of-00001.tempstate1; No space left on device",
        )

    monkeypatch.setattr(tf.train.CheckpointManager, "save", save)
    before = snapshot(case)
    status, _, err = run_cli(*BASE_ARGS, "--train_steps=3")
    assert_one_line_error(
        status,
        err,
        r"cannot write checkpoint .*ckpt-3 \(No space left on "
        r"device\): free disk space.*resume from the last "
        r"checkpoint",
    )
    after = snapshot(case)
    # The settings file legitimately records the new --train_steps; nothing else changed.
    assert json.loads(after.pop("run/config.json"))["train_steps"] == 3
    del before["run/config.json"]
    assert {path: after.get(path) for path in before} == before


@pytest.fixture
def tiny_disk(tmp_path):
    """A 2 MB tmpfs (skipped where mounting is not allowed), unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if (
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
            capture_output=True,
        ).returncode
        != 0
    ):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mount_point
    subprocess.run(["umount", "-l", str(mount_point)], check=True)


def _fill(disk, leave_bytes):
    free = shutil.disk_usage(disk).free
    with open(disk / "filler", "wb") as f:
        f.write(b"\0" * max(free - leave_bytes, 0))


@pytest.mark.parametrize(
    "leave_kb, args, expected",
    [
        (0, [], r"cannot write (to --workdir=run|.*config\.json) \(No space left on device\)"),
        (120, ["--train_steps=3"], r"cannot write .*\(No space left on device\): free disk space"),
    ],
    ids=["full-from-the-start", "full-mid-training"],
)
def test_really_full_disk(finished_run, tiny_disk, run_cli, monkeypatch, leave_kb, args, expected):
    root = tiny_disk / "case"
    shutil.copytree(finished_run, root, symlinks=True)
    monkeypatch.chdir(root)
    _fill(tiny_disk, leave_kb * 1024)
    before = snapshot(root)
    status, _, err = run_cli(*BASE_ARGS, *args)
    assert_one_line_error(status, err, expected)
    after = snapshot(root)
    if args:  # training started, so the settings file records the new --train_steps
        assert json.loads(after.pop("run/config.json"))["train_steps"] == 3
        del before["run/config.json"]
    assert {path: after.get(path) for path in before} == before
    os.remove(tiny_disk / "filler")
    status, out, err = run_cli(*BASE_ARGS, *args)
    assert status == 0, err


# --- damaged checkpoints that still leave a good one ----------------------------------------


def torn_newer_checkpoint(directory):
    """What a crash while writing ckpt-3 can leave: the state file still names ckpt-2."""
    (directory / "ckpt-3_temp").mkdir()
    (directory / "ckpt-3.data-00000-of-00001").write_bytes(b"\0" * 100)
    (directory / "ckpt-3.index").write_bytes(b"")


@pytest.mark.parametrize(
    "damage, resumed_step",
    [
        (torn_newer_checkpoint, 2),
        (lambda directory: cut_half(directory / "ckpt-2.data-00000-of-00001"), 1),
        (lambda directory: flip_bytes(directory / "ckpt-2.index"), 1),
        (lambda directory: (directory / "checkpoint").write_bytes(b"\xff garbage"), 2),
        (lambda directory: os.remove(directory / "checkpoint"), 2),
    ],
    ids=[
        "crash-while-writing",
        "newest-data-truncated",
        "newest-index-garbage",
        "state-file-garbage",
        "state-file-missing",
    ],
)
def test_damaged_checkpoint_falls_back_to_the_newest_good_one(
    case, run_cli, caplog, damage, resumed_step
):
    damage(case / "run" / "checkpoints")
    caplog.set_level("INFO", logger="aur_tf")
    status, out, err = run_cli(*BASE_ARGS, "--train_steps=3")
    assert status == 0, err
    assert f"resumed from run/checkpoints/ckpt-{resumed_step} at step {resumed_step}" in caplog.text
    if resumed_step == 1:
        assert re.search(
            r"checkpoint run/checkpoints/ckpt-2 is unreadable \(.+\); trying "
            r"run/checkpoints/ckpt-1",
            caplog.text,
        )
    with open(case / "run" / "eval.json") as f:
        results = json.load(f)
    assert results["step"] == 3
    assert [h["step"] for h in results["history"]] == [2, 3]


# --- fuzzing --------------------------------------------------------------------------------


def _check_loaded_or_refused(load):
    """`load()` returns good images or raises a one-line UserError; anything else fails."""
    try:
        images = load()
    except UserError as error:
        assert str(error) and "\n" not in str(error)
        return
    assert isinstance(images, SourceImages)
    for split in (images.train, images.test):
        assert split.dtype == np.float32 and split.ndim == 4 and split.size
        assert np.isfinite(split).all() and 0 <= split.min() and split.max() <= 1


@pytest.fixture(scope="module")
def odd_files(tmp_path_factory):
    """Paths a source spec may point at: good, empty, truncated, garbage, folders, links."""
    root = tmp_path_factory.mktemp("odd")
    write_digits(root / "good.npz")
    (root / "empty.npz").write_bytes(b"")
    (root / "cut.npz").write_bytes((root / "good.npz").read_bytes()[:300])
    (root / "garbage.npz").write_bytes(b"PK\x03\x04" + b"\x00" * 100)
    (root / "one.npy").write_bytes(npy_bytes(np.zeros((2, 3, 3), np.uint8)))
    for split in ("train", "test"):
        for label in (1, 2):
            save_png(f"labelled/{split}/{label}/a.png", GRAY + label)(root)
    save_png("mixed/a.png", GRAY)(root)
    save_png("mixed/b.png", RGBA, "RGBA")(root)
    (root / "mixed" / "c.png").write_bytes(b"")
    for index in range(6):
        save_png(f"flat/{index}.png", np.full((5, 7), index * 40, np.uint16))(root)
    (root / "nested").mkdir()
    os.symlink(root / "good.npz", root / "nested" / "link.png")
    os.symlink(root / "loop", root / "loop")
    return root


SPEC_KINDS = ["npz:", "folder:", "mnist", "tfds_like:", "", "npz", "folder:./"]
ODD_NAMES = [
    "good.npz",
    "empty.npz",
    "cut.npz",
    "garbage.npz",
    "one.npy",
    "labelled",
    "mixed",
    "flat",
    "nested",
    "loop",
    "missing",
    ".",
    "labelled/train",
    "good.npz/x",
]


def test_fuzzed_source_specs_load_or_are_refused(odd_files, monkeypatch):
    """SourceSpec.parse + load_source on specs built from odd paths and label lists."""
    fake_mnist = np.linspace(0, 1, 30 * 9, dtype=np.float32).reshape(30, 3, 3), np.arange(30) % 10
    monkeypatch.setattr(mnist_offline, "load_mnist", lambda cache_dir: fake_mnist * 3)
    monkeypatch.chdir(odd_files)
    specs = st.builds(
        lambda kind, location, labels: f"{kind}{location}{labels}",
        st.sampled_from(SPEC_KINDS),
        st.one_of(st.sampled_from(ODD_NAMES), st.text(max_size=6)),
        st.one_of(
            st.just(""),
            st.builds(
                lambda text: "?labels=" + text, st.text(alphabet="0123456789-, ", max_size=8)
            ),
        ),
    )

    @hypothesis.settings(max_examples=300, deadline=None, database=None)
    @hypothesis.given(specs)
    @hypothesis.example("folder:\0")  # found by this test: a ValueError escaped
    def check(spec):
        _check_loaded_or_refused(lambda: load_source(spec, cache_dir=str(odd_files / "cache")))

    check()


def test_fuzzed_npz_contents_load_or_are_refused(tmp_path):
    """Arrays of any dtype, rank and value (NaN, Inf, huge, negative) written as x_train."""
    dtypes = st.sampled_from(
        [
            np.uint8,
            np.uint16,
            np.int8,
            np.int64,
            np.float16,
            np.float32,
            np.float64,
            np.bool_,
            np.complex64,
        ]
    )
    arrays = dtypes.flatmap(
        lambda dtype: hnp.arrays(
            dtype, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)
        )
    )
    labels = st.one_of(
        st.none(),
        hnp.arrays(
            st.sampled_from([np.int64, np.float32, np.uint8]),
            hnp.array_shapes(max_dims=2, max_side=5),
        ),
    )

    @hypothesis.settings(max_examples=200, deadline=None, database=None)
    @hypothesis.given(arrays, labels, st.booleans())
    def check(x_train, y_train, filtered):
        path = tmp_path / "fuzz.npz"
        arrays = dict(
            x_train=x_train, x_test=np.zeros((2, 3, 3), np.uint8), y_test=np.array([1, 2])
        )
        if y_train is not None:
            arrays["y_train"] = y_train
        np.savez(path, **arrays)
        spec = f"npz:{path}" + ("?labels=1-3" if filtered else "")
        _check_loaded_or_refused(lambda: load_source(spec, cache_dir=str(tmp_path)))

    check()


def test_fuzzed_source_flags_through_the_command_line(case, run_cli):
    """Odd --source_a values through flag parsing, Config and loading: exit 2, one line."""
    (case / "data" / "odd.png").write_bytes(b"")

    @hypothesis.settings(max_examples=40, deadline=None, database=None)
    @hypothesis.given(
        st.builds(
            lambda kind, location, query: f"{kind}{location}{query}",
            # Not mnist: it would fetch its wheel from the package index.
            st.sampled_from(["npz:", "folder:", "", "zip:"]),
            st.sampled_from(["data", NPZ + "x", "data/odd.png", "run", "", "?"]),
            st.sampled_from(["", "?labels=", "?labels=3-1", "?x=1", "?labels=7"]),
        )
    )
    def check(spec):
        before = snapshot(case)
        # source_b is missing, so a source_a that happens to be valid still stops before training.
        status, _, err = run_cli(
            *BASE_ARGS, f"--source_a={spec}", "--source_b=npz:data/missing.npz", FRESH
        )
        assert_one_line_error(status, err, r".")
        assert snapshot(case) == before

    check()


# --- safe loading ---------------------------------------------------------------------------


def test_no_shell_and_no_unpickling_of_data():
    """Subprocesses get argument lists; archives are read with allow_pickle=False; the only
    unpickler is mnist_offline's allow-list one."""
    import ast

    paths = [os.path.join(ROOT, "main.py")] + glob.glob(
        os.path.join(ROOT, "aur_tf", "**", "*.py"), recursive=True
    )
    for path in paths:
        with open(path) as f:
            calls = [node for node in ast.walk(ast.parse(f.read())) if isinstance(node, ast.Call)]
        for call in calls:
            name = ast.unparse(call.func)
            keywords = {k.arg: ast.unparse(k.value) for k in call.keywords}
            assert keywords.get("shell", "False") == "False", (path, name)
            assert name not in ("pickle.load", "pickle.loads", "os.system", "eval", "exec"), (
                path,
                name,
            )
            if name in ("np.load", "numpy.load"):
                assert keywords.get("allow_pickle") == "False", (path, name)
