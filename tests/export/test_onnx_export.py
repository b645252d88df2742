"""Tests for export/onnx.py: artifacts, parity, metadata, fp16, inversion and errors."""

import dataclasses
import errno
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from aur_tf.errors import UserError
from aur_tf.separator import OUTPUT_NAMES, Separator
from export import onnx as export_onnx

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 32  # of the shared run built in conftest.py


def _check_derived_parity(report):
    """Asserts `report` passed under the derived bound; returns Keras's error against float64."""
    from_float64 = report["parity_float64_max_abs_diff"]
    assert set(from_float64) == {"keras", "saved_model", "onnx"}
    assert set(report["parity_max_abs_diff"]) == {"saved_model", "onnx"}
    for figures in (*from_float64.values(), *report["parity_max_abs_diff"].values()):
        assert set(figures) == set(OUTPUT_NAMES)
    keras_error = export_onnx.source_error(from_float64["keras"])
    floor = np.finfo(np.float32).eps * export_onnx.ESTIMATE_RANGE * 8  # 8 convolution layers
    assert report["parity_bound"] == pytest.approx(
        max(export_onnx.NOISE_MULTIPLE * keras_error, floor)
    )
    assert report["parity_bound_origin"].startswith("derived: ")
    for label in ("saved_model", "onnx"):
        assert export_onnx.source_error(from_float64[label]) <= report["parity_bound"]
    quality = report["parity_quality"]
    assert quality["against"] == "clean validation sources"
    keras_psnr = quality["scores"]["keras"]["psnr_db"]
    for label in ("saved_model", "onnx"):
        assert abs(quality["scores"][label]["psnr_db"] - keras_psnr) <= 0.01
    return keras_error


def test_parity_judges_the_sources_against_float64(exported):
    for report in (exported.report, exported.inverted_report):
        assert 0 < _check_derived_parity(report) < 1e-5
        assert report["parity_inputs"].startswith(
            "16 validation mixtures rebuilt from the run's config"
        )
    assert set(exported.report["parity_quality"]["scores"]) == {
        "keras",
        "saved_model",
        "onnx",
        "onnx_fp16",
        "onnx_int8",
    }
    assert any(line.startswith("parity bound on the sources") for line in exported.log)
    assert any("from float64" in line for line in exported.log)


def test_quality_matches_the_runs_own_evaluation(exported):
    """The export scores as training's evaluation does (on all 16 validation mixtures here).

    An inverted run is scored in its own (inverted) domain, where SSIM differs from the natural
    images'; its twin has no eval.json, so it is compared with `evaluation.evaluate` directly.
    """
    from aur_tf import evaluation
    from aur_tf.data.mixtures import load_mixture_dataset

    recorded = json.loads((exported.workdir / "eval.json").read_text())
    config, _ = export_onnx.load_run(str(exported.inverted_workdir))
    mask_net, _ = export_onnx.restore_mask_net(str(exported.inverted_workdir), config)
    inverted = evaluation.evaluate(mask_net, load_mixture_dataset(config).validation)
    for report, expected in ((exported.report, recorded), (exported.inverted_report, inverted)):
        scores = report["parity_quality"]["scores"]["keras"]
        assert scores["psnr_db"] == pytest.approx(expected["psnr_db"], abs=1e-4)
        assert scores["ssim"] == pytest.approx(expected["ssim"], abs=1e-5)


def test_float64_twin_holds_the_same_weights_in_float64(exported):
    config, _ = export_onnx.load_run(str(exported.workdir))
    mask_net, _ = export_onnx.restore_mask_net(str(exported.workdir), config)
    twin = export_onnx.float64_twin(mask_net)
    assert {v.dtype for v in twin.variables} == {"float64"}
    for original, copy in zip(mask_net.get_weights(), twin.get_weights()):
        np.testing.assert_array_equal(original, copy)
    masks = np.asarray(mask_net(exported.mixtures, training=False))
    twin_masks = np.asarray(twin(exported.mixtures.astype(np.float64), training=False))
    assert twin_masks.dtype == np.float64
    np.testing.assert_allclose(twin_masks, masks, atol=1e-6)
    assert export_onnx.noise_floor(mask_net) == pytest.approx(2**-23 * 2 * 8)


@pytest.mark.parametrize("width", [4, 16])
def test_trained_nets_pass_with_the_derived_bound(trained_run, tmp_path, width):
    """Nets trained to saturated masks pass, and the bound clears their float32 noise.

    A finished unsupervised run needs thousands of steps; supervised training at learning rate
    1e-2 gives, in 60 steps (~2 s), what makes its rounding noise larger than a fresh net's: masks
    saturated at 0 and 1 (logits |z| ~ 25), BatchNorm statistics and weights moved far from their
    initialisation, and separations 1.5-3 dB above the half mask. Two widths change the
    convolutions' lengths (fan-in up to 64 * width) and with them the noise.
    """
    config = trained_run(width)
    report = export_onnx.export_run(
        config.workdir, out_dir=str(tmp_path / "export"), log=lambda line: None
    )
    keras_error = _check_derived_parity(report)
    evaluation = json.loads((Path(config.workdir) / "eval.json").read_text())
    assert evaluation["psnr_db"] > evaluation["half_mask_psnr_db"] + 1
    _, _, masks = Separator.load(report["files"]["onnx"], provider="cpu").separate(
        export_onnx.parity_mixtures(config)[0], return_mask=True
    )
    assert masks.min() < 1e-3 and masks.max() > 1 - 1e-3
    # The float32 noise: every runtime's own error, and how far two runtimes differ.
    measured = [
        keras_error,
        *(
            export_onnx.source_error(figures)
            for figures in report["parity_float64_max_abs_diff"].values()
        ),
        export_onnx.source_error(report["parity_max_abs_diff"]["onnx"]),
    ]
    assert 0 < max(measured) < report["parity_bound"]


def test_writes_exactly_the_artifacts_and_no_temporaries(exported):
    assert sorted(os.listdir(exported.out_dir)) == sorted(
        [
            export_onnx.SAVED_MODEL,
            export_onnx.ONNX_FILE,
            export_onnx.ONNX_FP16_FILE,
            export_onnx.ONNX_INT8_FILE,
            export_onnx.REPORT_FILE,
        ]
    )
    assert json.loads((exported.out_dir / export_onnx.REPORT_FILE).read_text()) == exported.report
    assert exported.report["opset"] == export_onnx.DEFAULT_OPSET


def test_onnx_interface_is_named_float32_with_dynamic_batch(exported):
    model = onnx.load(exported.onnx_path)
    onnx.checker.check_model(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [
        export_onnx.DEFAULT_OPSET
    ]
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
        mixtures, return_mask=True
    )
    for from_onnx, from_saved_model in zip(onnx_outputs, saved_model_outputs):
        assert from_onnx.shape == (batch, IMAGE_SIZE, IMAGE_SIZE, 1)
        np.testing.assert_allclose(from_onnx, from_saved_model, atol=1e-5)


def test_outputs_follow_the_mask_formula(exported):
    source_a, source_b, mask = Separator.load(exported.onnx_path, provider="cpu").separate(
        exported.mixtures, return_mask=True
    )
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
    assert saved_model_metadata == {
        k: v for k, v in props.items() if k not in ("opset", "precision")
    }


@pytest.mark.parametrize(
    "checkpoint, eval_psnr_db, averaged_steps",
    [
        ("run/checkpoints/ckpt-8", "20.0", None),
        ("run/selected/ckpt-8", "21.0", "4,6,8"),
    ],
)
def test_the_eval_figures_are_those_of_the_net_exported(
    exported, checkpoint, eval_psnr_db, averaged_steps
):
    evaluation = {
        "psnr_db": 20.0,
        "ssim": 0.8,
        "step": 8,
        "split": "validation",
        "selected": {"psnr_db": 21.0, "ssim": 0.9, "step": 8, "averaged_steps": [4, 6, 8]},
        "test": {"psnr_db": 20.5, "ssim": 0.85},
    }
    metadata = export_onnx.run_metadata(exported.config, evaluation, checkpoint)
    assert metadata["eval_psnr_db"] == eval_psnr_db
    assert metadata["eval_split"] == "validation" and metadata["test_psnr_db"] == "20.5"
    assert metadata.get("averaged_steps") == averaged_steps


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
    mixtures, split, _ = export_onnx.parity_mixtures(inverted_config, count=8)
    np.testing.assert_allclose(mixtures, exported.mixtures, atol=1e-6)
    # Its split stays in the net's (inverted) domain, where eval.json scores it.
    np.testing.assert_allclose(split.mixtures, 1 - exported.mixtures, atol=1e-6)


def test_unloadable_sources_fall_back_to_synthetic_inputs(exported):
    config = dataclasses.replace(exported.config, source_a="npz:/nonexistent/a.npz")
    mixtures, split, description = export_onnx.parity_mixtures(config, count=5)
    again, _, _ = export_onnx.parity_mixtures(config, count=5)
    assert split is None
    assert mixtures.shape == (5, IMAGE_SIZE, IMAGE_SIZE, 1) and mixtures.dtype == np.float32
    np.testing.assert_array_equal(mixtures, again)
    assert "synthetic" in description and "/nonexistent/a.npz" in description


# --- float32 copies of mixed-precision runs ---------------------------------------------------


def test_mixed_precision_checkpoint_restores_as_float32(exported, tmp_path):
    import tensorflow as tf

    from aur_tf import models

    config = dataclasses.replace(
        exported.config, workdir=str(tmp_path), mixed_precision="mixed_float16"
    )
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


def _export_wrong_onnx(monkeypatch, scale):
    """Makes export write ONNX files whose first convolution's weights are multiplied by `scale`."""
    convert = export_onnx.to_onnx

    def wrong_to_onnx(*args, **kwargs):
        model = convert(*args, **kwargs)
        kernel = next(t for t in model.graph.initializer if "down0_conv" in t.name)
        kernel.CopyFrom(
            numpy_helper.from_array(numpy_helper.to_array(kernel) * np.float32(scale), kernel.name)
        )
        return model

    monkeypatch.setattr(export_onnx, "to_onnx", wrong_to_onnx)


def test_wrong_export_is_refused_and_leaves_the_previous_one(trained_run, tmp_path, monkeypatch):
    """One weight tensor off by 0.1% in the ONNX file is far outside rounding noise.

    The net is trained (see `test_trained_nets_pass_with_the_derived_bound`): a fresh net's
    outputs hardly depend on its weights (masks within 1e-3 of 1/2), so there even 1% would stay
    within the floor of the bound.
    """
    config = trained_run(4)
    out_dir = tmp_path / "out"
    export_onnx.export_run(config.workdir, out_dir=str(out_dir), fp16=True, log=lambda line: None)
    installed = sorted(os.listdir(out_dir))
    before = {
        name: (out_dir / name).read_bytes()
        for name in (export_onnx.ONNX_FILE, export_onnx.ONNX_FP16_FILE, export_onnx.REPORT_FILE)
    }
    _export_wrong_onnx(monkeypatch, 1.001)
    with pytest.raises(
        export_onnx.ParityError,
        match=r"ONNX, onnxruntime CPU's sources differ from float64 .*nothing was "
        "written",
    ) as failure:
        export_onnx.export_run(config.workdir, out_dir=str(out_dir), log=lambda line: None)
    assert "SavedModel" not in str(failure.value)
    assert sorted(os.listdir(out_dir)) == installed
    assert {name: (out_dir / name).read_bytes() for name in before} == before


def test_parity_tolerance_overrides_the_derived_bound(trained_run, tmp_path, monkeypatch):
    config = trained_run(4)
    with pytest.raises(export_onnx.ParityError, match=r"> 1\.00e-12"):
        export_onnx.export_run(
            config.workdir,
            out_dir=str(tmp_path / "strict"),
            parity_tolerance=1e-12,
            log=lambda line: None,
        )
    _export_wrong_onnx(monkeypatch, 1.001)
    report = export_onnx.export_run(
        config.workdir, out_dir=str(tmp_path / "loose"), parity_tolerance=0.1, log=lambda line: None
    )
    assert report["parity_bound"] == 0.1
    assert report["parity_bound_origin"] == "--parity_tolerance=0.1"
    assert export_onnx.source_error(report["parity_float64_max_abs_diff"]["onnx"]) > 1e-5


@pytest.mark.parametrize("tolerance", [0.0, -1e-5, float("nan"), float("inf")])
def test_bad_parity_tolerance_is_a_user_error(exported, tolerance):
    with pytest.raises(UserError, match=r"--parity_tolerance=\S+ is not a bound: give a finite"):
        export_onnx.export_run(str(exported.workdir), parity_tolerance=tolerance)


def test_synthetic_inputs_skip_the_quality_comparison(exported, tmp_path):
    workdir = _copy_run(exported, tmp_path / "run")
    config = json.loads((workdir / "config.json").read_text())
    (workdir / "config.json").write_text(
        json.dumps({**config, "source_a": "npz:/nonexistent/a.npz"})
    )
    report = export_onnx.export_run(str(workdir), log=lambda line: None)
    assert "synthetic" in report["parity_inputs"]
    assert report["parity_quality"] == {"skipped": "no clean sources for synthetic mixtures"}
    assert report["parity_bound_origin"].startswith("derived: ")


def test_reexport_replaces_every_artifact(exported, tmp_path):
    out_dir = tmp_path / "out"
    shutil.copytree(exported.out_dir, out_dir)
    log = []
    export_onnx.export_run(str(exported.inverted_workdir), out_dir=str(out_dir), log=log.append)
    # The fp16 and int8 files of the earlier export are gone: they were not the twins of the new
    # ONNX file.
    assert sorted(os.listdir(out_dir)) == sorted(
        [export_onnx.SAVED_MODEL, export_onnx.ONNX_FILE, export_onnx.REPORT_FILE]
    )
    assert sum(line.startswith("removed ") for line in log) == 2
    for path in (out_dir / export_onnx.ONNX_FILE, out_dir / export_onnx.SAVED_MODEL):
        assert Separator.load(str(path), provider="cpu").metadata["inverted_inputs"] == "true"


def test_staging_left_by_a_killed_export_is_removed(exported, tmp_path):
    out_dir = tmp_path / "out"
    stale = out_dir / f"{export_onnx.STAGING_PREFIX}killed"
    (stale / export_onnx.SAVED_MODEL).mkdir(parents=True)
    (stale / export_onnx.ONNX_FILE).write_bytes(b"half written")
    log = []
    export_onnx.export_run(str(exported.workdir), out_dir=str(out_dir), log=log.append)
    assert not stale.exists()
    assert not [name for name in os.listdir(out_dir) if name.startswith(".")]
    assert any(line == f"removed {stale}, left by an export that did not finish" for line in log)


def _snapshot(folder):
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def _disk_full_at_onnx(monkeypatch):
    def save(model, path, *args, **kwargs):
        Path(path).write_bytes(b"part of a model")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(export_onnx.onnx, "save", save)


def _disk_full_at_saved_model(monkeypatch):
    import tensorflow as tf

    def save(obj, path, *args, **kwargs):
        # What TensorFlow raises when the disk fills up while it writes the variables.
        raise tf.errors.ResourceExhaustedError(
            None, None, f"{path}/variables/variables_temp; No space left on device"
        )

    monkeypatch.setattr(tf.saved_model, "save", save)


@pytest.mark.parametrize(
    "fill", [_disk_full_at_onnx, _disk_full_at_saved_model], ids=["onnx", "saved_model"]
)
def test_full_disk_under_out_keeps_the_previous_export(exported, tmp_path, monkeypatch, fill):
    out_dir = tmp_path / "out"
    shutil.copytree(exported.out_dir, out_dir)
    before = _snapshot(out_dir)
    fill(monkeypatch)
    with pytest.raises(
        UserError,
        match=rf"cannot write the export in --out={re.escape(str(out_dir))} "
        r"\(No space left on device\): free disk space",
    ):
        export_onnx.export_run(str(exported.workdir), out_dir=str(out_dir), log=print)
    assert _snapshot(out_dir) == before
    assert not [name for name in os.listdir(out_dir) if name.startswith(".")]


@pytest.mark.parametrize(
    "state",
    [b"\xff\xfe not a checkpoint state", b"", "directory"],
    ids=["garbage", "empty", "directory"],
)
def test_unreadable_checkpoint_state_falls_back_to_the_checkpoint_files(exported, tmp_path, state):
    workdir = _copy_run(exported, tmp_path / "run")
    state_file = workdir / "checkpoints" / "checkpoint"
    state_file.unlink()
    if state == "directory":
        state_file.mkdir()
    else:
        state_file.write_bytes(state)
    before = _snapshot(workdir)
    report = export_onnx.export_run(str(workdir), out_dir=str(tmp_path / "out"), log=print)
    assert report["checkpoint"] == exported.report["checkpoint"].replace(
        str(exported.workdir), str(workdir)
    )
    # Export reads the run; only training repairs it.
    assert _snapshot(workdir) == before


def test_an_export_in_progress_keeps_another_out(exported, tmp_path):
    from aur_tf import rundir

    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with rundir.exclusive(str(out_dir), "export"):
        with pytest.raises(UserError, match="is in use by another export"):
            export_onnx.export_run(str(exported.workdir), out_dir=str(out_dir), log=print)
    assert os.listdir(out_dir) == []


def _run_cli(*flags):
    return subprocess.run(
        [sys.executable, "-m", "export.onnx", *flags],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_error_is_one_line_with_status_2(tmp_path):
    result = _run_cli(f"--workdir={tmp_path / 'nothing'}")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        f"error: --workdir={tmp_path / 'nothing'} does not exist: give the workdir "
        "of a training run"
    ]
    assert "Traceback" not in result.stderr


def test_cli_bad_parity_tolerance_is_one_line_with_status_2(exported):
    result = _run_cli(f"--workdir={exported.workdir}", "--parity_tolerance=nan")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [
        "error: --parity_tolerance=nan is not a bound: give a finite number > 0 "
        "(absolute, on the sources), or leave it out for the derived one"
    ]
    assert "Traceback" not in result.stderr
