"""`train(config)`: data, models, checkpoints, logging and evaluation around the Keras trainers.

A run writes its workdir (`aur_tf.rundir`): config.json, checkpoints/, tensorboard/, eval.json
(the latest evaluation on the validation mixtures, with its history, each entry with the mean
training scalars since the evaluation before, the time to reach quality marks and the machines
the run trained on; once training has finished, also `test`: the one scoring of the test
mixtures) and samples.npz. Running the same command again resumes from the latest checkpoint.

Crash safety: the process may die at any moment (kill -9, out of memory, a full disk) and the
same command resumes the run, losing at most one checkpoint interval. JSON files are replaced
atomically. tf.train.CheckpointManager writes a checkpoint's data and index files first and only
then, atomically, the `checkpoint` state file that names the latest, so a crash mid-write leaves
the previous checkpoint as the latest. Should one still fail to load (damaged on disk), restoring
falls back to the next older one, and to the checkpoint files themselves if the state file is
lost. Nothing in the workdir is written until every input (settings, sources, checkpoint,
eval.json) has been read and found good, so a refused command leaves the workdir as it was.
Each checkpoint is flushed to disk (fsync) as soon as it is written, so a power cut, which can
lose what the kernel has not yet written, loses at most the checkpoint being written: restoring
falls back to the one before it.
"""
import logging
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from aur_tf import (convolutions, distribute, evaluation, machine, models, rundir,
                    trainer as trainer_lib)
from aur_tf.config import Config
from aur_tf.data import pipeline
from aur_tf.data.mixtures import load_mixture_dataset
from aur_tf.errors import TrainingDiverged, UserError

log = logging.getLogger("aur_tf")

_GRID_IMAGES = 8


def _read_previous_record(workdir, step):
    """The evaluations up to `step` recorded in the workdir's eval.json, and the machines the run
    trained on so far (none of either if it is missing)."""
    previous = rundir.read_record(rundir.path(workdir, rundir.EVAL_FILE),
                                  "move it away to resume without the evaluation history") or {}
    history = previous.get("history", [])
    return [h for h in history if h["step"] <= step], previous.get("machines", [])


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
    """Everything that is checkpointed besides the networks and optimizers.

    step: the model's step counter. train_seconds: training time so far. collapse_streak: log
    windows in a row whose mean training energy_share was outside the collapse bounds.
    collapse_step: the step at which that streak first reached its limit, -1 if never.
    """

    def __init__(self, model):
        self.model = model
        self.train_seconds = tf.Variable(0.0, dtype=tf.float64, trainable=False)
        self.collapse_streak = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.collapse_step = tf.Variable(-1, dtype=tf.int64, trainable=False)

    @property
    def step(self):
        return int(self.model.step_counter.numpy())

    @property
    def collapse_detected_at_step(self):
        step = int(self.collapse_step.numpy())
        return None if step < 0 else step

    def watch_collapse(self, step, energy_share, windows):
        """Counts a log window's mean energy_share; True when `windows` in a row first collapsed."""
        collapsed = evaluation.is_collapsed(energy_share)
        self.collapse_streak.assign(int(self.collapse_streak.numpy()) + 1 if collapsed else 0)
        if self.collapse_detected_at_step is None and int(self.collapse_streak.numpy()) >= windows:
            self.collapse_step.assign(step)
            return True
        return False

    def trackables(self):
        return {"train_seconds": self.train_seconds, "collapse_streak": self.collapse_streak,
                "collapse_step": self.collapse_step}


class TrainingMonitor(keras.callbacks.Callback):
    """Per-step duties of a run: progress lines, TensorBoard, checkpoints, evaluation, stopping."""

    def __init__(self, config, state, manager, writer, on_evaluation):
        super().__init__()
        self.config = config
        self.state = state
        self.manager = manager
        self.writer = writer
        self.on_evaluation = on_evaluation
        self._window_start = None
        # The progress lines' scalars since the last evaluation, which records their means: a
        # run's loss curve then travels with eval.json, not only with its logs and TensorBoard.
        self._progress_since_evaluation = []

    def on_train_begin(self, logs=None):
        self._clock = time.monotonic()
        self._window_start = (self.state.step, self._clock)

    def _tick(self):
        now = time.monotonic()
        self.state.train_seconds.assign_add(now - self._clock)
        self._clock = now

    def _diverged(self, what, step):
        self.model.stop_training = True
        kept = (f"the last checkpoint, {self.manager.latest_checkpoint}, is kept"
                if self.manager.latest_checkpoint else "no checkpoint was written")
        return TrainingDiverged(f"{what} at step {step}; {kept}: lower the learning rates or try "
                                "--mixed_precision=float32")

    def on_train_batch_end(self, batch, logs=None):
        step = self.state.step
        # Each value has shape [1] (see trainer._StepCountingModel._report).
        values = {k: np.asarray(v).item() for k, v in logs.items()}
        for name, value in values.items():
            if not math.isfinite(value):
                raise self._diverged(f"{name} became {value}", step)
        if step % self.config.log_every == 0 or step == self.config.train_steps:
            self._log_progress(step, values)
        if step % self.config.checkpoint_every == 0 or step == self.config.train_steps:
            # This step's update is not seen by any loss yet: a checkpoint must not keep it if
            # it already overflowed.
            bad = next((v.path for v in self.model.weights if not np.isfinite(v.numpy()).all()),
                       None)
            if bad:
                raise self._diverged(f"weight {bad} became non-finite", step)
            self._tick()
            prefix = os.path.join(self.manager.directory, f"ckpt-{step}")
            with rundir.writes_to(f"checkpoint {prefix}"):
                rundir.make_durable(self.manager.save(checkpoint_number=step))
        if step % self.config.eval_every == 0 or step == self.config.train_steps:
            self._tick()
            self.on_evaluation(self._progress_means())
            self._progress_since_evaluation = []
            self._clock = time.monotonic()
        if step >= self.config.train_steps:
            self.model.stop_training = True

    def _progress_means(self):
        """`{scalar name: mean over the progress lines since the last evaluation or the resume}`,
        each line weighing the same; empty if there were none."""
        lines = self._progress_since_evaluation
        if not lines:
            return {}
        return {name: float(np.mean([line[name] for line in lines])) for name in lines[0]}

    def _log_progress(self, step, values):
        self._progress_since_evaluation.append(values)
        self._tick()
        first_step, start = self._window_start
        rate = (step - first_step) / max(time.monotonic() - start, 1e-9)
        self._window_start = (step, time.monotonic())
        remaining = (self.config.train_steps - step) / rate if rate > 0 else float("inf")
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if math.isfinite(remaining) else "?"
        losses = " ".join(f"{k.replace('loss_', '')} {v:.4f}" for k, v in values.items())
        skipped = int(self.model.skipped_steps.numpy())
        # Only float16 loss scaling skips updates; elsewhere the count is always 0.
        if self.config.mixed_precision == "mixed_float16":
            losses += f" | skipped_steps {skipped}"
        log.info("step %d/%d | %.2f steps/s | ETA %s | %s", step, self.config.train_steps, rate,
                 eta, losses)
        if "energy_share" in values and self.state.watch_collapse(
                step, values["energy_share"], self.config.collapse_windows):
            log.warning("step %d: COLLAPSED: the training energy_share was outside [%.2f, %.2f] "
                        "for %d progress windows in a row (one output takes nearly all energy)",
                        step, 1 - evaluation.COLLAPSE_ENERGY_SHARE,
                        evaluation.COLLAPSE_ENERGY_SHARE, self.config.collapse_windows)
        with rundir.writes_to(_tensorboard_dir(self.config)), self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"train/{name}", value)
            tf.summary.scalar("train/steps_per_second", rate)
            for name in ("mask_optimizer", "disc_optimizer"):
                optimizer = getattr(self.model, name, None)
                if optimizer is not None:
                    tf.summary.scalar(f"train/{name}_learning_rate",
                                      float(np.asarray(optimizer.learning_rate)))
            tf.summary.scalar("train/skipped_steps", skipped)
        self.model.reset_metrics()


def _by_phases(conv_kernels):
    """Whether `--conv_kernels` means transposed convolutions by phases on this machine."""
    if conv_kernels == "auto":
        return not convolutions.native_kernels_are_fast()
    return conv_kernels == "phases"


def build_trainer(config, synchronized_bn=False):
    """The Keras trainer for `config`, compiled, and its checkpointable parts by name."""
    dtype = config.mixed_precision
    by_phases = _by_phases(config.conv_kernels)
    mask_net = models.build_mask_net(config.image_size, config.channels, config.mask_width, dtype,
                                     synchronized_bn, by_phases)
    mask_optimizer = trainer_lib.make_optimizer(config.mask_learning_rate, config.adam_beta1, dtype)
    if config.mode == "supervised":
        model = trainer_lib.SupervisedTrainer(mask_net)
        model.compile(mask_optimizer, jit_compile=config.jit_compile)
        return model, {"mask_net": mask_net, "mask_optimizer": mask_optimizer}
    discriminator = models.build_discriminator(config.image_size, config.channels,
                                               config.disc_width, dtype, synchronized_bn, by_phases)
    disc_optimizer = trainer_lib.make_optimizer(config.disc_learning_rate, config.adam_beta1, dtype)
    model = trainer_lib.UnmixRemixTrainer(
        mask_net, discriminator, alpha=config.alpha, beta=config.beta, energy=config.energy,
        mask_steps_per_disc_step=config.mask_steps_per_disc_step)
    model.compile(mask_optimizer, disc_optimizer, jit_compile=config.jit_compile)
    return model, {"mask_net": mask_net, "discriminator": discriminator,
                   "mask_optimizer": mask_optimizer, "disc_optimizer": disc_optimizer}


def _use_configured_learning_rates(config, trackables):
    """Sets each optimizer's learning rate to the config's after a checkpoint restored it.

    Keras checkpoints an optimizer's learning rate as a variable, so without this a run resumed
    with another `--*_learning_rate` (say, lowered to fine-tune) would keep the old one while its
    config.json recorded the new one.
    """
    for name in ("mask", "disc"):
        optimizer = trackables.get(f"{name}_optimizer")
        if optimizer is None:
            continue
        rate = getattr(config, f"{name}_learning_rate")
        restored = float(np.asarray(optimizer.learning_rate))
        if not np.isclose(restored, rate, rtol=1e-6, atol=0.0):  # the variable is float32
            log.info("--%s_learning_rate=%g replaces the checkpoint's %g", name, rate, restored)
            optimizer.learning_rate = rate


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


def _tensorboard_dir(config):
    return rundir.path(config.workdir, rundir.TENSORBOARD_DIR)


def train(config: Config, data=None):
    """Trains (or resumes) the run described by `config` and returns its final evaluation.

    Args:
      config: the run's settings.
      data: a `MixtureDataset`; loaded from `config.source_a/b` when None.

    Returns:
      The dict written to `WORKDIR/eval.json`.

    Raises:
      UserError: bad settings, sources, workdir or checkpoints (then nothing in the workdir has
        changed), or a full disk.
      TrainingDiverged: a loss or weight became non-finite; the checkpoints before it are kept.
    """
    strategy = distribute.make_strategy(config.strategy)  # First: it may configure the runtime.
    replicas = strategy.num_replicas_in_sync
    if config.batch_pairs % replicas:
        raise UserError(f"--batch_pairs={config.batch_pairs} is the global batch and must divide "
                        f"by the {replicas} replicas of --strategy={config.strategy}")
    chief = distribute.is_chief(strategy)
    rundir.check_resumable(config, chief)
    if config.deterministic:
        # Process-wide, and TensorFlow offers no public way to turn it off again.
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    if data is None:
        data = load_mixture_dataset(config)
    with strategy.scope():
        # Each replica sees 2B/R mixtures; BatchNorm over those alone would make the step (and D's
        # real-vs-remix statistics) depend on the device count.
        model, trackables = build_trainer(config, synchronized_bn=replicas > 1)
    state = _RunState(model)
    checkpoint = tf.train.Checkpoint(step=model.step_counter, skipped_steps=model.skipped_steps,
                                     **state.trackables(), **trackables)
    checkpoint_dir = rundir.path(config.workdir, rundir.CHECKPOINTS_DIR)
    restored = rundir.restore_newest_good(checkpoint, checkpoint_dir)
    distribute.check_same_step(strategy, state.step, config.workdir)
    eval_path = rundir.path(config.workdir, rundir.EVAL_FILE)
    history, machines = (_read_previous_record(config.workdir, state.step) if restored
                         else ([], []))
    machines = list(dict.fromkeys(machines + [machine.describe()]))
    # Every input has been read and found good: from here on the run writes (the chief only).
    if chief:
        rundir.write_json(rundir.path(config.workdir, rundir.CONFIG_FILE), config.to_dict())
    if restored:
        log.info("resumed from %s at step %d", restored, state.step)
        _use_configured_learning_rates(config, trackables)
    if chief:
        with rundir.writes_to(_tensorboard_dir(config)):
            writer = tf.summary.create_file_writer(_tensorboard_dir(config))
    else:
        writer = tf.summary.create_noop_writer()
    baseline = evaluation.half_mask_baseline(data.validation)
    log.info("half-mask baseline on %d validation mixtures: %.2f dB PSNR, %.3f SSIM",
             len(data.validation.mixtures), baseline["half_mask_psnr_db"],
             baseline["half_mask_ssim"])
    results = {}

    def evaluate_and_record(train_means=None):
        """Scores the mask net on the validation split and records it; `train_means`, the training
        scalars' means since the previous evaluation, go into its history entry when given."""
        scores = evaluation.evaluate(model.mask_net, data.validation)
        step = state.step
        # A finished run evaluated again replaces its own entry instead of repeating it, keeping
        # the training means recorded when it trained.
        replaced = next((h for h in history if h["step"] == step), {})
        train_means = train_means or replaced.get("train_means")
        history[:] = [h for h in history if h["step"] < step]
        history.append({"step": step, "train_seconds": float(state.train_seconds.numpy()),
                        "psnr_db": scores["psnr_db"], "ssim": scores["ssim"]})
        if train_means:
            history[-1]["train_means"] = train_means
        results.clear()
        results.update(scores, **baseline, split="validation", step=step, train_seconds=history[-1]["train_seconds"],
                       skipped_steps=int(model.skipped_steps.numpy()),
                       collapse_detected_at_step=state.collapse_detected_at_step,
                       config=config.to_dict(), machines=machines, history=history,
                       **{f"seconds_to_{metric}": marks for metric, marks
                          in evaluation.seconds_to_quality_marks(history).items()})
        masks = evaluation.predict_masks(model.mask_net, data.validation.mixtures[:_GRID_IMAGES])
        if chief:  # Every worker evaluates, so all reach the next training step together.
            rundir.write_json(eval_path, results)
            rundir.write_mask_samples(config.workdir, data.validation, masks,
                                      scores["permutation"])
        log.info("eval at step %d: %.2f dB PSNR, %.3f SSIM, %.1f%% swapped (half mask %.2f dB, "
                 "%.3f)%s", step, scores["psnr_db"], scores["ssim"],
                 100 * scores["swapped_fraction"], baseline["half_mask_psnr_db"],
                 baseline["half_mask_ssim"], " | COLLAPSED: one output takes nearly all energy"
                 if scores["collapsed"] else "")
        with rundir.writes_to(_tensorboard_dir(config)):
            with writer.as_default(step=step):
                tf.summary.scalar("eval/psnr_db", scores["psnr_db"])
                tf.summary.scalar("eval/ssim", scores["ssim"])
                tf.summary.scalar("eval/energy_share", scores["energy_share"])
                tf.summary.scalar("eval/swapped_fraction", scores["swapped_fraction"])
                tf.summary.image("eval/mixture|estimate_a|estimate_b|true_a|true_b",
                                 _image_grid(data.validation, masks))
            writer.flush()

    remaining = config.train_steps - state.step
    if remaining > 0:
        write_dir = distribute.checkpoint_write_dir(checkpoint_dir, chief)
        manager = tf.train.CheckpointManager(checkpoint, write_dir,
                                             max_to_keep=config.keep_checkpoints)
        monitor = TrainingMonitor(config, state, manager, writer, evaluate_and_record)
        log.info("training %s from step %d to %d in %s on %d replica(s), transposed "
                 "convolutions %s", config.mode, state.step, config.train_steps, config.workdir,
                 replicas, "by phases" if _by_phases(config.conv_kernels) else "native")
        try:
            model.fit(_training_batches(config, data, state.step, strategy), epochs=1,
                      steps_per_epoch=remaining, verbose=0, shuffle=False, callbacks=[monitor])
        finally:
            if write_dir != checkpoint_dir:
                shutil.rmtree(write_dir, ignore_errors=True)
    if not results or results["step"] != state.step:
        evaluate_and_record()
    if state.step >= config.train_steps:
        results["test"] = score_test(model.mask_net, data.test)
        if chief:
            rundir.write_json(eval_path, results)
    return results


def score_test(mask_net, split):
    """The one scoring of a finished run on its test mixtures, logged and returned.

    Returns:
      `evaluation.evaluate`'s scores with the split's half-mask baseline added.
    """
    scores = dict(evaluation.evaluate(mask_net, split), **evaluation.half_mask_baseline(split))
    log.info("test (%d mixtures, final checkpoint): %.2f dB PSNR, %.3f SSIM, %.1f%% swapped "
             "(half mask %.2f dB, %.3f)", len(split.mixtures), scores["psnr_db"], scores["ssim"],
             100 * scores["swapped_fraction"], scores["half_mask_psnr_db"],
             scores["half_mask_ssim"])
    return scores
