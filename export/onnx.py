"""Export a training run for deployment: `python -m export.onnx --workdir=W [--out=DIR] [--fp16]`.

Writes into DIR (default W/export):
  saved_model/          TF SavedModel; signature `serving_default(mixture)` ->
                        {source_a, source_b, mask}; its metadata in assets.extra/metadata.json
  separator.onnx        the same computation in ONNX: input `mixture` [batch, H, W, C] float32 in
                        [0, 1], outputs `source_a`, `source_b`, `mask` (float32, same shape),
                        dynamic batch, metadata_props describing the run
  separator_fp16.onnx   with --fp16: float16 weights and arithmetic, float32 inputs and outputs
  export.json           this export's report: files, opset, parity figures

The computation is `aur_tf.separator.separation_function` of the float32 mask net restored from
the run's latest checkpoint (a mixed-precision run's variables are float32 too). Inverted runs
take natural images: the inversion is part of the exported function.

How the ONNX file is made: tf2onnx (`tf2onnx.convert.from_function`) converts the very
`tf.function` that is saved as the SavedModel's signature, so both artifacts come from one trace.
`keras.Model.export(format="onnx")` would export only the mask net's own call (one unnamed
output, no estimates, no inversion); on the TensorFlow backend it is itself a wrapper around the
same tf2onnx call plus a monkeypatch of tf2onnx internals for numpy 2 that tf2onnx 1.17 here does
not need.

Before anything is written under its final name, a parity self-check runs Keras (eager), the
reloaded SavedModel and the ONNX file (onnxruntime, CPU) on a batch of the run's real test
mixtures (rebuilt from its config; deterministic synthetic mixtures when the sources cannot be
loaded, which is said). Every output must agree within 1e-5, else nothing is installed and the
exit status is 1. All files are built in a temporary directory inside DIR and moved into place
by rename, so a crash never leaves a partial artifact under a final name.

Bad input (no workdir, no or damaged checkpoint, unwritable DIR, unsupported opset) ends with one
line `error: ...` and exit status 2.
"""
import configparser
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf2onnx  # noqa: E402
from absl import app, flags  # noqa: E402

from aur_tf import cli, models  # noqa: E402
from aur_tf.config import Config  # noqa: E402
from aur_tf.data.mixtures import load_mixture_dataset  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402
from aur_tf.separator import (OUTPUT_NAMES, SAVED_MODEL_METADATA, Separator,  # noqa: E402
                              separation_function)

SAVED_MODEL = "saved_model"
ONNX_FILE = "separator.onnx"
ONNX_FP16_FILE = "separator_fp16.onnx"
REPORT_FILE = "export.json"
DEFAULT_OPSET = 17
# The opsets tf2onnx 1.17 is tested with; older ones need IR versions this graph does not need.
SUPPORTED_OPSETS = range(14, max(tf2onnx.constants.OPSET_TO_IR_VERSION) + 1)
PARITY_TOLERANCE = 1e-5
PARITY_MIXTURES = 128
PARITY_EXIT_CODE = 1
_SYNTHETIC_SEED = 0


class ParityError(Exception):
    """An exported artifact disagrees with the Keras net beyond `PARITY_TOLERANCE`."""


def load_run(workdir):
    """The `Config` and latest evaluation (`{}` if none yet) of the run in `workdir`."""
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir} does not exist: give the workdir of a training run")
    config_path = os.path.join(workdir, "config.json")
    if not os.path.isfile(config_path):
        raise UserError(f"--workdir={workdir} has no config.json: it is not the workdir of a "
                        "training run (python main.py --workdir=...)")
    try:
        with open(config_path) as f:
            config = Config(**json.load(f))
    except (OSError, ValueError, TypeError) as e:
        raise UserError(f"cannot read {config_path} ({e}): it is damaged or from another "
                        "version of aur_tf") from None
    eval_path = os.path.join(workdir, "eval.json")
    if not os.path.isfile(eval_path):
        return config, {}
    try:
        with open(eval_path) as f:
            return config, json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {eval_path} ({e}): it is damaged; delete it to export "
                        "without evaluation figures") from None


def restore_mask_net(workdir, config):
    """Rebuilds the run's mask net in float32 and restores it from the latest checkpoint.

    Only the mask net is read; the discriminator, optimizers and counters in the checkpoint are
    ignored. Every variable of the net must be found in the checkpoint with its shape.

    Returns:
      `(mask_net, checkpoint_path)`: a float32 Keras model `[batch, H, W, C] -> masks`.
    """
    checkpoint_dir = os.path.join(workdir, "checkpoints")
    latest = tf.train.latest_checkpoint(checkpoint_dir)
    if latest is None:
        raise UserError(f"no checkpoint in {checkpoint_dir}: train the run first, or give the "
                        "workdir of a run that saved one")
    mask_net = models.build_mask_net(config.image_size, config.channels, config.mask_width,
                                     "float32")
    # A restore that fails halfway leaves TensorFlow's record of unrestored values behind, which
    # logs one warning per checkpoint value when freed (at the end of the except block below);
    # the one-line error says it all.
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    failure = None
    try:
        status = tf.train.Checkpoint(mask_net=mask_net).restore(latest)
        status.expect_partial().assert_existing_objects_matched()
    # Shape mismatches raise ValueError, missing variables AssertionError, truncated files
    # IndexError (from the checkpoint reader) or an OpError.
    except (tf.errors.OpError, AssertionError, ValueError, IndexError) as e:
        failure = type(e).__name__
    finally:
        tf_logger.setLevel(level)
    if failure:
        raise UserError(f"cannot restore the mask net from {latest} ({failure}): the checkpoint "
                        "is damaged or does not match the run's config.json")
    return mask_net, latest


def parity_mixtures(config, count=PARITY_MIXTURES):
    """Inputs for the parity check, as the exported function takes them.

    Returns:
      `(mixtures, description)`: `[count, H, W, C]` float32 in [0, 1] natural images (an inverted
      run's test mixtures are turned back), and a sentence saying where they come from.
    """
    try:
        test = load_mixture_dataset(config).test
    except UserError as e:
        shape = (count, config.image_size, config.image_size, config.channels)
        mixtures = np.random.default_rng(_SYNTHETIC_SEED).random(shape, dtype=np.float32)
        return mixtures, (f"{count} deterministic synthetic mixtures (uniform, seed "
                          f"{_SYNTHETIC_SEED}), because the run's sources cannot be loaded: {e}")
    mixtures = test.mixtures[:count]
    return (1.0 - mixtures if config.invert else mixtures), (
        f"{len(mixtures)} test mixtures rebuilt from the run's config "
        f"({config.source_a} + {config.source_b})")


def aur_tf_version():
    """The installed aur_tf version, or the one in setup.cfg when run from a source checkout."""
    try:
        return importlib.metadata.version("aur_tf")
    except importlib.metadata.PackageNotFoundError:
        setup_cfg = configparser.ConfigParser()
        setup_cfg.read(os.path.join(os.path.dirname(os.path.dirname(__file__)), "setup.cfg"))
        return setup_cfg.get("metadata", "version", fallback="unknown")


def run_metadata(config, evaluation, checkpoint):
    """Metadata of every artifact of a run, as strings (the type of ONNX metadata_props)."""
    metadata = {
        "image_size": str(config.image_size),
        "channels": str(config.channels),
        "value_range": "0..1",
        "inverted_inputs": "true" if config.invert else "false",
        "training_config": config.to_json(),
        "checkpoint": os.path.basename(checkpoint),
        "aur_tf_version": aur_tf_version(),
    }
    for key in ("psnr_db", "ssim", "step"):
        if key in evaluation:
            metadata[f"eval_{key}"] = str(evaluation[key])
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
    model, _ = tf2onnx.convert.from_function(separate, input_signature=separate.input_signature,
                                             opset=opset)
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
        "outputs are 1 - estimate, so inputs are natural images either way.")
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
    onnx.helper.set_model_props(converted, {
        **{p.key: p.value for p in model.metadata_props},
        "precision": "float16 (float32 inputs and outputs)"})
    return converted


def max_abs_differences(outputs, reference):
    """`{output name: max |outputs - reference|}` over the batch."""
    return {name: float(np.abs(outputs[name] - reference[name]).max()) for name in OUTPUT_NAMES}


def check_parity(separate, paths, mixtures, log):
    """Compares the exported artifacts with the Keras net on `mixtures`.

    Args:
      separate: the separation `tf.function`; its Python body runs eagerly as the Keras reference.
      paths: `{"saved_model": dir, "onnx": file}` and optionally `"onnx_fp16": file`.
      mixtures: `[N, H, W, C]` float32 in [0, 1].
      log: called with the lines of the comparison table.

    Returns:
      `(parity, fp16_error)`: `{"saved_model" | "onnx": {output: max abs difference from
      Keras}}`, and `{output: max abs difference of the fp16 ONNX from the float32 ONNX}` (None
      without an fp16 file). All runs are on CPU.
    """
    reference = {name: value.numpy()
                 for name, value in separate.python_function(tf.constant(mixtures)).items()}
    outputs = {label: dict(zip(OUTPUT_NAMES, Separator.load(path, provider="cpu").separate(
        mixtures, return_mask=True))) for label, path in paths.items()}
    parity = {label: max_abs_differences(outputs[label], reference)
              for label in ("saved_model", "onnx")}
    log(f"max |difference| from Keras      {'  '.join(f'{n:>9}' for n in OUTPUT_NAMES)}")
    for label, title in (("saved_model", "TF SavedModel"), ("onnx", "ONNX, onnxruntime CPU")):
        log(f"  {title:<30} {'  '.join(f'{parity[label][n]:9.2e}' for n in OUTPUT_NAMES)}")
    if "onnx_fp16" not in outputs:
        return parity, None
    fp16_error = max_abs_differences(outputs["onnx_fp16"], outputs["onnx"])
    log(f"fp16 ONNX max |difference| from float32 ONNX: "
        f"{', '.join(f'{n} {v:.2e}' for n, v in fp16_error.items())}")
    return parity, fp16_error


def _make_staging_dir(out_dir):
    try:
        os.makedirs(out_dir, exist_ok=True)
        return tempfile.mkdtemp(prefix=".export-", dir=out_dir)
    except OSError as e:
        raise UserError(f"cannot write to --out={out_dir} ({e.strerror}): choose a writable "
                        "directory") from None


def _install(staging, out_dir, names):
    """Moves finished artifacts from `staging` to `out_dir` by rename (same file system)."""
    for name in names:
        target = os.path.join(out_dir, name)
        if os.path.isdir(target):
            # A non-empty directory cannot be replaced in one rename: move the old one aside first.
            os.replace(target, os.path.join(staging, f"{name}.old"))
        os.replace(os.path.join(staging, name), target)


def export_run(workdir, out_dir=None, fp16=False, opset=DEFAULT_OPSET, log=print):
    """Exports the run in `workdir` (see the module docstring) and returns the report.

    Args:
      workdir: a training run's workdir.
      out_dir: where the artifacts go; default `workdir/export`.
      fp16: also write `separator_fp16.onnx` and measure its error against the float32 ONNX.
      opset: ONNX opset of the ONNX files.
      log: called with each line of progress and figures.

    Returns:
      The report written to `out_dir/export.json`: paths, opset, the parity inputs, the parity
      max abs differences `{"saved_model": {output: diff}, "onnx": {...}}` against Keras, and
      `fp16_max_abs_diff` against the float32 ONNX (None without fp16).

    Raises:
      UserError: bad workdir, checkpoint, out_dir or opset.
      ParityError: an artifact differs from Keras by more than `PARITY_TOLERANCE`; then nothing
        is installed.
    """
    if opset not in SUPPORTED_OPSETS:
        raise UserError(f"--opset={opset} is not supported: tf2onnx {tf2onnx.__version__} "
                        f"converts opsets {SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}")
    config, evaluation = load_run(workdir)
    out_dir = out_dir or os.path.join(workdir, "export")
    mask_net, checkpoint = restore_mask_net(workdir, config)
    log(f"restored the mask net from {checkpoint} (float32, width {config.mask_width}, "
        f"{config.image_size}x{config.image_size}x{config.channels}, inverted inputs: "
        f"{'yes' if config.invert else 'no'})")
    separate = separation_function(mask_net, config.invert)
    metadata = run_metadata(config, evaluation, checkpoint)
    staging = _make_staging_dir(out_dir)
    try:
        artifacts = {"saved_model": SAVED_MODEL, "onnx": ONNX_FILE}
        save_saved_model(mask_net, separate, metadata, os.path.join(staging, SAVED_MODEL))
        model = to_onnx(separate, opset, metadata)
        onnx.save(model, os.path.join(staging, ONNX_FILE))
        log(f"converted to ONNX with tf2onnx {tf2onnx.__version__}, opset {opset}")
        if fp16:
            onnx.save(to_float16(model), os.path.join(staging, ONNX_FP16_FILE))
            artifacts["onnx_fp16"] = ONNX_FP16_FILE

        mixtures, description = parity_mixtures(config)
        log(f"parity check on {description}")
        parity, fp16_error = check_parity(
            separate, {label: os.path.join(staging, name) for label, name in artifacts.items()},
            mixtures, log)

        report = {
            "workdir": os.path.abspath(workdir), "out_dir": os.path.abspath(out_dir),
            "checkpoint": checkpoint, "opset": opset, "tf2onnx_version": tf2onnx.__version__,
            "files": {label: os.path.abspath(os.path.join(out_dir, name))
                      for label, name in artifacts.items()},
            "inverted_inputs": config.invert, "parity_inputs": description,
            "parity_tolerance": PARITY_TOLERANCE, "parity_max_abs_diff": parity,
            "fp16_max_abs_diff": fp16_error, "metadata": metadata,
        }
        worst = max(max(figures.values()) for figures in parity.values())
        if worst > PARITY_TOLERANCE:
            raise ParityError(f"exported separator differs from the Keras net by {worst:.2e} > "
                              f"{PARITY_TOLERANCE:g}; nothing was written to {out_dir}")
        with open(os.path.join(staging, REPORT_FILE), "w") as f:
            json.dump(report, f, indent=2, sort_keys=True)
        stale_fp16 = os.path.join(out_dir, ONNX_FP16_FILE)
        if not fp16 and os.path.exists(stale_fp16):
            # Left in place it would be mistaken for the float16 twin of the new separator.onnx.
            os.remove(stale_fp16)
            log(f"removed {stale_fp16} of an earlier export (no --fp16 this time)")
        _install(staging, out_dir, [*artifacts.values(), REPORT_FILE])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log(f"wrote {', '.join(report['files'].values())} and {REPORT_FILE} in {out_dir}")
    return report


def _define_flags():
    flags.DEFINE_string("workdir", None, "Workdir of the training run to export.")
    flags.DEFINE_string("out", None, "Output directory (default: WORKDIR/export).")
    flags.DEFINE_bool("fp16", False, "Also write separator_fp16.onnx (float16 compute, float32 "
                      "inputs and outputs) and print its error against the float32 ONNX.")
    flags.DEFINE_integer("opset", DEFAULT_OPSET, "ONNX opset "
                         f"({SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}).")
    flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    cli.configure_logging()
    values = flags.FLAGS
    try:
        export_run(values.workdir, values.out, fp16=values.fp16, opset=values.opset)
    except UserError as e:
        cli.fail(e)
    except ParityError as e:
        cli.fail(e, code=PARITY_EXIT_CODE)


def run():
    _define_flags()
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
