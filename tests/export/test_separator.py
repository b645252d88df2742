"""Tests for aur_tf.separator.Separator on the shared exported run (see test_onnx_export.py)."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from aur_tf.errors import UserError
from aur_tf.separator import ONNX_PROVIDERS, Separator

IMAGE_SIZE = 32  # of the shared run built in conftest.py


@pytest.fixture(params=["onnx", "saved_model"])
def separator(request, exported):
    path = exported.onnx_path if request.param == "onnx" else exported.saved_model_path
    return Separator.load(path, provider="cpu")


def test_loads_both_formats_with_their_shape_and_provider(separator):
    assert (separator.image_size, separator.channels) == (IMAGE_SIZE, 1)
    assert separator.input_shape == (IMAGE_SIZE, IMAGE_SIZE, 1)
    assert separator.provider in ("CPUExecutionProvider", "tensorflow-cpu")
    assert separator.metadata["inverted_inputs"] == "false"


def test_onnx_and_saved_model_agree(exported):
    from_onnx = Separator.load(exported.onnx_path, provider="cpu").separate(exported.mixtures)
    from_saved_model = Separator.load(exported.saved_model_path).separate(exported.mixtures)
    for a, b in zip(from_onnx, from_saved_model):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_output_shapes_follow_the_input(separator, exported):
    stack = exported.mixtures
    for mixtures in (stack, stack[0], stack[0, ..., 0]):
        source_a, source_b = separator.separate(mixtures)
        assert source_a.shape == source_b.shape == mixtures.shape
        assert source_a.dtype == np.float32
    single_a, _ = separator.separate(stack[3, ..., 0])
    batch_a, _ = separator.separate(stack)
    np.testing.assert_allclose(single_a, batch_a[3, ..., 0], atol=1e-6)


def test_uint8_is_scaled_and_batching_does_not_change_results(separator, exported):
    pixels = np.round(exported.mixtures * 255).astype(np.uint8)
    from_uint8 = separator.separate(pixels, batch_size=3, return_mask=True)
    from_float = separator.separate(pixels / np.float32(255), return_mask=True)
    for a, b in zip(from_uint8, from_float):
        np.testing.assert_allclose(a, b, atol=1e-6)
    empty_a, empty_b = separator.separate(exported.mixtures[:0])
    assert empty_a.shape == empty_b.shape == (0, IMAGE_SIZE, IMAGE_SIZE, 1)


@pytest.mark.parametrize(
    "mixtures, message",
    [
        (
            np.full((2, IMAGE_SIZE, IMAGE_SIZE, 1), 1.5, np.float32),
            r"span \[1.5, 1.5\], not \[0, 1\]",
        ),
        (np.full((2, IMAGE_SIZE, IMAGE_SIZE, 1), np.nan, np.float32), "NaN or Inf"),
        (np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 1), np.int32), "int32: give uint8"),
        (np.zeros((2, 28, 28, 1), np.float32), r"shape \[2, 28, 28, 1\] do not fit"),
        (np.zeros((2, IMAGE_SIZE, IMAGE_SIZE, 3), np.float32), r"takes \[N, 32, 32, 1\]"),
    ],
)
def test_bad_mixtures_are_value_errors(separator, mixtures, message):
    with pytest.raises(ValueError, match=message):
        separator.separate(mixtures)


def test_batch_size_must_be_positive(separator, exported):
    with pytest.raises(ValueError, match="batch_size=0"):
        separator.separate(exported.mixtures, batch_size=0)


def test_a_non_separator_onnx_file_is_refused(tmp_path):
    identity = helper.make_model(
        helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])],
            "identity",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])],
        ),
        ir_version=8,
        opset_imports=[helper.make_opsetid("", 17)],
    )
    path = tmp_path / "identity.onnx"
    onnx.save(identity, path)
    with pytest.raises(UserError, match=f"{path} is not an aur_tf separator"):
        Separator.load(str(path))


@pytest.mark.parametrize("content", [b"", b"definitely not a protobuf \x00\xff" * 10])
def test_corrupt_onnx_file_is_refused(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(UserError, match=f"cannot load {path} with onnxruntime"):
        Separator.load(str(path))


def test_missing_path_and_non_saved_model_folder_are_refused(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        Separator.load(str(tmp_path / "missing.onnx"))
    with pytest.raises(UserError, match="directory without a SavedModel"):
        Separator.load(str(tmp_path))


def test_auto_provider_reports_what_runs(exported):
    import onnxruntime as ort

    separator = Separator.load(exported.onnx_path)
    available = ort.get_available_providers()
    assert separator.tried_providers == tuple(p for p in ONNX_PROVIDERS.values() if p in available)
    assert separator.provider in separator.tried_providers


def test_forced_provider_is_used_or_refused(exported):
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(UserError, match="provider cuda is not in this onnxruntime build"):
            Separator.load(exported.onnx_path, provider="cuda")
        return
    try:  # onnxruntime-gpu lists CUDA even where it cannot load it (no GPU or libraries)
        separator = Separator.load(exported.onnx_path, provider="cuda")
    except UserError as e:
        assert "could not load CUDAExecutionProvider" in str(e)
    else:
        assert separator.provider == "CUDAExecutionProvider"


@pytest.mark.parametrize(
    "provider, message",
    [("gpu", "unknown provider 'gpu'"), ("tensorrt", "applies to .onnx separators only")],
)
def test_bad_provider_choices(exported, provider, message):
    with pytest.raises(UserError, match=message):
        Separator.load(exported.saved_model_path, provider=provider)


@pytest.mark.parametrize("fixed_batch", [1, 3])
def test_a_fixed_batch_model_runs_in_chunks_of_its_batch(exported, tmp_path, fixed_batch):
    model = onnx.load(exported.onnx_path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = fixed_batch
    path = tmp_path / "fixed.onnx"
    onnx.save(model, path)
    separator = Separator.load(str(path), provider="cpu")
    assert separator.fixed_batch == fixed_batch
    expected = Separator.load(exported.onnx_path, provider="cpu").separate(exported.mixtures)
    for batch_size in (2, 256):  # 8 mixtures: a partial last chunk for batch 3
        for got, want in zip(
            separator.separate(exported.mixtures, batch_size=batch_size), expected
        ):
            np.testing.assert_allclose(got, want, atol=1e-6)
    single_a, _ = separator.separate(exported.mixtures[0])
    np.testing.assert_allclose(single_a, expected[0][0], atol=1e-6)


def test_a_model_with_batch_zero_is_refused(exported, tmp_path):
    model = onnx.load(exported.onnx_path)
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 0
    path = tmp_path / "empty.onnx"
    onnx.save(model, path)
    with pytest.raises(UserError, match=f"{path} is not an aur_tf separator"):
        Separator.load(str(path))
