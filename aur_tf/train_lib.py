"""`train(config)`: data, models, checkpoints, logging and evaluation around the Keras trainers.

A workdir holds everything a run produces:
  config.json       the settings of the run (a resumed run must keep the data and model settings)
  checkpoints/      tf.train checkpoints: both nets, both optimizers, step, training seconds
  tensorboard/      scalars (losses, learning rates, steps/s, PSNR/SSIM) and image grids
  eval.json         the latest evaluation, with its history and the time to reach quality marks
  samples.npz       the first test mixtures and their estimates at the latest evaluation (figures)
Running the same command again resumes from the latest checkpoint.
"""
import json
import logging
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from aur_tf import distribute, evaluation, models, trainer as trainer_lib
from aur_tf.config import Config
from aur_tf.data import pipeline
from aur_tf.data.mixtures import load_mixture_dataset
from aur_tf.errors import UserError

log = logging.getLogger("aur_tf")

# Settings a resumed run must share with the checkpoint it resumes: they change the data or the
# shapes of what was saved. Everything else (steps, logging, learning rates) may change.
_RUN_IDENTITY = ("mode", "source_a", "source_b", "image_size", "channels", "invert",
                 "train_mixtures", "test_mixtures", "seed", "mask_width", "disc_width",
                 "mixed_precision")
# Test PSNR marks whose first crossing time is recorded (the paper's 20.4 dB and a midway mark).
QUALITY_MARKS_DB = (18.0, 20.4)
_GRID_IMAGES = 8


class TrainingDiverged(UserError):
    """A loss became NaN or infinite; the last good checkpoint is kept."""


def write_json_atomically(path, payload):
    """Writes JSON so a crash leaves either the old file or the new one, never a torn one."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(payload, f, indent=2, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _prepare_workdir(config, chief):
    """Checks that `config` may resume the run in its workdir; the chief also claims it."""
    if not chief:
        # The chief writes config.json; the other workers read it (a shared workdir) or nothing.
        return _check_run_identity(config)
    try:
        os.makedirs(config.workdir, exist_ok=True)
        probe = os.path.join(config.workdir, ".write_test")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UserError(f"cannot write to --workdir={config.workdir} ({e.strerror}): "
                        "choose a writable directory") from None
    _check_run_identity(config)
    write_json_atomically(os.path.join(config.workdir, "config.json"), config.to_dict())


def _check_run_identity(config):
    config_path = os.path.join(config.workdir, "config.json")
    if os.path.exists(config_path):
        with open(config_path) as f:
            saved = json.load(f)
        changed = [k for k in _RUN_IDENTITY if k in saved and saved[k] != getattr(config, k)]
        if changed:
            was = ", ".join(f"--{k}={saved[k]}" for k in changed)
            raise UserError(f"--workdir={config.workdir} holds a run made with {was}: resume it with "
                            "the same settings or start a new run in another --workdir")


def _image_grid(split, masks):
    """`[1, n*H, 5*W, C]` rows of mixture | estimate a | estimate b | true a | true b."""
    n = len(masks)
    mixtures = split.mixtures[:n]
    estimate_a = 2.0 * mixtures * masks
    columns = [mixtures, estimate_a, 2.0 * mixtures - estimate_a,
               split.sources_a[:n], split.sources_b[:n]]
    rows = np.concatenate(columns, axis=2)
    return np.clip(np.concatenate(list(rows), axis=0)[None], 0.0, 1.0)


class _RunState:
    """Everything that is checkpointed besides the networks: step and training seconds."""

    def __init__(self, model):
        self.model = model
        self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)

    @property
    def step(self):
        return int(self.model.step_counter.numpy())


class TrainingMonitor(keras.callbacks.Callback):
    """Per-step duties of a run: progress lines, TensorBoard, checkpoints, evaluation, stopping."""

    def __init__(self, config, state, manager, test_split, writer, on_evaluation):
        super().__init__()
        self.config = config
        self.state = state
        self.manager = manager
        self.test_split = test_split
        self.writer = writer
        self.on_evaluation = on_evaluation
        self._window_start = None

    def on_train_begin(self, logs=None):
        self._clock = time.monotonic()
        self._window_start = (self.state.step, self._clock)

    def _tick(self):
        now = time.monotonic()
        self.state.train_seconds.assign_add(now - self._clock)
        self._clock = now

    def on_train_batch_end(self, batch, logs=None):
        step = self.state.step
        # Each value has shape [1] (see trainer._StepCountingModel._report).
        values = {k: np.asarray(v).item() for k, v in logs.items()}
        for name, value in values.items():
            if not math.isfinite(value):
                self.model.stop_training = True
                raise TrainingDiverged(
                    f"{name} became {value} at step {step}; the last good checkpoint is kept in "
                    f"{self.manager.directory}: lower the learning rates or try --mixed_precision=float32")
        if step % self.config.log_every == 0 or step == self.config.train_steps:
            self._log_progress(step, values)
        if step % self.config.checkpoint_every == 0 or step == self.config.train_steps:
            self._tick()
            self.manager.save(checkpoint_number=step)
        if step % self.config.eval_every == 0 or step == self.config.train_steps:
            self._tick()
            self.on_evaluation()
            self._clock = time.monotonic()
        if step >= self.config.train_steps:
            self.model.stop_training = True

    def _log_progress(self, step, values):
        self._tick()
        first_step, start = self._window_start
        rate = (step - first_step) / max(time.monotonic() - start, 1e-9)
        self._window_start = (step, time.monotonic())
        remaining = (self.config.train_steps - step) / rate if rate > 0 else float("inf")
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if math.isfinite(remaining) else "?"
        losses = " ".join(f"{k.replace('loss_', '')} {v:.4f}" for k, v in values.items())
        log.info("step %d/%d | %.2f steps/s | ETA %s | %s", step, self.config.train_steps, rate,
                 eta, losses)
        with self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"train/{name}", value)
            tf.summary.scalar("train/steps_per_second", rate)
            for name in ("mask_optimizer", "disc_optimizer"):
                optimizer = getattr(self.model, name, None)
                if optimizer is not None:
                    tf.summary.scalar(f"train/{name}_learning_rate",
                                      float(np.asarray(optimizer.learning_rate)))
            tf.summary.scalar("train/skipped_steps", int(self.model.skipped_steps.numpy()))
        self.model.reset_metrics()


def _build_trainer(config, synchronized_bn=False):
    dtype = config.mixed_precision
    mask_net = models.build_mask_net(config.image_size, config.channels, config.mask_width, dtype,
                                     synchronized_bn)
    mask_optimizer = trainer_lib.make_optimizer(config.mask_learning_rate, config.adam_beta1, dtype)
    if config.mode == "supervised":
        model = trainer_lib.SupervisedTrainer(mask_net)
        model.compile(mask_optimizer, jit_compile=config.jit_compile)
        return model, {"mask_net": mask_net, "mask_optimizer": mask_optimizer}
    discriminator = models.build_discriminator(config.image_size, config.channels,
                                               config.disc_width, dtype, synchronized_bn)
    disc_optimizer = trainer_lib.make_optimizer(config.disc_learning_rate, config.adam_beta1, dtype)
    model = trainer_lib.UnmixRemixTrainer(
        mask_net, discriminator, alpha=config.alpha, beta=config.beta, energy=config.energy,
        mask_steps_per_disc_step=config.mask_steps_per_disc_step)
    model.compile(mask_optimizer, disc_optimizer, jit_compile=config.jit_compile)
    return model, {"mask_net": mask_net, "discriminator": discriminator,
                   "mask_optimizer": mask_optimizer, "disc_optimizer": disc_optimizer}


def _training_batches(config, data, step, strategy):
    """Each worker's input pipeline yields its replicas' shares of the one-device global batch."""
    def replica_batches(input_context):
        if config.mode == "supervised":
            return pipeline.supervised_batches(data.train.mixtures, data.train.sources_a,
                                               2 * config.batch_pairs, config.seed, step,
                                               input_context)
        # Unsupervised training is handed the mixtures and nothing else.
        return pipeline.pair_batches(data.train.mixtures, config.batch_pairs, config.seed, step,
                                     input_context)
    return strategy.distribute_datasets_from_function(replica_batches)


def restore_latest(checkpoint, directory):
    """Restores the newest checkpoint in `directory`, if any; returns its path or None."""
    latest = tf.train.latest_checkpoint(directory)
    if latest is None:
        return None
    try:
        checkpoint.restore(latest).assert_existing_objects_matched()
    except (tf.errors.OpError, AssertionError, ValueError) as e:
        raise UserError(f"cannot restore checkpoint {latest} ({type(e).__name__}): it does not "
                        "match this run's settings or is damaged; use a new --workdir") from None
    return latest


def train(config: Config, data=None):
    """Trains (or resumes) the run described by `config` and returns its final evaluation.

    Args:
      config: the run's settings.
      data: a `MixtureDataset`; loaded from `config.source_a/b` when None.

    Returns:
      The dict written to `WORKDIR/eval.json`.
    """
    strategy = distribute.make_strategy(config.strategy)  # First: it may configure the runtime.
    replicas = strategy.num_replicas_in_sync
    if config.batch_pairs % replicas:
        raise UserError(f"--batch_pairs={config.batch_pairs} is the global batch and must divide "
                        f"by the {replicas} replicas of --strategy={config.strategy}")
    chief = distribute.is_chief(strategy)
    _prepare_workdir(config, chief)
    keras.utils.set_random_seed(config.seed)
    if data is None:
        data = load_mixture_dataset(config)
    with strategy.scope():
        # Each replica sees 2B/R mixtures; BatchNorm over those alone would make the step (and D's
        # real-vs-remix statistics) depend on the device count.
        model, trackables = _build_trainer(config, synchronized_bn=replicas > 1)
    state = _RunState(model)
    checkpoint = tf.train.Checkpoint(step=model.step_counter, skipped_steps=model.skipped_steps,
                                     train_seconds=state.train_seconds, **trackables)
    checkpoint_dir = os.path.join(config.workdir, "checkpoints")
    restored = restore_latest(checkpoint, checkpoint_dir)
    distribute.check_same_step(strategy, state.step, config.workdir)
    if restored:
        log.info("resumed from %s at step %d", restored, state.step)
    eval_path = os.path.join(config.workdir, "eval.json")
    history = []
    if restored and os.path.exists(eval_path):
        with open(eval_path) as f:
            history = [h for h in json.load(f).get("history", []) if h["step"] <= state.step]
    writer = (tf.summary.create_file_writer(os.path.join(config.workdir, "tensorboard")) if chief
              else tf.summary.create_noop_writer())
    baseline = evaluation.half_mask_baseline(data.test)
    log.info("half-mask baseline on %d test mixtures: %.2f dB PSNR, %.3f SSIM",
             len(data.test.mixtures), baseline["half_mask_psnr_db"], baseline["half_mask_ssim"])
    results = {}

    def evaluate_and_record():
        scores = evaluation.evaluate(model.mask_net, data.test)
        step = state.step
        history.append({"step": step, "train_seconds": float(state.train_seconds.numpy()),
                        "psnr_db": scores["psnr_db"], "ssim": scores["ssim"]})
        results.clear()
        results.update(scores, **baseline, step=step, train_seconds=history[-1]["train_seconds"],
                       skipped_steps=int(model.skipped_steps.numpy()), config=config.to_dict(),
                       history=history, seconds_to_psnr_db=_seconds_to_marks(history))
        if chief:  # Every worker evaluates, so all reach the next training step together.
            write_json_atomically(eval_path, results)
        log.info("eval at step %d: %.2f dB PSNR, %.3f SSIM (half mask %.2f dB, %.3f)%s", step,
                 scores["psnr_db"], scores["ssim"], baseline["half_mask_psnr_db"],
                 baseline["half_mask_ssim"], " | COLLAPSED: one output takes nearly all energy"
                 if scores["collapsed"] else "")
        masks = evaluation.predict_masks(model.mask_net, data.test.mixtures[:_GRID_IMAGES])
        evaluation.write_mask_samples(config.workdir, data.test, masks, scores["permutation"])
        with writer.as_default(step=step):
            tf.summary.scalar("eval/psnr_db", scores["psnr_db"])
            tf.summary.scalar("eval/ssim", scores["ssim"])
            tf.summary.scalar("eval/energy_share", scores["energy_share"])
            tf.summary.image("eval/mixture|estimate_a|estimate_b|true_a|true_b",
                             _image_grid(data.test, masks))
        writer.flush()

    remaining = config.train_steps - state.step
    if remaining > 0:
        write_dir = distribute.checkpoint_write_dir(checkpoint_dir, chief)
        manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                             max_to_keep=config.keep_checkpoints)
        monitor = TrainingMonitor(config, state, manager, data.test, writer, evaluate_and_record)
        log.info("training %s from step %d to %d in %s on %d replica(s)", config.mode, state.step,
                 config.train_steps, config.workdir, replicas)
        try:
            model.fit(_training_batches(config, data, state.step, strategy), epochs=1,
                      steps_per_epoch=remaining, verbose=0, shuffle=False, callbacks=[monitor])
        finally:
            if write_dir != checkpoint_dir:
                shutil.rmtree(write_dir, ignore_errors=True)
    if not results or results["step"] != state.step:
        evaluate_and_record()
    return results


def _seconds_to_marks(history):
    """First training time (s) at which test PSNR reached each quality mark; None if not yet."""
    return {f"{mark:g}": next((h["train_seconds"] for h in history if h["psnr_db"] >= mark), None)
            for mark in QUALITY_MARKS_DB}
