"""The run directory (workdir): its files, the eval.json record, and reading and writing them.

A workdir holds everything a run produces:
  config.json    the settings of the run (a resumed run must keep its data and model settings)
  checkpoints/   tf.train checkpoints: both nets, both optimizers, step, training seconds
  tensorboard/   scalars (losses, learning rates, steps/s, PSNR/SSIM) and image grids
  eval.json      the run's record: the latest evaluation on the validation mixtures (see
                 `invalid_field` for its schema)
  samples.npz    the first validation mixtures and their estimates at the latest evaluation
  selected/      a tf.train checkpoint of the mask net alone, the one the test scoring and export
                 take (eval.json's `selected`): with --select=unsupervised, the evaluation with
                 the highest remix consistency so far; with --average_checkpoints=N, the mean
                 of the newest N checkpoints, written once training ends
  trials/        with --trials: seed-<seed>/, each seed trial's own run directory
  trials.json    with --trials: every trial's result, the seed chosen and why (`aur_tf.trials`)
  unsupervised_scores.json
                 scores of mixtures alone per checkpoint, by `python -m aur_tf.unsupervised`
                 (`aur_tf.unsupervised.runs`)
Baselines write only eval.json (with `method`), samples.npz and unsupervised_scores.json (one
entry, their separation's).

Every file is written by `write_durably`: atomically and flushed to disk with its directory, so
a crash or power cut leaves the old file or the new one, never a torn one. Files are read by
`read_json_object`, which turns anything unreadable (missing permissions, a FIFO, bad JSON,
JSON that is not an object) into a one-line UserError. Checkpoints are restored by
`restore_newest_good`, which falls back to older checkpoints when the newest is damaged.

Importing this module does not import TensorFlow (the report reads workdirs without it).
"""

import contextlib
import dataclasses
import fcntl
import glob
import io
import json
import logging
import os
import re
import sys
import tempfile

import numpy as np

from aur_tf import metrics, safe_io
from aur_tf.config import DATA_SETTINGS, Config
from aur_tf.errors import UserError
from aur_tf.evaluation import QUALITY_MARKS

log = logging.getLogger("aur_tf")

CONFIG_FILE = "config.json"
EVAL_FILE = "eval.json"
CHECKPOINTS_DIR = "checkpoints"
TENSORBOARD_DIR = "tensorboard"
SELECTED_DIR = "selected"
SAMPLES_FILE = "samples.npz"
TRIALS_DIR = "trials"
TRIALS_FILE = "trials.json"
SAMPLE_COUNT = 8  # mixtures in samples.npz and in the TensorBoard image grid

# Settings a resumed run must share with the checkpoint it resumes: they change the data or the
# shapes of what was saved. Everything else (steps, logging, learning rates) may change.
RUN_IDENTITY = (
    "mode",
    *DATA_SETTINGS,
    "mask_width",
    "disc_width",
    "disc_normalization",
    "mixed_precision",
)
# What every entry of eval.json's `history` holds, one per evaluation.
HISTORY_FIELDS = ("step", "train_seconds") + tuple(QUALITY_MARKS)
# Top-level numbers every record holds, whoever wrote it.
_NUMBER_FIELDS = ("psnr_db", "ssim", "step", "train_seconds", "half_mask_psnr_db", "half_mask_ssim")


def path(workdir, name):
    """The path of `name` (one of the file and folder names above) in `workdir`."""
    return os.path.join(workdir, name)


# --- writing ----------------------------------------------------------------------------------


def _write_errors():
    """What a failed write raises: OSError from Python; from TensorFlow's file system layer, a
    full disk (ENOSPC, EDQUOT) as ResourceExhaustedError and EACCES/EROFS as
    PermissionDeniedError (only once TensorFlow is loaded can anything raise those)."""
    tf = sys.modules.get("tensorflow")
    if tf is None:
        return (OSError,)
    return OSError, tf.errors.ResourceExhaustedError, tf.errors.PermissionDeniedError


def reason(error):
    """The OS's words for a failed file operation, e.g. 'No space left on device'."""
    if isinstance(error, OSError):
        return error.strerror or str(error)
    # TensorFlow: "{{function_node ...}} PATH; No space left on device [Op:SaveV2]\n\t...".
    first_line = (error.message.splitlines() or [type(error).__name__])[0]
    return re.sub(r"\s*\[Op:\w+\]$", "", first_line.rpartition("; ")[2]).strip()


RESUME = "run the same command to resume from the last checkpoint"


@contextlib.contextmanager
def writes_to(what, then=RESUME):
    """Turns a failed write (full disk, lost permission) into a one-line UserError about `what`;
    `then` says what to do once disk space or permissions are fixed."""
    try:
        yield
    except safe_io.FileRefused as error:
        raise UserError(f"cannot write {what}: {error}") from None
    except _write_errors() as error:
        raise UserError(
            f"cannot write {what} ({reason(error)}): free disk space or fix the "
            f"permissions, then {then}"
        ) from None


def write_durably(file_path, data):
    """Writes the bytes `data` as `file_path`, atomically and flushed to disk.

    Raises:
      UserError: the write failed (e.g. disk full); the old file is left as it was.
    """
    with writes_to(file_path):
        safe_io.write_durably(file_path, data)


def write_json(file_path, payload):
    """Writes the JSON of `payload` as `file_path` (see `write_durably`)."""
    write_durably(file_path, json.dumps(payload, indent=2, sort_keys=True).encode("utf-8"))


def write_samples(workdir, split, estimate_0, estimate_1, permutation):
    """Writes `WORKDIR/samples.npz` for side-by-side figures (`aur_tf.report`).

    It holds the first `SAMPLE_COUNT` mixtures of `split`, their clean sources and the method's
    two estimates, ordered by the scored permutation so that `estimates_a` is the output that
    was matched to source a. All arrays are `[SAMPLE_COUNT, H, W, C]` float32; `mixtures` and
    the sources are in [0, 1], the estimates on the clean scale as the method produced them.

    Args:
      workdir: the run's directory.
      split: the `MixtureSplit` the estimates were made from.
      estimate_0, estimate_1: estimates of at least the first `SAMPLE_COUNT` mixtures.
      permutation: `(0, 1)` or `(1, 0)`, as in the run's scores.

    Raises:
      UserError: the write failed; the old file is left as it was.
    """
    ordered = (estimate_0, estimate_1) if tuple(permutation) == (0, 1) else (estimate_1, estimate_0)
    arrays = {
        "mixtures": split.mixtures,
        "sources_a": split.sources_a,
        "sources_b": split.sources_b,
        "estimates_a": ordered[0],
        "estimates_b": ordered[1],
    }
    file_path = path(workdir, SAMPLES_FILE)
    with writes_to(file_path):
        buffer = io.BytesIO()
        # Compressed (165 KB -> 24 KB for MNIST) so that reports can keep copies in the repository.
        np.savez_compressed(
            buffer, **{k: np.asarray(v[:SAMPLE_COUNT], np.float32) for k, v in arrays.items()}
        )
        safe_io.write_durably(file_path, buffer.getvalue())


def write_mask_samples(workdir, split, masks, permutation):
    """`write_samples` for a mask net, from its masks `[n, H, W, C]` of the first mixtures."""
    write_samples(
        workdir,
        split,
        *metrics.estimates_from_mask(split.mixtures[: len(masks)], masks),
        permutation,
    )


def check_writable(workdir):
    """Creates `workdir` if needed and proves it, and the folders a run keeps in it, usable,
    leaving nothing behind.

    The probe file gets a fresh random name, created exclusively: a link planted at a fixed
    name could otherwise make the probe write through it to a file outside the workdir.
    """
    try:
        os.makedirs(workdir, exist_ok=True)
        descriptor, probe = tempfile.mkstemp(prefix=".write_test-", dir=workdir)
    except OSError as e:
        raise UserError(
            f"cannot write to --workdir={workdir} ({reason(e)}): free disk "
            "space or choose a writable directory"
        ) from None
    os.close(descriptor)
    with contextlib.suppress(OSError):
        os.remove(probe)
    for folder in (CHECKPOINTS_DIR, TENSORBOARD_DIR, SELECTED_DIR):
        folder_path = path(workdir, folder)
        if os.path.lexists(folder_path) and not os.path.isdir(folder_path):
            raise UserError(
                f"{folder_path} is not a directory: a run keeps its {folder} there; move the "
                "file away or choose another --workdir"
            )


@contextlib.contextmanager
def exclusive(directory, what):
    """Holds an advisory lock on `directory` (flock on the directory itself, so that nothing is
    written) while the block runs, so that two processes never write one run or export at once.

    Raises:
      UserError: another process holds the lock.
    """
    descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise UserError(
                f"{directory} is in use by another {what}: wait for it to end or use another "
                "directory"
            ) from None
        yield
    finally:
        os.close(descriptor)


# --- reading ----------------------------------------------------------------------------------


def read_json_object(file_path, fix):
    """The JSON object in `file_path`, or None if there is no such file.

    Raises:
      UserError: the file cannot be read (permissions, not a regular file), is not JSON, or
        holds JSON that is not an object (a list, a string, null); the message ends in `fix`.
    """
    if not os.path.lexists(file_path):
        return None
    try:
        with safe_io.open_regular(file_path) as f:
            payload = json.loads(f.read())
    except (OSError, ValueError, safe_io.FileRefused) as e:  # ValueError: bad JSON or UTF-8
        raise UserError(
            f"{file_path} is not readable JSON ({safe_io.printable(e)}): {fix}"
        ) from None
    if not isinstance(payload, dict):
        raise UserError(
            f"{file_path} is not readable JSON (the top-level object is missing: it "
            f"holds a {type(payload).__name__}): {fix}"
        )
    return payload


def is_number(value):
    """Whether a value read from JSON is an int or float (a bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def is_history(history):
    """Whether `history` is a list of dicts with a number for each of `HISTORY_FIELDS`."""
    return isinstance(history, list) and all(
        isinstance(entry, dict) and all(is_number(entry.get(k)) for k in HISTORY_FIELDS)
        for entry in history
    )


def invalid_field(record):
    """The first field of an eval.json record that is missing or of the wrong type, or None.

    The schema, for mask-net runs (`train_lib`) and baselines (`aur_tf.baselines`) alike:
      psnr_db, ssim, step, train_seconds, half_mask_psnr_db, half_mask_ssim: numbers (the
        validation scores and the half mask's on the same mixtures);
      config: an object with strings source_a, source_b (and mode, for mask-net runs), an
        integer seed and, if present, a number train_steps;
      method: a string, for baselines only;
      history (optional): a list of objects with numbers `HISTORY_FIELDS`;
      machines (optional): a list of strings;
      test (optional): an object with numbers psnr_db and ssim, the one scoring of the test
        mixtures.
    Other fields (split, per-source scores, seconds_to_*, method settings) are written but not
    required: records from older versions lack some.
    """
    if not isinstance(record, dict):
        return "the top-level object"
    config = record.get("config")
    if not isinstance(config, dict):
        return "config"
    for key in _NUMBER_FIELDS:
        if not is_number(record.get(key)):
            return key
    if not isinstance(record.get("method", ""), str):
        return "method"
    for key in ("source_a", "source_b") + (() if "method" in record else ("mode",)):
        if not isinstance(config.get(key), str):
            return f"config.{key}"
    if not isinstance(config.get("seed"), int) or isinstance(config["seed"], bool):
        return "config.seed"
    if not is_number(config.get("train_steps", 0)):
        return "config.train_steps"
    if not is_history(record.get("history", [])):
        return "history"
    machines = record.get("machines", [])
    if not (isinstance(machines, list) and all(isinstance(m, str) for m in machines)):
        return "machines"
    test = record.get("test", {})
    if not isinstance(test, dict):
        return "test"
    for key in ("psnr_db", "ssim") if test else ():
        if not is_number(test.get(key)):
            return f"test.{key}"
    return None


def read_record(file_path, fix=None):
    """The eval.json record at `file_path`, checked against the schema, or None if it is missing.

    Raises:
      UserError: it is unreadable or a field is missing or of the wrong type; the message ends
        in `fix` when given.
    """
    record = read_json_object(file_path, fix or "delete or restore it")
    if record is None:
        return None
    invalid = invalid_field(record)
    if invalid:
        raise UserError(
            f"{file_path}: {invalid} is missing or of the wrong type (a damaged "
            "file, or not written by aur_tf)" + (f": {fix}" if fix else "")
        )
    return record


def check_resumable(config, chief):
    """Refuses an unwritable workdir, or one that holds a run with other data or model settings.

    The chief creates the workdir if needed and checks that it can write there, but writes
    nothing that stays; other workers write nothing there and only check the settings.
    """
    if chief:
        check_writable(config.workdir)
    saved = read_json_object(
        path(config.workdir, CONFIG_FILE),
        "restore it, or delete it to resume without checking the settings",
    )
    if saved:
        # A setting added after the run was made has its default there: what the run did.
        made = {f.name: f.default for f in dataclasses.fields(Config)} | saved
        changed = [k for k in RUN_IDENTITY if made[k] != getattr(config, k)]
        if changed:
            was = ", ".join(f"--{k}={made[k]}" for k in changed)
            raise UserError(
                f"--workdir={config.workdir} holds a run made with {was}: resume it "
                "with the same settings or start a new run in another --workdir"
            )


def load_run(workdir):
    """The `Config` and eval.json record (`{}` if none yet) of the training run in `workdir`.

    Raises:
      UserError: no such directory, no or a damaged config.json, or a damaged eval.json.
    """
    if not os.path.isdir(workdir):
        raise UserError(f"--workdir={workdir} does not exist: give the workdir of a training run")
    config_path = path(workdir, CONFIG_FILE)
    fix = "it is damaged or from another version of aur_tf"
    settings = read_json_object(config_path, fix)
    if settings is None:
        raise UserError(
            f"--workdir={workdir} has no config.json: it is not the workdir of a "
            "training run (python main.py --workdir=...)"
        )
    try:
        config = Config(**settings)
    except (TypeError, ValueError, UserError) as e:
        raise UserError(f"cannot read {config_path} ({e}): {fix}") from None
    record = read_record(
        path(workdir, EVAL_FILE), "delete it to use the run without its evaluation figures"
    )
    return config, record or {}


# --- checkpoints ------------------------------------------------------------------------------

_CHECKPOINT_NAME = re.compile(r"ckpt-(\d+)\.index")


def make_durable(prefix):
    """Flushes checkpoint `prefix`'s files, then the state file and directory naming them."""
    directory = os.path.dirname(prefix)
    for file_path in [
        *glob.glob(glob.escape(prefix) + ".*"),
        os.path.join(directory, "checkpoint"),
        directory,
    ]:
        descriptor = os.open(file_path, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _checkpoints_newest_first(directory):
    """Checkpoint prefixes in `directory`, newest first, and whether the state file listed them.

    The `checkpoint` state file is the authority; if it is missing or unreadable, the ckpt-N
    files themselves are listed, so losing that small file never restarts a run from step 0.
    """
    import tensorflow as tf

    try:
        state = tf.train.get_checkpoint_state(directory)
    except (ValueError, UnicodeDecodeError):  # garbage that TensorFlow does not catch itself
        state = None
    if state is not None:
        return list(reversed(state.all_model_checkpoint_paths)), True
    numbered = []
    for index_path in glob.glob(os.path.join(glob.escape(directory), "ckpt-*.index")):
        match = _CHECKPOINT_NAME.fullmatch(os.path.basename(index_path))
        if match:
            numbered.append((int(match.group(1)), index_path[: -len(".index")]))
    return [prefix for _, prefix in sorted(numbered, reverse=True)], False


def checkpoint_step(prefix):
    """The step of checkpoint `prefix` (`.../ckpt-N`), or None if it is not named so."""
    match = _CHECKPOINT_NAME.fullmatch(os.path.basename(prefix) + ".index")
    return int(match.group(1)) if match else None


def list_checkpoints(workdir):
    """`[(step, prefix)]` of the run's checkpoints, oldest first (see
    `_checkpoints_newest_first`)."""
    prefixes, _ = _checkpoints_newest_first(path(workdir, CHECKPOINTS_DIR))
    steps = [checkpoint_step(prefix) for prefix in prefixes]
    return sorted((step, prefix) for step, prefix in zip(steps, prefixes) if step is not None)


def _rewrite_state_file(directory, newest_first):
    """A fresh `checkpoint` state file listing `newest_first`, so the manager keeps numbering,
    listing and deleting those checkpoints as if the state file had never been lost."""
    import tensorflow as tf

    oldest_first = newest_first[::-1]
    times = [os.path.getmtime(f"{prefix}.index") for prefix in oldest_first]
    with writes_to(os.path.join(directory, "checkpoint")):
        tf.compat.v1.train.update_checkpoint_state(
            directory,
            oldest_first[-1],
            oldest_first,
            all_model_checkpoint_timestamps=times,
            last_preserved_timestamp=min(times) - 1,
        )


def restore_newest_good(
    checkpoint, directory, what="the run", fix="use a new --workdir", repair=True, only=None
):
    """Restores the newest checkpoint in `directory` that loads; returns its prefix, or None.

    A checkpoint that fails to load (damaged on disk, or half-written by a crash and found
    without the state file) is skipped with a log line naming the next one tried. Values of the
    checkpoint that `checkpoint` does not track are ignored; every value it tracks must load.

    Args:
      checkpoint: a `tf.train.Checkpoint` of what to restore.
      directory: the run's checkpoints/.
      what, fix: what is restored and how to get past a failure, for the error message.
      repair: rewrite a lost or unreadable state file from the checkpoint files found.
      only: a checkpoint prefix to restore instead of the newest good one; no other is tried.

    Raises:
      UserError: checkpoints exist but none loads: all damaged, or made with other settings.
    """
    import tensorflow as tf

    # What a checkpoint that does not load raises, depending on which of its files is damaged
    # how: shape mismatches ValueError, missing variables AssertionError, truncated files
    # IndexError (from the checkpoint reader) or an OpError.
    restore_errors = (tf.errors.OpError, AssertionError, ValueError, IndexError)
    candidates, listed = ([only], True) if only else _checkpoints_newest_first(directory)
    first_failure = None
    for index, prefix in enumerate(candidates):
        try:
            with _tensorflow_errors_only():
                checkpoint.restore(prefix).expect_partial().assert_existing_objects_matched()
        except restore_errors as error:
            message = (str(error).strip().splitlines() or [type(error).__name__])[0][:200]
            first_failure = first_failure or (prefix, message)
            log.warning(
                "checkpoint %s is unreadable (%s); trying %s",
                prefix,
                message,
                candidates[index + 1] if index + 1 < len(candidates) else "no other",
            )
            continue
        if not listed and repair:
            log.warning(
                "the checkpoint state file in %s is missing or unreadable; rebuilt it "
                "from the checkpoint files",
                directory,
            )
            _rewrite_state_file(directory, candidates)
        return prefix
    if first_failure:
        raise UserError(
            f"cannot restore {what} from any of the {len(candidates)} checkpoints in "
            f"{directory} (newest {first_failure[0]}: {first_failure[1]}): they are "
            f"damaged or do not match this run's settings; {fix}"
        )
    if os.path.exists(os.path.join(directory, "checkpoint")) and not listed:
        raise UserError(
            f"{directory}/checkpoint is unreadable and there are no checkpoint files "
            "next to it: delete it to start the run from step 0"
        )
    return None


@contextlib.contextmanager
def _tensorflow_errors_only():
    """Keeps TensorFlow's logger to errors: a restore that fails halfway leaves its record of
    unrestored values behind, which logs one warning per value when freed; the one-line reason
    says it all."""
    tf_logger = logging.getLogger("tensorflow")
    level = tf_logger.level
    tf_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        tf_logger.setLevel(level)


def selected_checkpoint(workdir):
    """The prefix of the run's selected checkpoint (`SELECTED_DIR`), or None if it has none."""
    prefixes, _ = _checkpoints_newest_first(path(workdir, SELECTED_DIR))
    return prefixes[0] if prefixes else None


def restore_mask_net(workdir, config, checkpoint=None):
    """Rebuilds the run's mask net in float32 and restores it from `checkpoint` (a prefix
    `.../ckpt-N`) when given, else from the run's selected checkpoint under
    `--select=unsupervised` or `--average_checkpoints` > 1 once it has one, else from the newest
    good checkpoint.

    Only the mask net is read; the discriminator, optimizers and counters in the checkpoint are
    ignored. Every variable of the net must be found in the checkpoint with its shape. Nothing
    in the workdir is written.

    Returns:
      `(mask_net, checkpoint_path)`: a float32 Keras model `[batch, H, W, C] -> [batch, H, W, C]`
      masks in (0, 1).

    Raises:
      UserError: no checkpoint, or none that holds this net.
    """
    import tensorflow as tf

    from aur_tf import models

    checkpoint_dir = path(workdir, CHECKPOINTS_DIR)
    if checkpoint is None and (config.select == "unsupervised" or config.average_checkpoints > 1):
        checkpoint = selected_checkpoint(workdir)
    mask_net = models.build_mask_net(
        config.image_size, config.channels, config.mask_width, "float32"
    )
    restored = restore_newest_good(
        tf.train.Checkpoint(mask_net=mask_net),
        checkpoint_dir,
        what="the mask net",
        fix="its config.json must be the run's",
        repair=False,
        only=checkpoint,
    )
    if restored is None:
        raise UserError(
            f"no checkpoint in {checkpoint_dir}: train the run first, or give the "
            "workdir of a run that saved one"
        )
    return mask_net, restored
