"""The Keras callbacks of a training run, one duty each, and the counters they checkpoint.

`train_lib.train` passes them to `fit` in this order; after every step each acts in turn:
  TrainingClock    adds the step's time to the run's training seconds (evaluations excluded)
  DivergenceGuard  stops at the first non-finite loss or metric
  ProgressLog      every `log_every` steps: a progress line with rate and ETA, the TensorBoard
                   scalars, and collapse detection on the training energy_share
  Checkpointing    every `checkpoint_every` steps: refuses non-finite weights, then saves a
                   checkpoint and flushes it to disk
  Evaluation       every `eval_every` steps: scores the mask net on the validation mixtures and
                   writes the run's record (eval.json, samples.npz, TensorBoard); it owns the
                   evaluation history and, with `--select=unsupervised`, the `Selection`
  StopAtStep       ends training at `train_steps`
Each acts at its interval and at the last step, `train_steps`.
"""

import contextlib
import logging
import math
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from aur_tf import distribute, evaluation, metrics, rundir
from aur_tf.errors import TrainingDiverged
from aur_tf.unsupervised import scores as unsupervised_scores

log = logging.getLogger("aur_tf")


def _is_due(step, every, last):
    return step % every == 0 or step == last


def _scalars(logs):
    """`{name: float}` of a step's logs; each value has shape [1] (see
    trainer._StepCountingModel._report)."""
    return {k: np.asarray(v).item() for k, v in logs.items()}


class RunState:
    """Everything that is checkpointed besides the networks and optimizers.

    model: the trainer (its step_counter is the run's step). train_seconds: training time so
    far. collapse_streak: log windows in a row whose mean training energy_share was outside the
    collapse bounds. collapse_step: the step at which that streak first reached its limit, -1 if
    never.
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
        return {
            "train_seconds": self.train_seconds,
            "collapse_streak": self.collapse_streak,
            "collapse_step": self.collapse_step,
        }


class TrainingClock(keras.callbacks.Callback):
    """Keeps `state.train_seconds` current: the wall time of training, evaluations excluded."""

    def __init__(self, state):
        super().__init__()
        self.state = state
        self._last = None

    def on_train_begin(self, logs=None):
        self._last = time.monotonic()

    def tick(self):
        """Adds the time since the last tick to `state.train_seconds`."""
        now = time.monotonic()
        self.state.train_seconds.assign_add(now - self._last)
        self._last = now

    @contextlib.contextmanager
    def paused(self):
        """Ticks, then leaves the time spent inside out of the training seconds."""
        self.tick()
        try:
            yield
        finally:
            self._last = time.monotonic()


def _diverged(model, manager, what, step):
    """Stops training; the TrainingDiverged to raise, naming the checkpoint that is kept."""
    model.stop_training = True
    kept = (
        f"the last checkpoint, {manager.latest_checkpoint}, is kept"
        if manager.latest_checkpoint
        else "no checkpoint was written"
    )
    return TrainingDiverged(
        f"{what} at step {step}; {kept}: lower the learning rates or try --mixed_precision=float32"
    )


class DivergenceGuard(keras.callbacks.Callback):
    """Raises TrainingDiverged as soon as a step's loss or metric is NaN or infinite."""

    def __init__(self, state, manager):
        super().__init__()
        self.state = state
        self.manager = manager

    def on_train_batch_end(self, batch, logs=None):
        for name, value in _scalars(logs).items():
            if not math.isfinite(value):
                raise _diverged(self.model, self.manager, f"{name} became {value}", self.state.step)


class ProgressLog(keras.callbacks.Callback):
    """Every `config.log_every` steps: a progress line, TensorBoard scalars, collapse detection.

    The line holds steps/s and the ETA over the window since the previous line and the step's
    losses and metrics, which Keras then resets. Those values are also kept until the next
    evaluation takes their means (`take_means`).
    """

    def __init__(self, config, state, writer):
        super().__init__()
        self.config = config
        self.state = state
        self.writer = writer
        self._window_start = None
        # The progress lines' scalars since the last evaluation, which records their means: a
        # run's loss curve then travels with eval.json, not only with its logs and TensorBoard.
        self._since_evaluation = []

    def on_train_begin(self, logs=None):
        self._window_start = (self.state.step, time.monotonic())

    def take_means(self):
        """`{scalar name: mean over the progress lines since the last call or the resume}`, each
        line weighing the same; empty if there were none."""
        lines, self._since_evaluation = self._since_evaluation, []
        if not lines:
            return {}
        return {name: float(np.mean([line[name] for line in lines])) for name in lines[0]}

    def on_train_batch_end(self, batch, logs=None):
        step, config = self.state.step, self.config
        if not _is_due(step, config.log_every, config.train_steps):
            return
        values = _scalars(logs)
        self._since_evaluation.append(values)
        first_step, start = self._window_start
        rate = (step - first_step) / max(time.monotonic() - start, 1e-9)
        self._window_start = (step, time.monotonic())
        remaining = (config.train_steps - step) / rate if rate > 0 else float("inf")
        eta = time.strftime("%H:%M:%S", time.gmtime(remaining)) if math.isfinite(remaining) else "?"
        losses = " ".join(f"{k.replace('loss_', '')} {v:.4f}" for k, v in values.items())
        skipped = int(self.model.skipped_steps.numpy())
        # Only float16 loss scaling skips updates; elsewhere the count is always 0.
        if config.mixed_precision == "mixed_float16":
            losses += f" | skipped_steps {skipped}"
        log.info(
            "step %d/%d | %.2f steps/s | ETA %s | %s", step, config.train_steps, rate, eta, losses
        )
        if "energy_share" in values and self.state.watch_collapse(
            step, values["energy_share"], config.collapse_windows
        ):
            log.warning(
                "step %d: COLLAPSED: the training energy_share was outside [%.2f, %.2f] "
                "for %d progress windows in a row (one output takes nearly all energy)",
                step,
                1 - evaluation.COLLAPSE_ENERGY_SHARE,
                evaluation.COLLAPSE_ENERGY_SHARE,
                config.collapse_windows,
            )
        tensorboard = rundir.path(config.workdir, rundir.TENSORBOARD_DIR)
        with rundir.writes_to(tensorboard), self.writer.as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(f"train/{name}", value)
            tf.summary.scalar("train/steps_per_second", rate)
            for name in ("mask_optimizer", "disc_optimizer"):
                optimizer = getattr(self.model, name, None)
                if optimizer is not None:
                    tf.summary.scalar(
                        f"train/{name}_learning_rate", float(np.asarray(optimizer.learning_rate))
                    )
            tf.summary.scalar("train/skipped_steps", skipped)
        self.model.reset_metrics()


class Checkpointing(keras.callbacks.Callback):
    """Every `config.checkpoint_every` steps: saves a checkpoint, flushed to disk (fsync).

    Weights are checked first: the step's update is not seen by any loss yet, and a checkpoint
    must not keep it if it already overflowed.
    """

    def __init__(self, config, state, manager, clock):
        super().__init__()
        self.config = config
        self.state = state
        self.manager = manager
        self.clock = clock

    def on_train_batch_end(self, batch, logs=None):
        step = self.state.step
        if not _is_due(step, self.config.checkpoint_every, self.config.train_steps):
            return
        bad = next((v.path for v in self.model.weights if not np.isfinite(v.numpy()).all()), None)
        if bad:
            raise _diverged(self.model, self.manager, f"weight {bad} became non-finite", step)
        self.clock.tick()  # the checkpoint holds the training time up to this step
        prefix = os.path.join(self.manager.directory, f"ckpt-{step}")
        with rundir.writes_to(f"checkpoint {prefix}"):
            rundir.make_durable(self.manager.save(checkpoint_number=step))


def unsupervised_evaluation(mask_net, split, count):
    """`{"remix_consistency_db": dB}` of `mask_net` on the first `count` mixtures of `split`
    (none of their clean sources), or `{}` when fewer than 2 are asked for."""
    count = min(count, len(split.mixtures))
    if count < 2:
        return {}
    return {
        "remix_consistency_db": unsupervised_scores.remix_consistency_db(
            unsupervised_scores.mask_separation(mask_net),
            split.mixtures[:count],
            unsupervised_scores.partners(count),
        )
    }


def selectable_from(train_steps):
    """The first step whose evaluation `--select=unsupervised` may pick: half of `train_steps`.

    Early in a run the untrained masks split every mixture the same way whatever its partner
    (by strokes, not by source), and their remix consistency can match or beat that of the
    separated net at the end: picked by the score alone, some MNIST runs would keep their
    step-500 net, 9-11 dB below their best (docs/unsupervised-score.md). A run that separates
    late still ends with its best scores in the second half, where the plateau's pair-dependent
    masks score lower than the separated ones.
    """
    return train_steps // 2


class Selection:
    """With `--select=unsupervised`: of the evaluations from `selectable_from(train_steps)` on,
    the one with the highest remix consistency so far, whose mask net is kept in the workdir's
    `selected/` (one tf.train checkpoint of the mask net alone, replaced by each better
    evaluation).

    Only the score of mixtures decides; the clean-source PSNR and SSIM of the selected
    evaluation are recorded beside it (`best`) for the report, never compared.
    """

    SCORE = "remix_consistency_db"

    def __init__(self, config, chief):
        self.config = config
        self.chief = chief
        self.best = None  # {"step", SCORE, "psnr_db", "ssim"} of the selected evaluation

    def restore(self, split):
        """Re-scores the selected checkpoint a resumed run left on the validation `split`, so
        that later evaluations are compared with it; one from before `selectable_from` (a run
        given more --train_steps) is not, and the first evaluation that may be picked replaces
        it."""
        prefix = rundir.selected_checkpoint(self.config.workdir)
        if prefix is None:
            return
        step = rundir.checkpoint_step(prefix)
        start = selectable_from(self.config.train_steps)
        if step < start:
            log.info(
                "selected so far: step %d, before step %d, from which --select=unsupervised picks",
                step,
                start,
            )
            return
        mask_net, _ = rundir.restore_mask_net(self.config.workdir, self.config, prefix)
        scores = evaluation.evaluate(mask_net, split)
        self.best = {
            "step": step,
            **unsupervised_evaluation(mask_net, split, self.config.unsupervised_mixtures),
            "psnr_db": scores["psnr_db"],
            "ssim": scores["ssim"],
        }
        log.info("selected so far: step %d, remix consistency %.2f dB", step, self.best[self.SCORE])

    def offer(self, mask_net, entry):
        """Selects the evaluation `entry` (a history entry of `mask_net`'s current weights) if
        it may be picked and its score beats the selected one's; returns whether it did."""
        if entry["step"] < selectable_from(self.config.train_steps):
            return False
        if self.best is not None and entry[self.SCORE] <= self.best[self.SCORE]:
            return False
        save_selected(self.config.workdir, self.chief, mask_net, entry["step"])
        self.best = {k: entry[k] for k in ("step", self.SCORE, "psnr_db", "ssim")}
        return True


def save_selected(workdir, chief, mask_net, step):
    """Replaces the workdir's selected checkpoint (`selected/ckpt-<step>`, the mask net alone)
    with `mask_net`, flushed to disk."""
    directory = rundir.path(workdir, rundir.SELECTED_DIR)
    # Every worker saves (see distribute.checkpoint_write_dir); only the chief's copy stays.
    write_dir = distribute.checkpoint_write_dir(directory, chief)
    manager = tf.train.CheckpointManager(
        tf.train.Checkpoint(mask_net=mask_net), write_dir, max_to_keep=1
    )
    try:
        with rundir.writes_to(f"the selected checkpoint in {directory}"):
            rundir.make_durable(manager.save(checkpoint_number=step))
    finally:
        if write_dir != directory:
            shutil.rmtree(write_dir, ignore_errors=True)


def _image_grid(split, masks):
    """`[1, n*H, 5*W, C]` rows of mixture | estimate a | estimate b | true a | true b."""
    n = len(masks)
    mixtures = split.mixtures[:n]
    columns = [
        mixtures,
        *metrics.estimates_from_mask(mixtures, masks),
        split.sources_a[:n],
        split.sources_b[:n],
    ]
    rows = np.concatenate(columns, axis=2)
    return np.clip(np.concatenate(list(rows), axis=0)[None], 0.0, 1.0)


class Evaluation(keras.callbacks.Callback):
    """Every `config.eval_every` steps, scores the mask net on the validation mixtures and
    records it; owns the run's record (`results`, written as eval.json) and its history.

    Evaluation time is left out of the training seconds. Every worker evaluates, so that all
    reach the next training step together, but only the chief writes.
    """

    def __init__(
        self, config, state, split, history, machines, writer, chief, clock, progress, selection
    ):
        """Logs the half-mask baseline on `split`; evaluates nothing yet.

        Args:
          config: the run's `Config`.
          state: the run's `RunState`; `state.model` is the trainer.
          split: the validation `MixtureSplit`.
          history: the evaluations recorded before (resumed runs), oldest first.
          machines: every machine the run trained on, this one included.
          writer: the TensorBoard summary writer (a no-op one on other workers than the chief).
          chief: whether this worker writes the record.
          clock: the `TrainingClock`, paused while evaluating.
          progress: the `ProgressLog` whose means each history entry records.
          selection: the run's `Selection` under `--select=unsupervised`, else None.
        """
        super().__init__()
        self.config = config
        self.state = state
        self.split = split
        self.history = list(history)
        self.machines = machines
        self.writer = writer
        self.chief = chief
        self.clock = clock
        self.progress = progress
        self.selection = selection
        self.results = {}
        self.baseline = evaluation.half_mask_baseline(split)
        log.info(
            "half-mask baseline on %d validation mixtures: %.2f dB PSNR, %.3f SSIM",
            len(split.mixtures),
            self.baseline["half_mask_psnr_db"],
            self.baseline["half_mask_ssim"],
        )

    def on_train_batch_end(self, batch, logs=None):
        if not _is_due(self.state.step, self.config.eval_every, self.config.train_steps):
            return
        with self.clock.paused():
            self.evaluate(self.progress.take_means())

    @property
    def step(self):
        """The step of the latest evaluation, None before the first."""
        return self.results.get("step")

    def evaluate(self, train_means=None):
        """Scores the mask net on the validation split and records it; `train_means`, the
        training scalars' means since the previous evaluation, go into its history entry when
        given."""
        mask_net, step = self.state.model.mask_net, self.state.step
        scores = evaluation.evaluate(mask_net, self.split)
        # A finished run evaluated again replaces its own entry instead of repeating it, keeping
        # the training means recorded when it trained.
        replaced = next((h for h in self.history if h["step"] == step), {})
        train_means = train_means or replaced.get("train_means")
        self.history = [h for h in self.history if h["step"] < step]
        entry = {
            "step": step,
            "train_seconds": float(self.state.train_seconds.numpy()),
            "psnr_db": scores["psnr_db"],
            "ssim": scores["ssim"],
        }
        if train_means:
            entry["train_means"] = train_means
        unsupervised = unsupervised_evaluation(
            mask_net, self.split, self.config.unsupervised_mixtures
        )
        entry.update(unsupervised)
        self.history.append(entry)
        selected = self.selection is not None and self.selection.offer(mask_net, entry)
        self.results = dict(
            scores,
            **self.baseline,
            **unsupervised,
            split="validation",
            step=step,
            train_seconds=entry["train_seconds"],
            skipped_steps=int(self.state.model.skipped_steps.numpy()),
            collapse_detected_at_step=self.state.collapse_detected_at_step,
            config=self.config.to_dict(),
            machines=self.machines,
            history=self.history,
            **{
                f"seconds_to_{metric}": marks
                for metric, marks in evaluation.seconds_to_quality_marks(self.history).items()
            },
        )
        if self.selection is not None and self.selection.best is not None:
            self.results["selected"] = self.selection.best
        masks = evaluation.predict_masks(mask_net, self.split.mixtures[: rundir.SAMPLE_COUNT])
        if self.chief:
            self._write_record()
            rundir.write_mask_samples(self.config.workdir, self.split, masks, scores["permutation"])
        log.info(
            "eval at step %d: %.2f dB PSNR, %.3f SSIM, %.1f%% swapped (half mask %.2f dB, "
            "%.3f)%s%s",
            step,
            scores["psnr_db"],
            scores["ssim"],
            100 * scores["swapped_fraction"],
            self.baseline["half_mask_psnr_db"],
            self.baseline["half_mask_ssim"],
            "".join(f" | {name} {value:.2f}" for name, value in unsupervised.items()),
            " | COLLAPSED: one output takes nearly all energy" if scores["collapsed"] else "",
        )
        if selected:
            log.info(
                "selected step %d: the highest remix consistency since step %d",
                step,
                selectable_from(self.config.train_steps),
            )
        with rundir.writes_to(rundir.path(self.config.workdir, rundir.TENSORBOARD_DIR)):
            with self.writer.as_default(step=step):
                for name in ("psnr_db", "ssim", "energy_share", "swapped_fraction"):
                    tf.summary.scalar(f"eval/{name}", scores[name])
                for name, value in unsupervised.items():
                    tf.summary.scalar(f"eval/{name}", value)
                tf.summary.image(
                    "eval/mixture|estimate_a|estimate_b|true_a|true_b",
                    _image_grid(self.split, masks),
                )
            self.writer.flush()

    def add_selected(self, scores):
        """Records `scores`, the validation scores of the mask net that the test scoring and
        export take when it is not the final one, as `selected`."""
        self.results["selected"] = scores
        if self.chief:
            self._write_record()

    def add_test(self, scores):
        """Adds the one scoring of the test mixtures to the record, as `test`."""
        self.results["test"] = scores
        if self.chief:
            self._write_record()

    def _write_record(self):
        rundir.write_json(rundir.path(self.config.workdir, rundir.EVAL_FILE), self.results)


class StopAtStep(keras.callbacks.Callback):
    """Ends training once the run's step reaches `train_steps`."""

    def __init__(self, state, train_steps):
        super().__init__()
        self.state = state
        self.train_steps = train_steps

    def on_train_batch_end(self, batch, logs=None):
        if self.state.step >= self.train_steps:
            self.model.stop_training = True
