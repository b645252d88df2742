"""Tests for export/separate.py: inputs of every kind, bad inputs, outputs, and the real CLI."""

import io
import os
import pickle
import re
import socket
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from cli_helpers import snapshot
from PIL import Image

from aur_tf.separator import Separator
from export import separate as separate_cli

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
IMAGE_SIZE = 32  # of the shared run built in conftest.py


@pytest.fixture(scope="module")
def separator(exported):
    return Separator.load(exported.onnx_path, provider="cpu")


def _pixels(mixture):
    return np.round(mixture[..., 0] * 255).astype(np.uint8)


def _expected_png(separator, image):
    """What `<stem>_a.png` / `_b.png` must hold for an `[H, W, C]` mixture in [0, 1]."""
    return [
        np.round(np.clip(s, 0, 1) * 255).astype(np.uint8)[..., 0] for s in separator.separate(image)
    ]


def _assert_pixels_close(path, expected):
    """PNG at `path` equals `expected` up to one 8-bit level (a rounding tie may flip)."""
    written = np.asarray(Image.open(path)).astype(int)
    assert written.shape == expected.shape
    assert np.abs(written - expected).max() <= 1


@pytest.fixture
def inputs(tmp_path, exported):
    """Good and bad inputs of every kind, by name."""
    mixtures = exported.mixtures
    folder = tmp_path / "in"
    (folder / "more").mkdir(parents=True)
    paths = {}

    def save_image(name, array, mode=None):
        paths[name] = folder / name
        Image.fromarray(array, mode).save(paths[name])

    save_image("good.png", _pixels(mixtures[0]))
    save_image("more/inside.jpg", _pixels(mixtures[1]))
    (folder / "more" / "notes.txt").write_text("not an image, skipped in folders")
    gray16 = np.round(mixtures[2, ..., 0] * 65535).astype(np.uint16)
    save_image("deep.png", gray16)
    rgba = np.dstack(
        [
            np.repeat(_pixels(mixtures[3])[..., None], 3, -1),
            np.full((IMAGE_SIZE, IMAGE_SIZE), 7, np.uint8),
        ]
    )
    save_image("rgba.png", rgba)
    save_image("small.png", np.zeros((28, 28), np.uint8))
    save_image("color.png", np.zeros((IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8))
    paths["corrupt.png"] = folder / "corrupt.png"
    paths["corrupt.png"].write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    paths["rows.npy"] = folder / "rows.npy"
    np.save(paths["rows.npy"], mixtures[:3, ..., 0])  # [N, H, W] for a 1-channel model
    paths["nan.npy"] = folder / "nan.npy"
    with_nan = mixtures[:2].copy()
    with_nan[1, 5, 5, 0] = np.nan
    np.save(paths["nan.npy"], with_nan)
    paths["keyed.npz"] = folder / "keyed.npz"
    np.savez(paths["keyed.npz"], mixtures=mixtures[:2], sources=np.zeros(3))
    paths["several.npz"] = folder / "several.npz"
    np.savez(paths["several.npz"], first=_pixels(mixtures[:2]), second=mixtures[2:3])
    paths["notes.txt"] = folder / "notes.txt"
    paths["notes.txt"].write_text("hello")
    return {name: str(path) for name, path in paths.items()}


def test_good_and_bad_inputs(separator, inputs, exported, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    said, complaints = [], []
    order = [
        "good.png",
        "small.png",
        "corrupt.png",
        "color.png",
        "nan.npy",
        "rows.npy",
        "keyed.npz",
        "several.npz",
        "deep.png",
        "rgba.png",
        "notes.txt",
    ]
    summary = separate_cli.separate_inputs(
        separator,
        [inputs[n] for n in order]
        + [os.path.dirname(inputs["more/inside.jpg"]), str(tmp_path / "missing.png")],
        str(out),
        batch_size=4,
        grid=True,
        say=said.append,
        complain=complaints.append,
    )

    reasons = {os.path.basename(k): v for k, v in summary.failures.items()}
    assert reasons == {
        "small.png": "image is 28x28 but the model takes 32x32: resize or pad it",
        "corrupt.png": reasons["corrupt.png"],
        "color.png": "image has 3 channel(s) but the model takes 1: convert it to grayscale",
        "nan.npy": "mixtures contain NaN or Inf",
        "notes.txt": "is not an image (.png, .jpg, .jpeg), folder, .npy or .npz",
        "missing.png": "does not exist",
    }
    assert reasons["corrupt.png"].startswith("cannot read the image (")
    assert complaints == [f"error: {k}: {v}" for k, v in summary.failures.items()]
    assert len(said) == 2 and "16-bit values scaled to [0, 1]" in said[0]
    assert "RGBA images: alpha dropped, converted to grayscale" in said[1]

    stems = [
        "good",
        "rows_0",
        "rows_1",
        "rows_2",
        "keyed_0",
        "keyed_1",
        "several_first_0",
        "several_first_1",
        "several_second_0",
        "deep",
        "rgba",
        "inside",
    ]
    assert summary.separated == len(stems)
    assert sorted(os.listdir(out)) == sorted(
        f"{s}_{k}.png" for s in stems for k in ("a", "b", "grid")
    )

    mixtures = exported.mixtures
    for stem, mixture in [
        ("good", mixtures[0]),
        ("rows_2", mixtures[2]),
        ("keyed_1", mixtures[1]),
        ("several_second_0", mixtures[2]),
    ]:
        if stem == "good":
            mixture = _pixels(mixture)[..., None] / np.float32(255)
        expected_a, expected_b = _expected_png(separator, mixture)
        _assert_pixels_close(out / f"{stem}_a.png", expected_a)
        _assert_pixels_close(out / f"{stem}_b.png", expected_b)
    good = _pixels(mixtures[0])[..., None] / np.float32(255)
    _assert_pixels_close(
        out / "good_grid.png",
        np.concatenate([_pixels(mixtures[:1])[0], *_expected_png(separator, good)], axis=1),
    )
    # 16-bit input is separated at full precision, not truncated to 8 bits.
    deep = np.round(mixtures[2] * 65535) / np.float32(65535)
    _assert_pixels_close(out / "deep_a.png", _expected_png(separator, deep)[0])


def test_duplicate_output_names_are_refused(separator, inputs, tmp_path):
    twin = tmp_path / "elsewhere"
    twin.mkdir()
    Image.open(inputs["good.png"]).save(twin / "good.png")
    complaints = []
    summary = separate_cli.separate_inputs(
        separator,
        [inputs["good.png"], str(twin / "good.png")],
        str(tmp_path),
        complain=complaints.append,
    )
    assert summary.separated == 1
    assert list(summary.failures) == [str(twin / "good.png")]
    assert "would overwrite that of" in complaints[0]


def test_an_input_given_twice_keeps_the_outputs_of_its_first_occurrence(
    separator, inputs, tmp_path
):
    good = inputs["good.png"]
    complaints = []
    summary = separate_cli.separate_inputs(
        separator, [good, good], str(tmp_path), complain=complaints.append
    )
    assert summary.separated == 1
    assert complaints == [
        f"error: {good}: its output good_a.png would overwrite that of {good}: rename one of them"
    ]
    assert sorted(os.listdir(tmp_path)) == ["good_a.png", "good_b.png", "in"]


def test_rgba_keeps_color_for_three_channel_models(tmp_path):
    path = tmp_path / "rgba.png"
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)
    array, note = separate_cli.read_image(str(path), channels=3)
    np.testing.assert_array_equal(array, pixels[..., :3] / np.float32(255))
    assert note == "RGBA images: alpha dropped"


def _run_cli(*args, timeout=120):
    # PYTHONIOENCODING makes printing strict, as in a UTF-8 locale other than C.UTF-8, so that a
    # file name with undecodable bytes reaching stdout or stderr unescaped is caught here.
    return subprocess.run(
        [sys.executable, "-m", "export.separate", *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONIOENCODING": "utf-8"},
        capture_output=True,
        text=True,
        errors="backslashreplace",
        timeout=timeout,
    )


def test_cli_goes_on_after_a_bad_input(exported, inputs, tmp_path):
    out = tmp_path / "cli_out"
    result = _run_cli(
        f"--model={exported.onnx_path}",
        f"--out={out}",
        "--provider=cpu",
        inputs["small.png"],
        inputs["good.png"],
    )
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {inputs['small.png']}: image is 28x28 but the model takes 32x32: resize or pad it",
        "error: 1 input(s) failed (see above)",
    ]
    assert result.stdout.splitlines() == [
        f"running {exported.onnx_path} on CPUExecutionProvider",
        f"separated 1 mixtures into {out}",
    ]
    assert sorted(os.listdir(out)) == ["good_a.png", "good_b.png"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch_size=0"], "error: flag --batch_size=0: 0 is not a positive integer"),
        (["--model=/nonexistent.onnx"], "error: separator /nonexistent.onnx does not exist"),
        ([], "error: no INPUT given"),
    ],
)
def test_cli_usage_errors_are_one_line_with_status_2(exported, inputs, tmp_path, args, message):
    model = [] if any(a.startswith("--model") for a in args) else [f"--model={exported.onnx_path}"]
    files = [inputs["good.png"]] if args else []
    result = _run_cli(*model, f"--out={tmp_path / 'o'}", *args, *files)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message)


# --- hostile inputs and a hostile filesystem ----------------------------------------------------
# Each case checks the promise of the module docstring: one `error:` line per bad INPUT (and the
# closing count), or one line and status 2 for an unusable --out or --model; no traceback; every
# file that existed before (inputs, and anything outside --out) byte-identical afterwards.


def _assert_error_lines(result, status, patterns):
    """Exit `status`, no traceback, and stderr exactly one `error:` line per regex of `patterns`."""
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == status, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == len(patterns), result.stderr
    for line, pattern in zip(lines, patterns):
        assert line.startswith("error: ") and re.search(pattern, line), (line, pattern)


def _unchanged(before, after):
    """Whether every entry of snapshot `before` is still in `after`, identical."""
    return {path: after.get(path) for path in before} == before


def _save_mixture(path, mixture):
    Image.fromarray(_pixels(mixture)).save(path)


FAILED = r"^error: \d+ input\(s\) failed \(see above\)$"


@pytest.mark.parametrize("alias", ["in", "in/.", "link"])
def test_out_that_is_an_input_folder_is_refused(exported, tmp_path, alias):
    folder = tmp_path / "in"
    folder.mkdir()
    _save_mixture(folder / "x.png", exported.mixtures[0])
    _save_mixture(folder / "x_a.png", exported.mixtures[1])  # x.png's output name
    os.symlink(folder, tmp_path / "link")
    before = snapshot(tmp_path)
    out = f"{tmp_path}/{alias}"  # not a Path, which would drop the "."
    result = _run_cli(
        f"--model={exported.onnx_path}", f"--out={out}", "--provider=cpu", str(folder)
    )
    _assert_error_lines(
        result,
        2,
        [
            rf"^error: --out={out} is the input folder {folder}: its outputs would be mixed with "
            "the images read there and could replace them; choose another --out$"
        ],
    )
    assert snapshot(tmp_path) == before


def test_outputs_never_replace_inputs(exported, tmp_path):
    x, x_a = tmp_path / "x.png", tmp_path / "x_a.png"
    _save_mixture(x, exported.mixtures[0])
    _save_mixture(x_a, exported.mixtures[1])
    before = snapshot(tmp_path)
    result = _run_cli(
        f"--model={exported.onnx_path}",
        f"--out={tmp_path}",
        "--provider=cpu",
        "--batch_size=1",
        str(x),
        str(x_a),
    )
    _assert_error_lines(
        result,
        1,
        [
            rf"^error: {x}: output x_a\.png would replace the input {x_a}: choose another output "
            "directory$",
            FAILED,
        ],
    )
    assert _unchanged(before, snapshot(tmp_path))
    assert sorted(os.listdir(tmp_path)) == ["x.png", "x_a.png", "x_a_a.png", "x_a_b.png"]


def test_links_at_output_and_temporary_names_are_not_followed(exported, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    inputs.mkdir()
    out.mkdir()
    for index, name in enumerate(["good", "other"]):
        _save_mixture(inputs / f"{name}.png", exported.mixtures[index])
    for victim in ("victim_a", "victim_b"):
        (tmp_path / victim).write_bytes(b"must not change")
    os.symlink(tmp_path / "victim_a", out / "good_a.png")
    # The temporary names the writer used to take, beside an output: links there were followed.
    os.symlink(tmp_path / "victim_b", out / ".other_a.png.tmp")
    os.symlink(tmp_path / "created", out / ".other_b.png.tmp")
    before = snapshot(tmp_path)
    result = _run_cli(
        f"--model={exported.onnx_path}", f"--out={out}", "--provider=cpu", "--grid", str(inputs)
    )
    _assert_error_lines(
        result,
        1,
        [
            rf"^error: {inputs / 'good.png'}: output good_a\.png in "
            rf"{out} is a symbolic link: remove it$",
            FAILED,
        ],
    )
    assert _unchanged(before, snapshot(tmp_path))
    assert not os.path.lexists(tmp_path / "created")
    assert sorted(os.listdir(out)) == sorted(
        [
            ".other_a.png.tmp",
            ".other_b.png.tmp",
            "good_a.png",
            "other_a.png",
            "other_b.png",
            "other_grid.png",
        ]
    )


def test_array_names_cannot_lead_outside_out(exported, tmp_path):
    out = tmp_path / "deep" / "out"
    # Directories an earlier output or a hostile user left in --out, which a name holding
    # `..` or `/` would pass through.
    (out / "keys_..").mkdir(parents=True)
    (out / "keys_sub").mkdir()
    mixtures = exported.mixtures
    np.savez(
        tmp_path / "keys.npz",
        **{
            "../../../outside": mixtures[:1],
            "sub/dir": mixtures[1:2],
            "line\nbreak": mixtures[2:3],
            ".hidden": mixtures[3:4],
        },
    )
    before = snapshot(tmp_path)
    result = _run_cli(
        f"--model={exported.onnx_path}",
        f"--out={out}",
        "--provider=cpu",
        str(tmp_path / "keys.npz"),
    )
    assert result.returncode == 0 and not result.stderr, result.stderr
    assert _unchanged(before, snapshot(tmp_path))
    stems = ["keys_.._.._.._outside_0", "keys_sub_dir_0", "keys_line_break_0", "keys_.hidden_0"]
    assert sorted(os.listdir(out)) == sorted(
        ["keys_..", "keys_sub"] + [f"{stem}_{kind}.png" for stem in stems for kind in "ab"]
    )
    assert os.listdir(out / "keys_..") == os.listdir(out / "keys_sub") == []


def test_non_regular_files_are_refused_without_blocking(exported, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    _save_mixture(folder / "good.png", exported.mixtures[0])
    os.mkfifo(folder / "pipe.png")
    with socket.socket(socket.AF_UNIX) as listener:
        listener.bind(str(folder / "sock.png"))
    (folder / "sub.png").mkdir()
    os.mkfifo(tmp_path / "fifo.npy")
    os.symlink("/dev/zero", tmp_path / "zero.npz")
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    # Without the fix the first FIFO blocks for ever; the timeout turns that into a failure.
    result = _run_cli(
        f"--model={exported.onnx_path}",
        f"--out={out}",
        "--provider=cpu",
        str(folder),
        str(tmp_path / "fifo.npy"),
        str(tmp_path / "zero.npz"),
        timeout=60,
    )
    _assert_error_lines(
        result,
        1,
        [
            rf"^error: {folder / 'pipe.png'}: is a FIFO, not a regular file$",
            rf"^error: {folder / 'sock.png'}: is a socket, not a regular file$",
            rf"^error: {folder / 'sub.png'}: is a directory, not a regular file$",
            rf"^error: {tmp_path / 'fifo.npy'}: is a FIFO, not a regular file$",
            rf"^error: {tmp_path / 'zero.npz'}: is a character device, not a regular file$",
            FAILED,
        ],
    )
    assert _unchanged(before, snapshot(tmp_path))
    assert sorted(os.listdir(out)) == ["good_a.png", "good_b.png"]


def _zip(path, members):
    """Writes a zip archive holding `{name: bytes}`, as a hand-made or foreign .npz would."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, content in members.items():
            archive.writestr(name, content)


def _npy(array):
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _npy_header_only(shape, descr="|u1"):
    """A .npy header declaring `shape` of `descr`, without the data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": descr, "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


def test_array_headers_are_checked_before_allocating(exported, tmp_path):
    huge = (10**12, IMAGE_SIZE, IMAGE_SIZE)
    whole = _npy(exported.mixtures)
    files = {
        "huge.npy": _npy_header_only(huge),
        "short.npy": whole[: len(whole) // 2],
        "negative.npy": _npy_header_only((-1, IMAGE_SIZE, IMAGE_SIZE)),
    }
    for name, content in files.items():
        (tmp_path / name).write_bytes(content)
    # A member whose header declares more than the archive says it holds uncompressed.
    _zip(tmp_path / "huge.npz", {"mixtures.npy": _npy_header_only(huge) + b"\0" * 4096})
    inputs = [str(tmp_path / name) for name in [*files, "huge.npz"]]
    _save_mixture(tmp_path / "good.png", exported.mixtures[0])
    before = snapshot(tmp_path)
    result = _run_cli(
        f"--model={exported.onnx_path}",
        f"--out={tmp_path / 'out'}",
        "--provider=cpu",
        *inputs,
        str(tmp_path / "good.png"),
    )
    _assert_error_lines(
        result,
        1,
        [
            rf"^error: {inputs[0]}: its header declares uint8 \[1000000000000, 32, 32\] "
            r"\(1024000000000000 bytes\) but only 0 bytes follow: it is truncated or corrupt$",
            rf"^error: {inputs[1]}: its header declares float32 \[8, 32, 32, 1\] \(32768 bytes\) "
            r"but only \d+ bytes follow: it is truncated or corrupt$",
            rf"^error: {inputs[2]}: its header declares the negative shape \[-1, 32, 32\]: it is "
            "corrupt$",
            rf"^error: {inputs[3]}: array mixtures: its header declares uint8 \[1000000000000, "
            r"32, 32\] \(1024000000000000 bytes\) but only 4096 bytes follow: it is truncated or "
            r"corrupt$",
            FAILED,
        ],
    )
    assert _unchanged(before, snapshot(tmp_path))
    assert sorted(os.listdir(tmp_path / "out")) == ["good_a.png", "good_b.png"]


def test_npz_members_that_are_not_arrays_are_refused(exported, tmp_path):
    mixtures = _npy(exported.mixtures[:1])
    archives = {
        "text.npz": {"first.npy": mixtures, "readme.txt": b"not an array"},
        "pickle.npz": {"object.pkl": pickle.dumps({"a": 1})},
        "folder.npz": {"sub/": b""},
        "objects.npz": {"objects.npy": _npy(np.array([None, {}], dtype=object))},
    }
    for name, members in archives.items():
        _zip(tmp_path / name, members)
    # With a `mixtures` array, the other members are not read at all.
    _zip(tmp_path / "keyed.npz", {"mixtures.npy": mixtures, "notes.txt": b"ignored"})
    inputs = [str(tmp_path / name) for name in [*archives, "keyed.npz"]]
    before = snapshot(tmp_path)
    result = _run_cli(
        f"--model={exported.onnx_path}", f"--out={tmp_path / 'out'}", "--provider=cpu", *inputs
    )
    _assert_error_lines(
        result,
        1,
        [
            rf"^error: {inputs[0]}: member readme\.txt is not a \.npy array$",
            rf"^error: {inputs[1]}: member object\.pkl is not a \.npy array$",
            rf"^error: {inputs[2]}: member sub/ is not a \.npy array$",
            rf"^error: {inputs[3]}: array objects: it holds Python objects, which are never "
            r"unpickled: store numbers$",
            FAILED,
        ],
    )
    assert _unchanged(before, snapshot(tmp_path))
    assert sorted(os.listdir(tmp_path / "out")) == ["keyed_0_a.png", "keyed_0_b.png"]


def test_names_with_undecodable_bytes_or_control_characters(exported, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    deep = np.round(exported.mixtures[0, ..., 0] * 65535).astype(np.uint16)
    Image.fromarray(deep).save(os.path.join(os.fsencode(folder), b"\xff16.png"))
    with open(os.path.join(os.fsencode(folder), b"bad\xfe.png"), "wb") as f:
        f.write(b"not a png")
    (folder / "new\nline.png").write_bytes(b"not a png either")
    _save_mixture(folder / "ok é.png", exported.mixtures[1])
    before = snapshot(tmp_path)
    out = tmp_path / "out"
    result = _run_cli(
        f"--model={exported.onnx_path}", f"--out={out}", "--provider=cpu", str(folder)
    )
    _assert_error_lines(
        result,
        1,
        [
            rf"^error: {re.escape(str(folder))}/bad\\xfe\.png: cannot read the image",
            rf"^error: {re.escape(str(folder))}/new\\nline\.png: cannot read the image",
            FAILED,
        ],
    )
    assert rf"note: 16-bit values scaled to [0, 1] (first seen in {folder}/\xff16.png)" in (
        result.stdout.splitlines()
    )
    assert _unchanged(before, snapshot(tmp_path))
    assert sorted(os.listdir(out)) == ["_16_a.png", "_16_b.png", "ok_é_a.png", "ok_é_b.png"]


def _reshaping_model(path):
    """An ONNX file with a separator's interface whose graph works for batch 1 only."""
    import onnx
    from onnx import TensorProto, helper

    image = [IMAGE_SIZE, IMAGE_SIZE, 1]
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["mixture", "shape"], ["one"])]
        + [
            helper.make_node("Identity", ["one"], [name])
            for name in ("source_a", "source_b", "mask")
        ],
        "batch_one",
        [helper.make_tensor_value_info("mixture", TensorProto.FLOAT, ["batch", *image])],
        [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["batch", *image])
            for name in ("source_a", "source_b", "mask")
        ],
        [helper.make_tensor("shape", TensorProto.INT64, [4], [1, *image])],
    )
    onnx.save(
        helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17)]), path
    )


def test_a_model_failing_on_a_batch_fails_its_inputs_in_one_line_each(exported, tmp_path):
    model = tmp_path / "batch_one.onnx"
    _reshaping_model(model)
    np.save(tmp_path / "rows.npy", exported.mixtures[:3])
    _save_mixture(tmp_path / "one.png", exported.mixtures[3])
    before = snapshot(tmp_path)
    result = _run_cli(
        f"--model={model}",
        f"--out={tmp_path / 'out'}",
        "--provider=cpu",
        str(tmp_path / "rows.npy"),
        str(tmp_path / "one.png"),
    )
    reason = r"the model failed on the batch holding it \(.+\)$"
    _assert_error_lines(
        result,
        1,
        [
            rf"^error: {tmp_path / 'rows.npy'}: {reason}",
            rf"^error: {tmp_path / 'one.png'}: {reason}",
            FAILED,
        ],
    )
    assert _unchanged(before, snapshot(tmp_path))
    assert os.listdir(tmp_path / "out") == []


def test_a_model_that_is_not_a_regular_file_is_refused(exported, tmp_path):
    os.mkfifo(tmp_path / "model.onnx")
    _save_mixture(tmp_path / "good.png", exported.mixtures[0])
    result = _run_cli(
        f"--model={tmp_path / 'model.onnx'}",
        f"--out={tmp_path / 'out'}",
        str(tmp_path / "good.png"),
        timeout=60,
    )
    _assert_error_lines(
        result,
        2,
        [
            rf"^error: separator {tmp_path / 'model.onnx'} is a FIFO, "
            "not a regular file"
        ],
    )
