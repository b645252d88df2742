"""Tests of the deployment forms: the exported graph, int8, provider options, no TensorFlow."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import onnx
import pytest

from aur_tf.errors import UserError
from aur_tf.separator import ONNX_PROVIDERS, OUTPUT_NAMES, ProviderOptions, Separator
from export import onnx as export_onnx

REPO_ROOT = Path(__file__).resolve().parents[2]
IMAGE_SIZE = 32  # of the shared run built in conftest.py


# --- the exported graph -----------------------------------------------------------------------


def _mask_net_with_statistics(image_size, width):
    """A fresh float32 mask net whose BatchNorm statistics are far from 0 and 1, and the logits
    with them, so that a misplaced tap or phase shows."""
    import keras

    from aur_tf import models

    keras.utils.set_random_seed(0)
    mask_net = models.build_mask_net(image_size, 1, width)
    rng = np.random.default_rng(0)
    for layer in mask_net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(1e-3, 1e-2, layer.moving_variance.shape))
    return mask_net


@pytest.mark.parametrize("image_size", [32, 64])  # bottleneck 2x2 and 4x4
@pytest.mark.parametrize("for_int8", [False, True])
def test_export_net_computes_the_mask_net_against_float64(image_size, for_int8):
    from export import graph

    mask_net = _mask_net_with_statistics(image_size, 4)
    mixtures = np.random.default_rng(1).random((3, image_size, image_size, 1), dtype=np.float32)
    reference = np.asarray(
        export_onnx.float64_twin(mask_net)(mixtures.astype(np.float64), training=False)
    )
    keras_error = np.abs(np.asarray(mask_net(mixtures, training=False)) - reference).max()
    exported = graph.export_net(mask_net, for_int8=for_int8)
    error = np.abs(np.asarray(exported(mixtures, training=False)) - reference).max()
    # Masks spread over (0, 1), mostly unsaturated, as a trained net's are.
    assert reference.std() > 0.2 and ((reference > 0.01) & (reference < 0.99)).mean() > 0.95
    assert error <= max(export_onnx.NOISE_MULTIPLE * keras_error, export_onnx.noise_floor(mask_net))
    replaced = {type(layer).__name__ for layer in exported.layers}
    assert {"MatMulConv2D", "MatMulConv2DTranspose"} <= replaced
    assert ("SubpixelConv2DTranspose" in replaced) == for_int8


def test_onnx_file_has_the_matmul_bottleneck(exported):
    nodes = onnx.load(exported.onnx_path).graph.node
    ops = {node.op_type for node in nodes}
    assert "MatMul" in ops and "ConvTranspose" in ops  # the larger layers stay ConvTranspose
    # Standard ONNX only: no provider-specific fused ops that a GPU provider could not run.
    assert all(node.domain in ("", "ai.onnx") for node in nodes)
    int8_nodes = onnx.load(exported.report["files"]["onnx_int8"]).graph.node
    int8_ops = {node.op_type for node in int8_nodes}
    assert "ConvTranspose" not in int8_ops and "DepthToSpace" in int8_ops
    assert "QuantizeLinear" in int8_ops


# --- int8 -------------------------------------------------------------------------------------


def test_int8_is_reported_and_separates(exported):
    report = exported.report
    path = report["files"]["onnx_int8"]
    assert os.path.basename(path) == export_onnx.ONNX_INT8_FILE and os.path.isfile(path)
    separator = Separator.load(path, provider="cpu")
    assert separator.metadata["precision"].startswith("int8")
    assert separator.metadata["image_size"] == str(IMAGE_SIZE)
    source_a, source_b = separator.separate(exported.mixtures)
    assert source_a.shape == exported.mixtures.shape and source_a.dtype == np.float32
    # The separation formula stays float32 (export_onnx.float32_tail).
    np.testing.assert_allclose(source_a + source_b, 2 * exported.mixtures, atol=1e-6)
    errors = report["int8_max_abs_diff"]
    assert set(errors) == set(OUTPUT_NAMES) and 0 < max(errors.values()) < 1
    scores = report["parity_quality"]["scores"]
    assert set(scores["onnx_int8"]) == {"psnr_db", "ssim"}
    speed = report["int8_speed"]
    assert speed["batch_size"] == export_onnx.SPEED_BATCH
    assert set(speed["images_per_second"]) == {"onnx", "onnx_int8"}
    assert speed["ratio"] == pytest.approx(
        speed["images_per_second"]["onnx_int8"] / speed["images_per_second"]["onnx"]
    )
    assert any(line.startswith("int8 ONNX max |difference|") for line in exported.log)
    assert any(line.startswith("speed at batch") for line in exported.log)


def test_calibration_uses_training_mixtures(exported):
    from aur_tf.data.mixtures import load_mixture_dataset

    calibration = export_onnx.calibration_mixtures(exported.config, count=8)
    dataset = load_mixture_dataset(exported.config)
    np.testing.assert_array_equal(calibration, dataset.train.mixtures[:8])


# --- provider options -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "provider, options, message",
    [
        ("cpu", ProviderOptions(device_id=1), "--device_id=1 applies to --provider=cuda"),
        ("auto", ProviderOptions(device_id=-1), "--device_id=-1 is not a GPU"),
        ("cuda", ProviderOptions(trt_fp16=True), "--trt_fp16 and --trt_engine_cache apply to"),
        ("cpu", ProviderOptions(trt_engine_cache="cache"), "apply to --provider=tensorrt or auto"),
        ("cpu", ProviderOptions(threads=0), "--threads=0 must be >= 1"),
    ],
)
def test_provider_options_that_cannot_apply_are_refused(exported, provider, options, message):
    with pytest.raises(UserError, match=message):
        Separator.load(exported.onnx_path, provider=provider, options=options)


def test_provider_options_are_refused_for_saved_models(exported):
    with pytest.raises(UserError, match="--threads=2 apply to .onnx separators only"):
        Separator.load(exported.saved_model_path, options=ProviderOptions(threads=2))


def test_engine_cache_must_be_a_folder(exported, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(UserError, match="is not a folder"):
        Separator.load(
            exported.onnx_path,
            provider="tensorrt",
            options=ProviderOptions(trt_engine_cache=str(blocker)),
        )


def test_provider_options_reach_onnxruntime():
    options = ProviderOptions(device_id=2, trt_fp16=True, trt_engine_cache="engines")
    assert options.for_provider(ONNX_PROVIDERS["tensorrt"]) == {
        "device_id": "2",
        "trt_fp16_enable": "True",
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": os.path.abspath("engines"),
    }
    assert options.for_provider(ONNX_PROVIDERS["cuda"]) == {"device_id": "2"}
    assert options.for_provider(ONNX_PROVIDERS["cpu"]) == {}
    assert options.flags() == "--device_id=2 --trt_fp16 --trt_engine_cache=engines"


def test_cpu_threads_are_used(exported):
    separator = Separator.load(
        exported.onnx_path, provider="cpu", options=ProviderOptions(threads=1)
    )
    expected = Separator.load(exported.onnx_path, provider="cpu").separate(exported.mixtures)
    for got, want in zip(separator.separate(exported.mixtures), expected):
        np.testing.assert_allclose(got, want, atol=1e-6)


@pytest.mark.parametrize("images", [1, 2, 3, 8])
def test_batches_split_over_threads_give_the_single_thread_results(exported, images):
    # 3 threads: batches of 1 and 2 run on the intra-op session, 3 and 8 in uneven parts.
    mixtures = exported.mixtures[:images]
    split = Separator.load(exported.onnx_path, provider="cpu", options=ProviderOptions(threads=3))
    single = Separator.load(exported.onnx_path, provider="cpu", options=ProviderOptions(threads=1))
    got = split.separate(mixtures, return_mask=True)
    want = single.separate(mixtures, return_mask=True)
    for name, g, w in zip(OUTPUT_NAMES, got, want):
        assert g.shape == w.shape == mixtures.shape, name
        np.testing.assert_allclose(g, w, atol=1e-6, err_msg=name)


def _run(*args, timeout=120):
    return subprocess.run(
        [sys.executable, *args],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_separate_cli_refuses_options_of_another_provider(exported, tmp_path):
    result = _run(
        "-m",
        "export.separate",
        f"--model={exported.onnx_path}",
        f"--out={tmp_path / 'out'}",
        "--provider=cpu",
        "--trt_fp16",
        str(tmp_path / "nothing.png"),
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: --trt_fp16 and --trt_engine_cache apply to --provider=tensorrt or auto, not cpu"
    ]


@pytest.mark.parametrize("provider", ["cuda", "tensorrt"])
def test_bench_gpu_provider_runs_or_fails_in_one_line(exported, provider):
    import onnxruntime as ort

    result = _run(
        "bench/export_speed.py",
        f"--export_dir={exported.out_dir}",
        f"--provider={provider}",
        "--models=separator.onnx",
        "--batch_sizes=1",
        "--repetitions=1",
        "--images_per_repetition=1",
    )
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    try:
        Separator.load(exported.onnx_path, provider=provider)
    except UserError:
        assert result.returncode == 2 and len(errors) == 1
        assert (
            f"provider {provider} is not in this onnxruntime build" in errors[0]
            or f"could not load {ONNX_PROVIDERS[provider]}" in errors[0]
        )
        assert "Traceback" not in result.stderr
    else:  # a machine with the GPU libraries
        assert ONNX_PROVIDERS[provider] in ort.get_available_providers()
        assert result.returncode == 0 and not errors


# --- no TensorFlow where it deploys -----------------------------------------------------------

_NO_TENSORFLOW = textwrap.dedent("""
    import runpy, sys

    class NoTensorFlow:
        # Fails the import of TensorFlow and of what pulls it in, as on a deployment machine
        # where only onnxruntime-gpu, numpy, Pillow and absl-py are installed.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("tensorflow", "keras", "tf2onnx", "tf_keras"):
                raise ImportError(f"no {name} here")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    command = sys.argv[1]
    sys.argv = sys.argv[1:]
    try:
        if command == "separator":
            from aur_tf.separator import Separator
            import numpy as np
            separator = Separator.load(sys.argv[1], provider="cpu")
            a, b = separator.separate(np.load(sys.argv[2]))
            print("separated", a.shape)
        elif command.endswith(".py"):
            runpy.run_path(command, run_name="__main__")
        else:
            runpy.run_module(command, run_name="__main__", alter_sys=True)
    except SystemExit as e:
        code = e.code
    else:
        code = 0
    loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
    print("loaded:", loaded)
    sys.exit(code)
""")


def _run_without_tensorflow(*args):
    return _run("-c", _NO_TENSORFLOW, *args, timeout=300)


def test_onnx_path_imports_no_tensorflow(exported, tmp_path):
    mixtures = tmp_path / "mixtures.npy"
    np.save(mixtures, exported.mixtures)
    int8 = exported.report["files"]["onnx_int8"]

    result = _run_without_tensorflow("separator", int8, str(mixtures))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["separated (8, 32, 32, 1)", "loaded: []"]

    out = tmp_path / "out"
    result = _run_without_tensorflow(
        "export.separate",
        f"--model={int8}",
        f"--out={out}",
        "--provider=cpu",
        "--threads=1",
        str(mixtures),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "loaded: []"
    assert len(os.listdir(out)) == 2 * len(exported.mixtures)

    result = _run_without_tensorflow(
        "bench/export_speed.py",
        f"--export_dir={exported.out_dir}",
        "--batch_sizes=2",
        "--repetitions=1",
        "--images_per_repetition=2",
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "note: saved_model skipped: TensorFlow is not installed" in lines
    assert lines[-1] == "loaded: []"
    assert lines[-2].split()[0] == "2" and "separator_int8.onnx" in result.stdout
