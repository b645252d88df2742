"""Tests for export/separate.py: inputs of every kind, bad inputs, outputs, and the real CLI."""
import os
import subprocess
import sys

import numpy as np
import pytest
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
    return [np.round(np.clip(s, 0, 1) * 255).astype(np.uint8)[..., 0]
            for s in separator.separate(image)]


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
    rgba = np.dstack([np.repeat(_pixels(mixtures[3])[..., None], 3, -1),
                      np.full((IMAGE_SIZE, IMAGE_SIZE), 7, np.uint8)])
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
    order = ["good.png", "small.png", "corrupt.png", "color.png", "nan.npy", "rows.npy",
             "keyed.npz", "several.npz", "deep.png", "rgba.png", "notes.txt"]
    summary = separate_cli.separate_inputs(
        separator, [inputs[n] for n in order] + [os.path.dirname(inputs["more/inside.jpg"]),
                                                 str(tmp_path / "missing.png")],
        str(out), batch_size=4, grid=True, say=said.append, complain=complaints.append)

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

    stems = ["good", "rows_0", "rows_1", "rows_2", "keyed_0", "keyed_1", "several_first_0",
             "several_first_1", "several_second_0", "deep", "rgba", "inside"]
    assert summary.separated == len(stems)
    assert sorted(os.listdir(out)) == sorted(f"{s}_{k}.png" for s in stems
                                             for k in ("a", "b", "grid"))

    mixtures = exported.mixtures
    for stem, mixture in [("good", mixtures[0]), ("rows_2", mixtures[2]),
                          ("keyed_1", mixtures[1]), ("several_second_0", mixtures[2])]:
        if stem == "good":
            mixture = _pixels(mixture)[..., None] / np.float32(255)
        expected_a, expected_b = _expected_png(separator, mixture)
        _assert_pixels_close(out / f"{stem}_a.png", expected_a)
        _assert_pixels_close(out / f"{stem}_b.png", expected_b)
    good = _pixels(mixtures[0])[..., None] / np.float32(255)
    _assert_pixels_close(out / "good_grid.png", np.concatenate(
        [_pixels(mixtures[:1])[0], *_expected_png(separator, good)], axis=1))
    # 16-bit input is separated at full precision, not truncated to 8 bits.
    deep = np.round(mixtures[2] * 65535) / np.float32(65535)
    _assert_pixels_close(out / "deep_a.png", _expected_png(separator, deep)[0])


def test_duplicate_output_names_are_refused(separator, inputs, tmp_path):
    twin = tmp_path / "elsewhere"
    twin.mkdir()
    Image.open(inputs["good.png"]).save(twin / "good.png")
    complaints = []
    summary = separate_cli.separate_inputs(separator, [inputs["good.png"], str(twin / "good.png")],
                                           str(tmp_path), complain=complaints.append)
    assert summary.separated == 1
    assert list(summary.failures) == [str(twin / "good.png")]
    assert "would overwrite that of" in complaints[0]


def test_rgba_keeps_color_for_three_channel_models(tmp_path):
    path = tmp_path / "rgba.png"
    pixels = np.random.default_rng(0).integers(0, 256, (8, 8, 4), dtype=np.uint8)
    Image.fromarray(pixels, "RGBA").save(path)
    array, note = separate_cli.read_image(str(path), channels=3)
    np.testing.assert_array_equal(array, pixels[..., :3])
    assert note == "RGBA images: alpha dropped"


def _run_cli(*args):
    return subprocess.run([sys.executable, "-m", "export.separate", *args], cwd=REPO_ROOT,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
                          text=True, timeout=120)


def test_cli_goes_on_after_a_bad_input(exported, inputs, tmp_path):
    out = tmp_path / "cli_out"
    result = _run_cli(f"--model={exported.onnx_path}", f"--out={out}", "--provider=cpu",
                      inputs["small.png"], inputs["good.png"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {inputs['small.png']}: image is 28x28 but the model takes 32x32: resize or pad it",
        "error: 1 input(s) failed (see above)"]
    assert result.stdout.splitlines() == [
        f"running {exported.onnx_path} on CPUExecutionProvider",
        f"separated 1 mixtures into {out}"]
    assert sorted(os.listdir(out)) == ["good_a.png", "good_b.png"]


@pytest.mark.parametrize("args, message", [
    (["--batch_size=0"], "error: flag --batch_size=0: 0 is not a positive integer"),
    (["--model=/nonexistent.onnx"], "error: separator /nonexistent.onnx does not exist"),
    ([], "error: no INPUT given"),
])
def test_cli_usage_errors_are_one_line_with_status_2(exported, inputs, tmp_path, args,
                                                     message):
    model = [] if any(a.startswith("--model") for a in args) else [f"--model={exported.onnx_path}"]
    files = [inputs["good.png"]] if args else []
    result = _run_cli(*model, f"--out={tmp_path / 'o'}", *args, *files)
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(message)
