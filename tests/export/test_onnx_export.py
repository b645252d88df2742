"""Tests for export/onnx.py: artifacts, parity, metadata, fp16, inversion and errors."""
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from aur_tf.errors import UserError
from aur_tf.separator import OUTPUT_NAMES, Separator
from export import onnx as export_onnx

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 32  # of the shared run built in conftest.py

def test_parity_with_keras_within_tolerance(exported):
    for report in (exported.report, exported.inverted_report):
        parity = report["parity_max_abs_diff"]
        assert set(parity) == {"saved_model", "onnx"}
        for figures in parity.values():
            assert set(figures) == set(OUTPUT_NAMES)
            assert max(figures.values()) <= export_onnx.PARITY_TOLERANCE
        assert report["parity_inputs"].startswith("16 test mixtures rebuilt from the run's config")
    assert any("max |difference| from Keras" in line for line in exported.log)


def test_writes_exactly_the_artifacts_and_no_temporaries(exported):
    assert sorted(os.listdir(exported.out_dir)) == sorted(
        [export_onnx.SAVED_MODEL, export_onnx.ONNX_FILE, export_onnx.ONNX_FP16_FILE,
         export_onnx.REPORT_FILE])
    assert json.loads((exported.out_dir / export_onnx.REPORT_FILE).read_text()) == exported.report
    assert exported.report["opset"] == export_onnx.DEFAULT_OPSET


def test_onnx_interface_is_named_float32_with_dynamic_batch(exported):
    model = onnx.load(exported.onnx_path)
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [
        export_onnx.DEFAULT_OPSET]
    (mixture,) = model.graph.input
    assert mixture.name == "mixture"
    assert [o.name for o in model.graph.output] == list(OUTPUT_NAMES)
    for value in (mixture, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        dims = value.type.tensor_type.shape.dim
        assert dims[0].dim_param == "batch"
        assert [d.dim_value for d in dims[1:]] == [IMAGE_SIZE, IMAGE_SIZE, 1]


@pytest.mark.parametrize("batch", [1, 7])
def test_dynamic_batch(exported, batch):
    import onnxruntime as ort

    mixtures = np.resize(exported.mixtures, (batch, IMAGE_SIZE, IMAGE_SIZE, 1))
    session = ort.InferenceSession(exported.onnx_path, providers=["CPUExecutionProvider"])
    onnx_outputs = session.run(list(OUTPUT_NAMES), {"mixture": mixtures})
    saved_model_outputs = Separator.load(exported.saved_model_path).separate(
        mixtures, return_mask=True)
    for from_onnx, from_saved_model in zip(onnx_outputs, saved_model_outputs):
        assert from_onnx.shape == (batch, IMAGE_SIZE, IMAGE_SIZE, 1)
        np.testing.assert_allclose(from_onnx, from_saved_model, atol=1e-5)


def test_outputs_follow_the_mask_formula(exported):
    source_a, source_b, mask = Separator.load(exported.onnx_path, provider="cpu").separate(
        exported.mixtures, return_mask=True)
    np.testing.assert_allclose(source_a, 2 * exported.mixtures * mask, atol=1e-6)
    np.testing.assert_allclose(source_a + source_b, 2 * exported.mixtures, atol=1e-6)


# --- metadata ---------------------------------------------------------------------------------

def test_metadata_round_trip(exported):
    model = onnx.load(exported.onnx_path)
    props = {p.key: p.value for p in model.metadata_props}
    evaluation = json.loads((exported.workdir / "eval.json").read_text())
    assert props["image_size"] == str(IMAGE_SIZE) and props["channels"] == "1"
    assert props["value_range"] == "0..1" and props["inverted_inputs"] == "false"
    assert props["opset"] == str(export_onnx.DEFAULT_OPSET) and props["precision"] == "float32"
    assert json.loads(props["training_config"]) == exported.config.to_dict()
    assert float(props["eval_psnr_db"]) == evaluation["psnr_db"]
    assert float(props["eval_ssim"]) == evaluation["ssim"]
    assert int(props["eval_step"]) == evaluation["step"] == exported.config.train_steps
    assert props["aur_tf_version"] == export_onnx.aur_tf_version() != "unknown"
    assert Separator.load(exported.onnx_path, provider="cpu").metadata == props
    saved_model_metadata = Separator.load(exported.saved_model_path).metadata
    assert saved_model_metadata == {k: v for k, v in props.items()
                                    if k not in ("opset", "precision")}


def test_missing_evaluation_is_omitted(exported):
    config, evaluation = export_onnx.load_run(str(exported.inverted_workdir))
    assert evaluation == {} and config.invert
    metadata = export_onnx.run_metadata(config, evaluation, "ckpt-4")
    assert not any(key.startswith("eval_") for key in metadata)
    assert metadata["inverted_inputs"] == "true"


# --- fp16 -------------------------------------------------------------------------------------

def test_fp16_keeps_float32_interface_and_reports_its_error(exported):
    model = onnx.load(exported.report["files"]["onnx_fp16"])
    for value in (*model.graph.input, *model.graph.output):
        assert value.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer)
    props = {p.key: p.value for p in model.metadata_props}
    assert props["precision"].startswith("float16") and props["image_size"] == str(IMAGE_SIZE)
    errors = exported.report["fp16_max_abs_diff"]
    assert set(errors) == set(OUTPUT_NAMES) and 0 < max(errors.values()) < 1e-2
    assert any(line.startswith("fp16 ONNX max |difference|") for line in exported.log)


# --- inverted runs ----------------------------------------------------------------------------

def test_inverted_export_takes_natural_images(exported):
    inverted = Separator.load(exported.inverted_onnx_path, provider="cpu")
    plain = Separator.load(exported.onnx_path, provider="cpu")
    assert inverted.metadata["inverted_inputs"] == "true"
    # Same weights: the inverted export must equal 1 - (plain export applied to 1 - y).
    source_a, source_b, mask = inverted.separate(exported.mixtures, return_mask=True)
    plain_a, plain_b, plain_mask = plain.separate(1 - exported.mixtures, return_mask=True)
    np.testing.assert_allclose(mask, plain_mask, atol=1e-6)
    np.testing.assert_allclose(source_a, 1 - plain_a, atol=1e-6)
    np.testing.assert_allclose(source_b, 1 - plain_b, atol=1e-6)


def test_parity_inputs_of_an_inverted_run_are_natural_images(exported):
    inverted_config = dataclasses.replace(exported.config, invert=True)
    mixtures, _ = export_onnx.parity_mixtures(inverted_config, count=8)
    np.testing.assert_allclose(mixtures, exported.mixtures, atol=1e-6)


def test_unloadable_sources_fall_back_to_synthetic_inputs(exported):
    config = dataclasses.replace(exported.config, source_a="npz:/nonexistent/a.npz")
    mixtures, description = export_onnx.parity_mixtures(config, count=5)
    again, _ = export_onnx.parity_mixtures(config, count=5)
    assert mixtures.shape == (5, IMAGE_SIZE, IMAGE_SIZE, 1) and mixtures.dtype == np.float32
    np.testing.assert_array_equal(mixtures, again)
    assert "synthetic" in description and "/nonexistent/a.npz" in description


# --- float32 copies of mixed-precision runs ---------------------------------------------------

def test_mixed_precision_checkpoint_restores_as_float32(exported, tmp_path):
    import tensorflow as tf

    from aur_tf import models

    config = dataclasses.replace(exported.config, workdir=str(tmp_path),
                                 mixed_precision="mixed_float16")
    trained = models.build_mask_net(IMAGE_SIZE, 1, config.mask_width, "mixed_float16")
    tf.train.Checkpoint(mask_net=trained).save(str(tmp_path / "checkpoints" / "ckpt"))
    restored, _ = export_onnx.restore_mask_net(str(tmp_path), config)
    assert all(v.dtype == "float32" for v in restored.variables)
    for original, copy in zip(trained.variables, restored.variables):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copy))
    assert restored.compute_dtype == "float32"


# --- errors -----------------------------------------------------------------------------------

def _copy_run(exported, destination):
    shutil.copytree(exported.workdir, destination, ignore=shutil.ignore_patterns("export"))
    return destination


def test_missing_workdir_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        export_onnx.export_run(str(tmp_path / "nothing"))


def test_workdir_without_checkpoint_is_a_user_error(exported, tmp_path):
    workdir = _copy_run(exported, tmp_path / "run")
    shutil.rmtree(workdir / "checkpoints")
    with pytest.raises(UserError, match="no checkpoint in"):
        export_onnx.export_run(str(workdir))


@pytest.mark.parametrize("damage", ["truncated", "other_width"])
def test_damaged_or_mismatched_checkpoint_is_a_user_error(exported, tmp_path, damage):
    workdir = _copy_run(exported, tmp_path / "run")
    if damage == "truncated":
        (data,) = (workdir / "checkpoints").glob("*.data-*")
        data.write_bytes(data.read_bytes()[:100])
    else:
        config = json.loads((workdir / "config.json").read_text())
        (workdir / "config.json").write_text(json.dumps({**config, "mask_width": 8}))
    with pytest.raises(UserError, match="cannot restore the mask net"):
        export_onnx.export_run(str(workdir))
    assert not (workdir / "export").exists()


def test_unwritable_out_dir_is_a_user_error(exported, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(UserError, match="cannot write to --out"):
        export_onnx.export_run(str(exported.workdir), out_dir=str(blocker / "export"))


def test_unsupported_opset_is_a_user_error(exported):
    with pytest.raises(UserError, match="--opset=9 is not supported"):
        export_onnx.export_run(str(exported.workdir), opset=9)


def test_failed_parity_leaves_the_previous_export_untouched(exported, tmp_path, monkeypatch):
    out_dir = tmp_path / "out"
    shutil.copytree(exported.out_dir, out_dir)
    before = {name: (out_dir / name).read_bytes() for name in
              (export_onnx.ONNX_FILE, export_onnx.ONNX_FP16_FILE, export_onnx.REPORT_FILE)}
    monkeypatch.setattr(export_onnx, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(export_onnx.ParityError, match="nothing was written"):
        export_onnx.export_run(str(exported.inverted_workdir), out_dir=str(out_dir),
                               log=lambda line: None)
    assert sorted(os.listdir(out_dir)) == sorted(os.listdir(exported.out_dir))
    assert {name: (out_dir / name).read_bytes() for name in before} == before


def test_reexport_replaces_every_artifact(exported, tmp_path):
    out_dir = tmp_path / "out"
    shutil.copytree(exported.out_dir, out_dir)
    log = []
    export_onnx.export_run(str(exported.inverted_workdir), out_dir=str(out_dir), log=log.append)
    # The fp16 file of the earlier export is gone: it was not the twin of the new ONNX file.
    assert sorted(os.listdir(out_dir)) == sorted(
        [export_onnx.SAVED_MODEL, export_onnx.ONNX_FILE, export_onnx.REPORT_FILE])
    assert any(line.startswith("removed ") for line in log)
    for path in (out_dir / export_onnx.ONNX_FILE, out_dir / export_onnx.SAVED_MODEL):
        assert Separator.load(str(path), provider="cpu").metadata["inverted_inputs"] == "true"


def test_cli_error_is_one_line_with_status_2(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "export.onnx", f"--workdir={tmp_path / 'nothing'}"],
        cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
        text=True, timeout=120)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --workdir={tmp_path / 'nothing'} does not exist: give the workdir "
                      "of a training run"]
    assert "Traceback" not in result.stderr
