"""Export a training run for deployment: `python -m export.onnx --workdir=W [--out=DIR] [--fp16]
[--int8] [--opset=N] [--parity_tolerance=X]`.

Writes into DIR (default W/export):
  saved_model/          TF SavedModel; signature `serving_default(mixture)` ->
                        {source_a, source_b, mask}; its metadata in assets.extra/metadata.json
  separator.onnx        the same computation in ONNX: input `mixture` [batch, H, W, C] float32 in
                        [0, 1], outputs `source_a`, `source_b`, `mask` (float32, same shape),
                        dynamic batch, metadata_props describing the run
  separator_fp16.onnx   with --fp16: float16 weights and arithmetic, float32 inputs and outputs
  separator_int8.onnx   with --int8: statically quantised (QDQ: int8 weights per channel and
                        activations), float32 inputs and outputs
  export.json           this export's report: files, opset, parity figures

The computation is `aur_tf.separator.separation_function` of the float32 mask net restored from
the run's latest checkpoint, or its selected one under `--select=unsupervised` or
`--average_checkpoints` (a mixed-precision run's variables are float32 too). Inverted runs
take natural images: the inversion is part of the exported function.

How the ONNX file is made: tf2onnx (`tf2onnx.convert.from_function`) converts the
`separation_function` of `export.graph.export_net(mask_net)`: the same net and weights with its
two bottleneck convolutions written as MatMuls over the batch, which onnxruntime's CPU provider
runs much faster than its Conv and ConvTranspose at 2x2 or 4x4 pixels (see export/graph.py); the
SavedModel's signature is the `separation_function` of the net itself.
`keras.Model.export(format="onnx")` would export only the mask net's own call (one unnamed
output, no estimates, no inversion); on the TensorFlow backend it is itself a wrapper around the
same tf2onnx call plus a monkeypatch of tf2onnx internals for numpy 2 that tf2onnx 1.17 here does
not need.

Before anything is written under its final name, a parity self-check runs Keras (eager, float32),
the reloaded SavedModel and the ONNX file (onnxruntime, CPU) on a batch of the run's validation
mixtures (rebuilt from its config; deterministic synthetic mixtures when the sources cannot be
loaded, which is said) and compares each with a float64 evaluation of the same weights
(`float64_twin`: the net rebuilt with float64 variables and arithmetic). It judges what a user
gets, the separated sources `source_a` and `source_b`; the mask's differences are reported but do
not decide (where the mixture is 0 the mask does not change the output at all).

The bound. Each runtime sums the terms of every convolution (up to 64 * width of them) in its own
order, so each carries its own float32 rounding noise, and two runtimes differ by up to the
sum of theirs. How large that noise is depends on the net: it grows with the scale of weights and
activations and with the logits (a trained net's reach |z| ~ 25 where a fresh one's stay below
1), so no fixed number fits every run. Keras's own error against float64, e_K = max |difference|
over both sources and every pixel, measures it for this net on these inputs, and a runtime passes
when its own error against float64 is at most

    bound = max(NOISE_MULTIPLE * e_K, eps32 * ESTIMATE_RANGE * L).

NOISE_MULTIPLE = 8: another order of summation changes the noise by a factor, not by orders of
magnitude. A sum of n terms kept in b partial sums errs by ~sqrt(n / b) ulps, so a library with 16
times fewer partial sums than Keras errs 4 times more, and a factor 2 covers the spread of a
maximum over ~10^5 values; onnxruntime and the SavedModel err 0.4-1 e_K on trained nets of widths
4 to 32. The floor, eps32 * ESTIMATE_RANGE * L = 2^-23 * 2 * 8 = 1.9e-6, is one float32 ulp of
relative error per convolution layer (L = 8) on estimates spanning 2 ([0, 2]; [-1, 1] inverted):
where Keras is near-exact (saturated masks, blank mixtures) e_K says nothing about another
runtime's rounding. A wrong export stands far above both terms on a trained net: one weight
tensor off by 0.1% moves a width-16 net's sources by 2e-4 to 1e-3 (a fresh net's outputs hardly
depend on its weights, its masks staying within 1e-3 of 1/2).

Where the clean sources are known, each runtime's estimates are also scored against them
(`evaluation.score_estimates`, in the net's own domain as eval.json is, so an inverted run's
estimates are turned back first), and a runtime's mean PSNR must agree with Keras's within
PSNR_AGREEMENT_DB = 0.01 dB. With synthetic mixtures there is nothing to score against; that part
is skipped and the report says so. `--parity_tolerance=X` replaces the derived bound by X
(absolute, on the sources, against float64); the PSNR agreement still applies.

The int8 file (`--int8`): `onnxruntime.quantization.quantize_static` in QDQ format of the
net's all-convolution form (`graph.export_net(..., for_int8=True)`), weights int8 per output
channel, activations uint8 with a zero point, the last convolution and the separation formula
left in float32 (`float32_tail`), calibrated (min-max) on CALIBRATION_MIXTURES
training mixtures rebuilt from the run's config (validation stays unseen). It is reported, never
judged: its max |difference| from the float32 ONNX, its PSNR/SSIM on the validation mixtures
beside the float32 file's, and both files' speed at batch SPEED_BATCH on this machine's CPU.

A failed check installs nothing and ends with exit status 1. All files are built in a temporary
directory inside DIR and moved into place by rename, so a crash never leaves a partial artifact
under a final name.

Bad input (no workdir, no or damaged checkpoint, unwritable DIR, unsupported opset, a
--parity_tolerance that is not a finite number > 0) ends with one line `error: ...` and exit
status 2.
"""

import configparser
import glob
import importlib.metadata
import json
import math
import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from absl import app, flags  # noqa: E402

from aur_tf import cli, evaluation  # noqa: E402
from aur_tf.data.mixtures import MixtureSplit, load_mixture_dataset  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402
from aur_tf.rundir import (  # noqa: E402
    SELECTED_DIR,
    exclusive,
    load_run,
    restore_mask_net,
    writes_to,
)
from aur_tf.separator import (  # noqa: E402
    INPUT_NAME,
    OUTPUT_NAMES,
    SAVED_MODEL_METADATA,
    Separator,
    separation_function,
)
from export import graph  # noqa: E402

SAVED_MODEL = "saved_model"
ONNX_FILE = "separator.onnx"
ONNX_FP16_FILE = "separator_fp16.onnx"
ONNX_INT8_FILE = "separator_int8.onnx"
REPORT_FILE = "export.json"
DEFAULT_OPSET = 17
# The opsets tf2onnx 1.17 is tested with; older ones need IR versions this graph does not need.
SUPPORTED_OPSETS = range(14, max(tf2onnx.constants.OPSET_TO_IR_VERSION) + 1)
# The parity bound (see the module docstring): a runtime's max |error| of the sources against
# float64 may be NOISE_MULTIPLE times Keras float32's, and never less than the floor
# float32 eps * ESTIMATE_RANGE * (convolution layers).
NOISE_MULTIPLE = 8
ESTIMATE_RANGE = 2.0
PSNR_AGREEMENT_DB = 0.01
SOURCE_NAMES = OUTPUT_NAMES[:2]
PARITY_MIXTURES = 128
CALIBRATION_MIXTURES = 512
CALIBRATION_BATCH = 64
SPEED_BATCH = 256
SPEED_REPETITIONS = 5
PARITY_EXIT_CODE = 1
_SYNTHETIC_SEED = 0


class ParityError(Exception):
    """An exported artifact's separation differs from the net's beyond float32 rounding."""


def parity_mixtures(config, count=PARITY_MIXTURES):
    """Inputs for the parity check, as the exported function takes them, and their sources.

    Returns:
      `(mixtures, split, description)`: `[count, H, W, C]` float32 in [0, 1] natural images (an
      inverted run's validation mixtures are turned back); the `MixtureSplit` of the same
      mixtures in the net's own domain (inverted for inverted runs, as evaluation scores them),
      or None for synthetic mixtures; and a sentence saying where they come from.
    """
    try:
        # Validation, not test: test is scored once, when training ends, and nowhere else.
        held_out = load_mixture_dataset(config).validation
    except UserError as e:
        shape = (count, config.image_size, config.image_size, config.channels)
        mixtures = np.random.default_rng(_SYNTHETIC_SEED).random(shape, dtype=np.float32)
        return (
            mixtures,
            None,
            (
                f"{count} deterministic synthetic mixtures (uniform, seed {_SYNTHETIC_SEED}), "
                f"because the run's sources cannot be loaded: {e}"
            ),
        )
    split = MixtureSplit(
        held_out.mixtures[:count], held_out.sources_a[:count], held_out.sources_b[:count]
    )
    mixtures = split.mixtures
    return (
        (1.0 - mixtures if config.invert else mixtures),
        split,
        (
            f"{len(mixtures)} validation mixtures rebuilt from the run's config "
            f"({config.source_a} + {config.source_b})"
        ),
    )


def calibration_mixtures(config, count=CALIBRATION_MIXTURES):
    """`[count, H, W, C]` float32 natural-image training mixtures for int8 calibration.

    Training, not validation: the quantised file is then scored on mixtures it was not calibrated
    on. Deterministic synthetic mixtures (seed 1) stand in when the sources cannot be loaded.
    """
    try:
        train = load_mixture_dataset(config).train
    except UserError:
        shape = (count, config.image_size, config.image_size, config.channels)
        return np.random.default_rng(_SYNTHETIC_SEED + 1).random(shape, dtype=np.float32)
    mixtures = train.mixtures[:count]
    return 1.0 - mixtures if config.invert else mixtures


def aur_tf_version():
    """The installed aur_tf version, or the one in setup.cfg when run from a source checkout."""
    try:
        return importlib.metadata.version("aur_tf")
    except importlib.metadata.PackageNotFoundError:
        setup_cfg = configparser.ConfigParser()
        setup_cfg.read(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.cfg"))
        return setup_cfg.get("metadata", "version", fallback="unknown")


def run_metadata(config, evaluation, checkpoint):
    """Metadata of every artifact of a run, as strings (the type of ONNX metadata_props).

    The `eval_` figures are the validation scores of the net exported: eval.json's `selected`
    when `checkpoint` is the run's selected one (`--select=unsupervised`, or the average of
    `--average_checkpoints`, whose steps go into `averaged_steps`), else its latest evaluation.
    """
    metadata = {
        "image_size": str(config.image_size),
        "channels": str(config.channels),
        "value_range": "0..1",
        "inverted_inputs": "true" if config.invert else "false",
        "training_config": config.to_json(),
        "checkpoint": os.path.basename(checkpoint),
        "aur_tf_version": aur_tf_version(),
    }
    selected = os.path.basename(os.path.dirname(checkpoint)) == SELECTED_DIR
    scored = evaluation.get("selected", evaluation) if selected else evaluation
    for key in ("psnr_db", "ssim", "step"):
        if key in scored:
            metadata[f"eval_{key}"] = str(scored[key])
    if "split" in evaluation:
        metadata["eval_split"] = str(evaluation["split"])
    if "averaged_steps" in scored:
        metadata["averaged_steps"] = ",".join(str(step) for step in scored["averaged_steps"])
    for key in ("psnr_db", "ssim"):
        if key in evaluation.get("test", {}):
            metadata[f"test_{key}"] = str(evaluation["test"][key])
    return metadata


def save_saved_model(mask_net, separate, metadata, path):
    """Writes a SavedModel whose `serving_default` signature is `separate`."""
    module = tf.Module()
    module.mask_net = mask_net  # tracks the variables `separate` reads
    module.separate = separate
    tf.saved_model.save(module, path, signatures={"serving_default": separate})
    metadata_path = os.path.join(path, SAVED_MODEL_METADATA)
    os.makedirs(os.path.dirname(metadata_path))
    with open(metadata_path, "w") as f:
        json.dump(metadata, f, indent=2, sort_keys=True)


def to_onnx(separate, opset, metadata):
    """Converts `separate` to an ONNX model with named, dynamic-batch I/O and `metadata`."""
    model, _ = tf2onnx.convert.from_function(
        separate, input_signature=separate.input_signature, opset=opset
    )
    # tf2onnx names each unknown batch dimension differently (unk__N, numbered per process);
    # one shared name says they are equal and keeps the file the same from export to export.
    outputs = sorted(model.graph.output, key=lambda o: OUTPUT_NAMES.index(o.name))
    del model.graph.output[:]
    model.graph.output.extend(outputs)
    for value in (*model.graph.input, *model.graph.output):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    _name_constants_by_use(model.graph)
    model.graph.name = "aur_tf_separator"
    model.doc_string = (
        "aur_tf image source separator (Hoshen, ICASSP 2019). Input mixture [batch, H, W, C] "
        "float32 in [0, 1]; outputs source_a = 2*y*M(y), source_b = 2*y - source_a (clean scale, "
        "not clipped) and mask M(y). With inverted_inputs=true, y = 1 - mixture and the source "
        "outputs are 1 - estimate, so inputs are natural images either way."
    )
    onnx.helper.set_model_props(model, {**metadata, "opset": str(opset), "precision": "float32"})
    onnx.checker.check_model(model)
    return model


def _name_constants_by_use(graph):
    """Renames every initializer after its first consumer (`node/inputK`) and sorts them.

    tf2onnx merges equal constants and numbers folded ones while walking sets, so which of the
    original names survives changes from process to process; naming them by the (stable) node
    that reads them makes the exported file byte-for-byte reproducible.
    """
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    renamed = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name in initializers:
                renamed.setdefault(name, f"{node.name}/input{i}")
                node.input[i] = renamed[name]
    for old, new in renamed.items():
        initializers[old].name = new
    ordered = sorted(graph.initializer, key=lambda tensor: tensor.name)
    del graph.initializer[:]
    graph.initializer.extend(ordered)


def to_float16(model):
    """Float16 weights and arithmetic with float32 inputs and outputs.

    The converter ships with onnxruntime (`onnxruntime.transformers.float16`, the same code as
    `onnxconverter_common.float16`), so no dependency is added.
    """
    # Importing onnxruntime.transformers appends its own folder to sys.path; it only adds names.
    from onnxruntime.transformers.float16 import convert_float_to_float16

    converted = convert_float_to_float16(model, keep_io_types=True)
    onnx.helper.set_model_props(
        converted,
        {
            **{p.key: p.value for p in model.metadata_props},
            "precision": "float16 (float32 inputs and outputs)",
        },
    )
    return converted


def float32_tail(graph):
    """Names of the nodes int8 leaves in float32: the last convolution, all after it, and all
    off the path to it.

    These are the mask's logits, its sigmoid and the separation formula (2y, 2y * M, 2y - source
    a). Quantised, the logits (|z| up to ~25 on a trained net) and the outputs would take 256
    levels each, a visible step in every estimate, for under 1% of the work.
    """
    producers = {output: node for node in graph.node for output in node.output}
    # ONNX graphs list their nodes in topological order.
    last = [node for node in graph.node if node.op_type in ("Conv", "ConvTranspose", "MatMul")][-1]
    ancestors, pending = set(), list(last.input)
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in ancestors:
            ancestors.add(node.name)
            pending.extend(node.input)
    return [node.name for node in graph.node if node.name not in ancestors]


def to_int8(fp32_path, int8_path, calibration):
    """Writes the statically quantised (QDQ) twin of the float32 ONNX file at `fp32_path`.

    Args:
      fp32_path: a float32 separator written by `to_onnx`, of `graph.export_net(...,
        for_int8=True)`.
      int8_path: where the int8 file goes.
      calibration: `[N, H, W, C]` float32 mixtures in [0, 1] the activation ranges are taken from.
    """
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):
        def __init__(self):
            self._batches = iter(
                np.array_split(calibration, max(1, len(calibration) // CALIBRATION_BATCH))
            )

        def get_next(self):
            batch = next(self._batches, None)
            return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch)}

    # Unsigned activations with a zero point: onnxruntime's CPU kernels (U8S8) run them ~1.4x
    # faster than symmetric int8 ones (docs/deployment.md). TensorRT's explicit quantisation
    # wants symmetric int8, so there the float32 file with an fp16 engine is the choice.
    quantize_static(
        fp32_path,
        int8_path,
        Reader(),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
        nodes_to_exclude=float32_tail(onnx.load(fp32_path).graph),
    )
    model = onnx.load(int8_path)
    onnx.helper.set_model_props(
        model,
        {
            **{p.key: p.value for p in model.metadata_props},
            "precision": "int8 (QDQ, float32 inputs and outputs)",
        },
    )
    onnx.save(model, int8_path)


def images_per_second(path, batch_size=SPEED_BATCH, repetitions=SPEED_REPETITIONS):
    """Median images/s of the ONNX separator at `path` on onnxruntime's CPU provider."""
    separator = Separator.load(path, provider="cpu")
    mixtures = np.random.default_rng(0).random(
        (batch_size, *separator.input_shape), dtype=np.float32
    )
    separator.separate(mixtures, batch_size=batch_size)  # warm-up: allocation, first run
    rates = []
    for _ in range(repetitions):
        start = time.perf_counter()
        separator.separate(mixtures, batch_size=batch_size)
        rates.append(batch_size / (time.perf_counter() - start))
    return float(np.median(rates))


def max_abs_differences(outputs, reference):
    """`{output name: max |outputs - reference|}` over the batch."""
    return {name: float(np.abs(outputs[name] - reference[name]).max()) for name in OUTPUT_NAMES}


def float64_twin(mask_net):
    """The mask net rebuilt with float64 variables and arithmetic, holding the same weights.

    Every layer, the mask's float32 sigmoid included, computes in float64; the float32 weights
    and inputs convert exactly, so the twin's masks are the float32 net's up to float64 rounding
    (~1e-16), the reference the parity check measures float32 rounding against.
    """

    def in_float64(layer):
        return type(layer).from_config({**layer.get_config(), "dtype": "float64"})

    twin = keras.models.clone_model(mask_net, clone_function=in_float64)
    twin.set_weights([np.asarray(w, np.float64) for w in mask_net.get_weights()])
    return twin


def noise_floor(mask_net):
    """The bound's floor: float32 eps * ESTIMATE_RANGE * (convolution layers of `mask_net`)."""
    depth = sum(
        isinstance(layer, (keras.layers.Conv2D, keras.layers.Conv2DTranspose))
        for layer in mask_net.layers
    )
    return float(np.finfo(np.float32).eps) * ESTIMATE_RANGE * depth


def source_error(errors):
    """The larger of `source_a`'s and `source_b`'s entries of `{output: error}`."""
    return max(errors[name] for name in SOURCE_NAMES)


def parity_bound(keras_error, floor, tolerance=None):
    """The bound on a runtime's max |error| of the sources against float64, and its origin.

    Args:
      keras_error: Keras float32's max |error| of the sources against float64.
      floor: `noise_floor` of the net.
      tolerance: `--parity_tolerance`, overriding the derived bound; None derives it.

    Returns:
      `(bound, origin)`: the bound, and a sentence saying how it was set.
    """
    if tolerance is not None:
        return tolerance, f"--parity_tolerance={tolerance:g}"
    bound = max(NOISE_MULTIPLE * keras_error, floor)
    return bound, (
        f"derived: max({NOISE_MULTIPLE} x Keras float32's error {keras_error:.2e}, "
        f"floor {floor:.2e})"
    )


def separation_scores(outputs, split, invert):
    """Mean PSNR (dB) and SSIM of a runtime's two estimates against `split`'s clean sources.

    Args:
      outputs: `{"source_a", "source_b", ...}`, natural-image estimates `[N, H, W, C]`.
      split: the `MixtureSplit` of the same N mixtures, in the net's own domain.
      invert: whether the net's domain is inverted; its estimates are then turned back, so the
        scores are those eval.json records.
    """
    estimates = [1.0 - outputs[name] if invert else outputs[name] for name in SOURCE_NAMES]
    scores = evaluation.score_estimates(split, *estimates)
    return {"psnr_db": scores["psnr_db"], "ssim": scores["ssim"]}


_TITLES = {
    "keras": "Keras, float32",
    "saved_model": "TF SavedModel",
    "onnx": "ONNX, onnxruntime CPU",
    "onnx_fp16": "fp16 ONNX, onnxruntime CPU",
    "onnx_int8": "int8 ONNX, onnxruntime CPU",
}


def check_parity(mask_net, invert, paths, mixtures, split, tolerance, log):
    """Compares the exported artifacts with the Keras net and a float64 evaluation.

    Args:
      mask_net: the float32 mask net the artifacts were exported from.
      invert: whether it was trained on inverted images (`Config.invert`).
      paths: `{"saved_model": dir, "onnx": file}` and optionally `"onnx_fp16"` and
        `"onnx_int8"` files.
      mixtures: `[N, H, W, C]` float32 in [0, 1], natural images.
      split: the `MixtureSplit` of `mixtures` in the net's domain, or None (synthetic mixtures).
      tolerance: `--parity_tolerance`, or None for the derived bound.
      log: called with the lines of the comparison tables.

    Returns:
      `(figures, failures)`: the report's parity entries (`parity_max_abs_diff` from Keras and
      `parity_float64_max_abs_diff` from float64, `{runtime: {output: max abs difference}}`;
      `parity_bound` and `parity_bound_origin`; `parity_quality`; `fp16_max_abs_diff` and
      `int8_max_abs_diff` from the float32 ONNX or None), and one sentence per failed
      requirement (empty when it passed). The fp16 and int8 files are reported, never judged.
      All runs are on CPU.
    """
    reference = {
        name: value.numpy()
        for name, value in separation_function(float64_twin(mask_net), invert, "float64")
        .python_function(tf.constant(mixtures, tf.float64))
        .items()
    }
    outputs = {
        "keras": {
            name: value.numpy()
            for name, value in separation_function(mask_net, invert)
            .python_function(tf.constant(mixtures))
            .items()
        }
    }
    outputs.update(
        {
            label: dict(
                zip(
                    OUTPUT_NAMES,
                    Separator.load(path, provider="cpu").separate(mixtures, return_mask=True),
                )
            )
            for label, path in paths.items()
        }
    )
    judged = ("saved_model", "onnx")
    from_keras = {label: max_abs_differences(outputs[label], outputs["keras"]) for label in judged}
    from_float64 = {
        label: max_abs_differences(outputs[label], reference) for label in ("keras", *judged)
    }
    bound, origin = parity_bound(
        source_error(from_float64["keras"]), noise_floor(mask_net), tolerance
    )

    log(f"parity bound on the sources' max |difference| from float64: {bound:.2e} ({origin})")
    log(f"{'max |difference|':<38}{'  '.join(f'{n:>9}' for n in OUTPUT_NAMES)}")
    for title, table in (("from float64", from_float64), ("from Keras", from_keras)):
        for label, figures in table.items():
            log(
                f"  {_TITLES[label]:<22} {title:<12} "
                f"{'  '.join(f'{figures[n]:9.2e}' for n in OUTPUT_NAMES)}"
            )
    failures = [
        f"{_TITLES[label]}'s sources differ from float64 by "
        f"{source_error(from_float64[label]):.2e} > {bound:.2e}"
        for label in judged
        if source_error(from_float64[label]) > bound
    ]

    if split is None:
        quality = {"skipped": "no clean sources for synthetic mixtures"}
        log("separation quality not compared: no clean sources for synthetic mixtures")
    else:
        scores = {label: separation_scores(outputs[label], split, invert) for label in outputs}
        quality = {
            "against": "clean validation sources",
            "psnr_agreement_db": PSNR_AGREEMENT_DB,
            "scores": scores,
        }
        log(f"{f'separation, {len(mixtures)} validation mixtures':<39}PSNR dB    SSIM")
        for label, figures in scores.items():
            log(f"  {_TITLES[label]:<36} {figures['psnr_db']:7.3f}  {figures['ssim']:.4f}")
        keras_psnr = scores["keras"]["psnr_db"]
        failures += [
            f"{_TITLES[label]}'s PSNR {scores[label]['psnr_db']:.3f} dB differs from "
            f"Keras's {keras_psnr:.3f} dB by more than {PSNR_AGREEMENT_DB} dB"
            for label in judged
            if abs(scores[label]["psnr_db"] - keras_psnr) > PSNR_AGREEMENT_DB
        ]

    reduced = {}
    for label, precision in (("onnx_fp16", "fp16"), ("onnx_int8", "int8")):
        reduced[f"{precision}_max_abs_diff"] = None
        if label in outputs:
            errors = max_abs_differences(outputs[label], outputs["onnx"])
            reduced[f"{precision}_max_abs_diff"] = errors
            log(
                f"{precision} ONNX max |difference| from float32 ONNX: "
                f"{', '.join(f'{n} {v:.2e}' for n, v in errors.items())}"
            )
    figures = {
        "parity_max_abs_diff": from_keras,
        "parity_float64_max_abs_diff": from_float64,
        "parity_bound": bound,
        "parity_bound_origin": origin,
        "parity_quality": quality,
        **reduced,
    }
    return figures, failures


def check_tolerance(tolerance):
    """Raises `UserError` unless `tolerance` (`--parity_tolerance`) is None or finite and > 0."""
    if tolerance is not None and not (math.isfinite(tolerance) and tolerance > 0):
        raise UserError(
            f"--parity_tolerance={tolerance:g} is not a bound: give a finite number "
            "> 0 (absolute, on the sources), or leave it out for the derived one"
        )


STAGING_PREFIX = ".export-"


def _make_staging_dir(out_dir, log):
    """A fresh staging folder in `out_dir`; staging folders found there are left by exports that
    were killed (the caller holds `out_dir`'s lock, so no live export owns one) and are removed.
    """
    for stale in glob.glob(os.path.join(glob.escape(out_dir), STAGING_PREFIX + "*")):
        if os.path.isdir(stale) and not os.path.islink(stale):
            shutil.rmtree(stale, ignore_errors=True)
            log(f"removed {stale}, left by an export that did not finish")
    try:
        return tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir)
    except OSError as e:
        raise UserError(
            f"cannot write to --out={out_dir} ({e.strerror}): choose a writable directory"
        ) from None


def _make_out_dir(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(
            f"cannot write to --out={out_dir} ({e.strerror}): choose a writable directory"
        ) from None


def _install(staging, out_dir, names):
    """Moves finished artifacts from `staging` to `out_dir` by rename (same file system)."""
    for name in names:
        target = os.path.join(out_dir, name)
        if os.path.isdir(target):
            # A non-empty directory cannot be replaced in one rename: move the old one aside first.
            os.replace(target, os.path.join(staging, f"{name}.old"))
        os.replace(os.path.join(staging, name), target)


def export_run(
    workdir,
    out_dir=None,
    fp16=False,
    int8=False,
    opset=DEFAULT_OPSET,
    parity_tolerance=None,
    log=print,
):
    """Exports the run in `workdir` (see the module docstring) and returns the report.

    Args:
      workdir: a training run's workdir.
      out_dir: where the artifacts go; default `workdir/export`.
      fp16: also write `separator_fp16.onnx` and measure its error against the float32 ONNX.
      int8: also write `separator_int8.onnx` (see the module docstring), and measure its error,
        PSNR/SSIM and speed against the float32 ONNX.
      opset: ONNX opset of the ONNX files.
      parity_tolerance: bound on each runtime's max |error| of the sources against float64,
        replacing the derived one; None derives it.
      log: called with each line of progress and figures.

    Returns:
      The report written to `out_dir/export.json`: paths, opset, the parity inputs and the
      figures of `check_parity` (max abs differences from Keras and from float64, the bound and
      its origin, PSNR/SSIM of each runtime, fp16's and int8's differences from the float32
      ONNX) and, with int8, `int8_speed`: images/s of both ONNX files at batch SPEED_BATCH.

    Raises:
      UserError: bad workdir, checkpoint, out_dir, opset or parity_tolerance.
      ParityError: an artifact's sources differ from float64 beyond the bound, or its PSNR from
        Keras's beyond `PSNR_AGREEMENT_DB`; then nothing is installed.
    """
    check_tolerance(parity_tolerance)
    if opset not in SUPPORTED_OPSETS:
        raise UserError(
            f"--opset={opset} is not supported: tf2onnx {tf2onnx.__version__} "
            f"converts opsets {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}"
        )
    config, evaluation = load_run(workdir)
    out_dir = out_dir or os.path.join(workdir, "export")
    mask_net, checkpoint = restore_mask_net(workdir, config)
    log(
        f"restored the mask net from {checkpoint} (float32, width {config.mask_width}, "
        f"{config.image_size}x{config.image_size}x{config.channels}, inverted inputs: "
        f"{'yes' if config.invert else 'no'})"
    )
    separate = separation_function(mask_net, config.invert)
    metadata = run_metadata(config, evaluation, checkpoint)
    _make_out_dir(out_dir)
    # Two exports into one folder would interleave their files; the lock also proves that no
    # staging folder in it belongs to a live export.
    # A failed write (a full disk) leaves the previous export as it was: nothing is installed
    # before every artifact is written and checked.
    with (
        exclusive(out_dir, "export"),
        writes_to(f"the export in --out={out_dir}", then="export again"),
    ):
        staging = _make_staging_dir(out_dir, log)
        try:
            artifacts = {"saved_model": SAVED_MODEL, "onnx": ONNX_FILE}
            save_saved_model(mask_net, separate, metadata, os.path.join(staging, SAVED_MODEL))
            model = to_onnx(
                separation_function(graph.export_net(mask_net), config.invert), opset, metadata
            )
            onnx.save(model, os.path.join(staging, ONNX_FILE))
            log(f"converted to ONNX with tf2onnx {tf2onnx.__version__}, opset {opset}")
            if fp16:
                onnx.save(to_float16(model), os.path.join(staging, ONNX_FP16_FILE))
                artifacts["onnx_fp16"] = ONNX_FP16_FILE
            if int8:
                subpixel_path = os.path.join(staging, "subpixel.onnx")
                onnx.save(
                    to_onnx(
                        separation_function(
                            graph.export_net(mask_net, for_int8=True), config.invert
                        ),
                        opset,
                        metadata,
                    ),
                    subpixel_path,
                )
                to_int8(
                    subpixel_path,
                    os.path.join(staging, ONNX_INT8_FILE),
                    calibration_mixtures(config),
                )
                artifacts["onnx_int8"] = ONNX_INT8_FILE
                log(f"quantised to int8 on {CALIBRATION_MIXTURES} training mixtures")

            mixtures, split, description = parity_mixtures(config)
            log(f"parity check on {description}")
            parity, failures = check_parity(
                mask_net,
                config.invert,
                {label: os.path.join(staging, name) for label, name in artifacts.items()},
                mixtures,
                split,
                parity_tolerance,
                log,
            )

            report = {
                "workdir": os.path.abspath(workdir),
                "out_dir": os.path.abspath(out_dir),
                "checkpoint": checkpoint,
                "opset": opset,
                "tf2onnx_version": tf2onnx.__version__,
                "files": {
                    label: os.path.abspath(os.path.join(out_dir, name))
                    for label, name in artifacts.items()
                },
                "inverted_inputs": config.invert,
                "parity_inputs": description,
                **parity,
                "metadata": metadata,
            }
            if int8:
                speed = {
                    label: images_per_second(os.path.join(staging, artifacts[label]))
                    for label in ("onnx", "onnx_int8")
                }
                report["int8_speed"] = {
                    "batch_size": SPEED_BATCH,
                    "images_per_second": speed,
                    "ratio": speed["onnx_int8"] / speed["onnx"],
                }
                log(
                    f"speed at batch {SPEED_BATCH} (onnxruntime CPU): float32 {speed['onnx']:.0f}, "
                    f"int8 {speed['onnx_int8']:.0f} images/s "
                    f"({report['int8_speed']['ratio']:.2f}x)"
                )
            if failures:
                raise ParityError(
                    f"the exported separator fails the parity check: "
                    f"{'; '.join(failures)}; nothing was written to {out_dir}"
                )
            with open(os.path.join(staging, REPORT_FILE), "w") as f:
                json.dump(report, f, indent=2, sort_keys=True)
            for wanted, name, flag in (
                (fp16, ONNX_FP16_FILE, "--fp16"),
                (int8, ONNX_INT8_FILE, "--int8"),
            ):
                stale = os.path.join(out_dir, name)
                if not wanted and os.path.exists(stale):
                    # Left in place it would be mistaken for the twin of the new separator.onnx.
                    os.remove(stale)
                    log(f"removed {stale} of an earlier export (no {flag} this time)")
            _install(staging, out_dir, [*artifacts.values(), REPORT_FILE])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote {', '.join(report['files'].values())} and {REPORT_FILE} in {out_dir}")
    return report


def _define_flags():
    flags.DEFINE_string("workdir", None, "Workdir of the training run to export.")
    flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/export).")
    flags.DEFINE_bool(
        "fp16",
        False,
        "Also write separator_fp16.onnx (float16 compute, float32 "
        "inputs and outputs) and print its error against the float32 ONNX.",
    )
    flags.DEFINE_bool(
        "int8",
        False,
        "Also write separator_int8.onnx (static int8 quantisation, "
        "QDQ, calibrated on training mixtures) and print its error, validation "
        "PSNR/SSIM and speed beside the float32 ONNX's.",
    )
    flags.DEFINE_integer(
        "opset",
        DEFAULT_OPSET,
        f"ONNX opset ({SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}).",
    )
    flags.DEFINE_float(
        "parity_tolerance",
        None,
        "Bound on each runtime's max |difference| of "
        "source_a and source_b from a float64 evaluation, replacing the one "
        "derived from Keras float32's own error (see python -m export.onnx's "
        "docstring). A finite number > 0.",
    )
    flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    cli.configure_logging()
    values = flags.FLAGS
    try:
        export_run(
            values.workdir,
            values.out,
            fp16=values.fp16,
            int8=values.int8,
            opset=values.opset,
            parity_tolerance=values.parity_tolerance,
        )
    except UserError as e:
        cli.fail(e)
    except ParityError as e:
        cli.fail(e, code=PARITY_EXIT_CODE)


def run():
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
