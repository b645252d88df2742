"""`train(config)`: data, models, checkpoints, logging and evaluation around the Keras trainers.

A run writes its workdir (`aur_tf.rundir`): config.json, checkpoints/, tensorboard/, eval.json
(the latest evaluation on the validation mixtures, with its history, each entry with the mean
training scalars since the evaluation before, the time to reach quality marks and the machines
the run trained on; once training has finished, also `test`: the one scoring of the test
mixtures) and samples.npz. Running the same command again resumes from the latest checkpoint.
What happens after each training step (progress lines, checkpoints, evaluations) is done by the
callbacks of `aur_tf.callbacks`.

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

import contextlib
import logging
import shutil

import keras
import numpy as np
import tensorflow as tf

from aur_tf import (
    averaging,
    callbacks,
    convolutions,
    distribute,
    evaluation,
    machine,
    models,
    rundir,
    schedules,
)
from aur_tf import trainer as trainer_lib
from aur_tf.config import Config
from aur_tf.data import pipeline
from aur_tf.data.mixtures import load_mixture_dataset
from aur_tf.errors import UserError

log = logging.getLogger("aur_tf")


def _read_previous_record(workdir, step):
    """The evaluations up to `step` recorded in the workdir's eval.json, and the machines the run
    trained on so far (none of either if it is missing)."""
    previous = (
        rundir.read_record(
            rundir.path(workdir, rundir.EVAL_FILE),
            "move it away to resume without the evaluation history",
        )
        or {}
    )
    history = previous.get("history", [])
    return [h for h in history if h["step"] <= step], previous.get("machines", [])


def _by_phases(conv_kernels):
    """Whether `--conv_kernels` means transposed convolutions by phases on this machine."""
    if conv_kernels == "auto":
        return not convolutions.native_kernels_are_fast()
    return conv_kernels == "phases"


def build_trainer(config, synchronized_bn=False):
    """The Keras trainer for `config`, compiled, and its checkpointable parts by name."""
    dtype = config.mixed_precision
    by_phases = _by_phases(config.conv_kernels)
    mask_net = models.build_mask_net(
        config.image_size, config.channels, config.mask_width, dtype, synchronized_bn, by_phases
    )
    mask_optimizer = trainer_lib.make_optimizer(config.mask_learning_rate, config.adam_beta1, dtype)
    decay = {
        "learning_rate_decay_start": config.learning_rate_decay_start,
        "learning_rate_decay_steps": config.learning_rate_decay_steps,
    }
    if config.mode == "supervised":
        model = trainer_lib.SupervisedTrainer(mask_net, **decay)
        model.compile(mask_optimizer, jit_compile=config.jit_compile)
        return model, {"mask_net": mask_net, "mask_optimizer": mask_optimizer}
    discriminator = models.build_discriminator(
        config.image_size,
        config.channels,
        config.disc_width,
        dtype,
        synchronized_bn,
        by_phases,
        normalization=config.disc_normalization,
    )
    disc_optimizer = trainer_lib.make_optimizer(config.disc_learning_rate, config.adam_beta1, dtype)
    model = trainer_lib.UnmixRemixTrainer(
        mask_net,
        discriminator,
        alpha=config.alpha,
        beta=config.beta,
        energy=config.energy,
        energy_margin=config.energy_margin,
        beta_fade_start=config.beta_fade_start,
        beta_fade_steps=config.beta_fade_steps,
        mask_steps_per_disc_step=config.mask_steps_per_disc_step,
        instance_noise=config.instance_noise,
        instance_noise_steps=config.instance_noise_steps,
        **decay,
    )
    model.compile(mask_optimizer, disc_optimizer, jit_compile=config.jit_compile)
    return model, {
        "mask_net": mask_net,
        "discriminator": discriminator,
        "mask_optimizer": mask_optimizer,
        "disc_optimizer": disc_optimizer,
    }


def _use_configured_learning_rates(config, trackables, step):
    """Sets each optimizer's learning rate to the config's at `step` after a checkpoint restored it.

    Keras checkpoints an optimizer's learning rate as a variable, so without this a run resumed
    with another `--*_learning_rate` (say, lowered to fine-tune) would keep the old one while its
    config.json recorded the new one. With a decay the trainer sets the rates at every step;
    this only says when the checkpoint's differ from the schedule's.
    """
    for name in ("mask", "disc"):
        optimizer = trackables.get(f"{name}_optimizer")
        if optimizer is None:
            continue
        rate = float(
            schedules.linear_fade(
                getattr(config, f"{name}_learning_rate"),
                # The rate of the last step trained, which set the variable.
                max(step - 1, 0),
                config.learning_rate_decay_start,
                config.learning_rate_decay_steps,
            )
        )
        restored = float(np.asarray(optimizer.learning_rate))
        if not np.isclose(restored, rate, rtol=1e-6, atol=0.0):  # the variable is float32
            log.info("--%s_learning_rate=%g replaces the checkpoint's %g", name, rate, restored)
            optimizer.learning_rate = rate


def _training_batches(config, data, step, strategy):
    """Each worker's input pipeline yields its replicas' shares of the one-device global batch."""

    def replica_batches(input_context):
        if config.mode == "supervised":
            return pipeline.supervised_batches(
                data.train.mixtures,
                data.train.sources_a,
                2 * config.batch_pairs,
                config.seed,
                step,
                input_context,
            )
        # Unsupervised training is handed the mixtures and nothing else.
        return pipeline.pair_batches(
            data.train.mixtures, config.batch_pairs, config.seed, step, input_context
        )

    return strategy.distribute_datasets_from_function(replica_batches)


def _summary_writer(config, chief):
    """The TensorBoard writer of the run; a no-op one on other workers than the chief."""
    if not chief:
        return tf.summary.create_noop_writer()
    directory = rundir.path(config.workdir, rundir.TENSORBOARD_DIR)
    with rundir.writes_to(directory):
        return tf.summary.create_file_writer(directory)


def _start(config, strategy):
    """Checks the settings and the workdir and seeds the run; returns whether this worker is the
    chief (the one that writes)."""
    replicas = strategy.num_replicas_in_sync
    if config.batch_pairs % replicas:
        raise UserError(
            f"--batch_pairs={config.batch_pairs} is the global batch and must divide "
            f"by the {replicas} replicas of --strategy={config.strategy}"
        )
    chief = distribute.is_chief(strategy)
    rundir.check_resumable(config, chief)
    if config.deterministic:
        # Process-wide, and TensorFlow offers no public way to turn it off again.
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(config.seed)
    return chief


def _fit(config, data, strategy, state, checkpoint, record, chief):
    """Trains from `state.step` to `config.train_steps`, checkpointing and evaluating as it goes."""
    checkpoint_dir = rundir.path(config.workdir, rundir.CHECKPOINTS_DIR)
    write_dir = distribute.checkpoint_write_dir(checkpoint_dir, chief)
    manager = tf.train.CheckpointManager(checkpoint, write_dir, max_to_keep=config.keep_checkpoints)
    log.info(
        "training %s from step %d to %d in %s on %d replica(s), transposed convolutions %s",
        config.mode,
        state.step,
        config.train_steps,
        config.workdir,
        strategy.num_replicas_in_sync,
        "by phases" if _by_phases(config.conv_kernels) else "native",
    )
    step_callbacks = [
        record.clock,
        callbacks.DivergenceGuard(state, manager),
        record.progress,
        callbacks.Checkpointing(config, state, manager, record.clock),
        record,
        callbacks.StopAtStep(state, config.train_steps),
    ]
    try:
        state.model.fit(
            _training_batches(config, data, state.step, strategy),
            epochs=1,
            steps_per_epoch=config.train_steps - state.step,
            verbose=0,
            shuffle=False,
            callbacks=step_callbacks,
        )
    finally:
        if write_dir != checkpoint_dir:
            shutil.rmtree(write_dir, ignore_errors=True)


def train(config: Config, data=None, final_test=True):
    """Trains (or resumes) the run described by `config` and returns its final evaluation.

    Args:
      config: the run's settings.
      data: a `MixtureDataset`; loaded from `config.source_a/b` when None.
      final_test: score the test mixtures once the run reaches `train_steps`. Seed trials
        (`aur_tf.trials`) leave them to the run they choose, which scores them once.

    Returns:
      The dict written to `WORKDIR/eval.json`.

    Raises:
      UserError: bad settings, sources, workdir or checkpoints (then nothing in the workdir has
        changed), or a full disk.
      TrainingDiverged: a loss or weight became non-finite; the checkpoints before it are kept.
    """
    strategy = distribute.make_strategy(config.strategy)  # First: it may configure the runtime.
    chief = _start(config, strategy)
    # The chief writes the workdir; two runs in it at once would interleave their checkpoints.
    with rundir.exclusive(config.workdir, "training run") if chief else contextlib.nullcontext():
        return _train(config, data, strategy, chief, final_test)


def _train(config, data, strategy, chief, final_test):
    """`train` once the workdir is checked and, on the chief, locked."""
    if data is None:
        data = load_mixture_dataset(config)
    with strategy.scope():
        # Each replica sees 2B/R mixtures; BatchNorm over those alone would make the step (and D's
        # real-vs-remix statistics) depend on the device count.
        model, trackables = build_trainer(config, synchronized_bn=strategy.num_replicas_in_sync > 1)
    state = callbacks.RunState(model)
    checkpoint = tf.train.Checkpoint(
        step=model.step_counter,
        skipped_steps=model.skipped_steps,
        **state.trackables(),
        **trackables,
    )
    restored = rundir.restore_newest_good(
        checkpoint, rundir.path(config.workdir, rundir.CHECKPOINTS_DIR)
    )
    distribute.check_same_step(strategy, state.step, config.workdir)
    history, machines = _read_previous_record(config.workdir, state.step) if restored else ([], [])
    # Every input has been read and found good: from here on the run writes (the chief only).
    if chief:
        rundir.write_json(rundir.path(config.workdir, rundir.CONFIG_FILE), config.to_dict())
    if restored:
        log.info("resumed from %s at step %d", restored, state.step)
        _use_configured_learning_rates(config, trackables, state.step)
    writer = _summary_writer(config, chief)
    machines = list(dict.fromkeys(machines + [machine.describe()]))
    selection = callbacks.Selection(config, chief) if config.select == "unsupervised" else None
    if selection is not None and restored:
        selection.restore(data.validation)
    record = callbacks.Evaluation(
        config,
        state,
        data.validation,
        history,
        machines,
        writer,
        chief,
        callbacks.TrainingClock(state),
        callbacks.ProgressLog(config, state, writer),
        selection,
    )
    if state.step < config.train_steps:
        if chief and config.average_checkpoints > 1:
            # The average of a run trained on past it would outlive the weights it averaged.
            shutil.rmtree(rundir.path(config.workdir, rundir.SELECTED_DIR), ignore_errors=True)
        _fit(config, data, strategy, state, checkpoint, record, chief)
    if record.step != state.step:
        record.evaluate()
    if state.step >= config.train_steps and final_test:
        if selection is not None and selection.best is not None:
            mask_net, _ = rundir.restore_mask_net(config.workdir, config)
            record.add_test(
                score_test(mask_net, data.test, selection.best["step"], "selected checkpoint")
            )
        elif config.average_checkpoints > 1:
            mask_net, steps = _average(config, data.validation, record, chief)
            scores = score_test(mask_net, data.test, steps[-1], _averaged(steps))
            record.add_test(dict(scores, averaged_steps=steps))
        else:
            record.add_test(score_test(model.mask_net, data.test, state.step, "final checkpoint"))
    return record.results


def _averaged(steps):
    return f"mean of the {len(steps)} checkpoints of steps {steps[0]}-{steps[-1]}"


def _average(config, validation, record, chief):
    """Averages the run's newest `config.average_checkpoints` checkpoints, keeps the average in
    the workdir's selected/, its validation scores in the record's `selected` and its estimates
    in samples.npz.

    Returns:
      `(mask_net, steps)` of `averaging.average_mask_net`.
    """
    mask_net, steps = averaging.average_mask_net(config.workdir, config, config.average_checkpoints)
    scores = evaluation.evaluate(mask_net, validation)
    callbacks.save_selected(config.workdir, chief, mask_net, steps[-1])
    if chief:
        masks = evaluation.predict_masks(mask_net, validation.mixtures[: rundir.SAMPLE_COUNT])
        rundir.write_mask_samples(config.workdir, validation, masks, scores["permutation"])
    record.add_selected(dict(scores, step=steps[-1], averaged_steps=steps))
    log.info(
        "validation, %s: %.2f dB PSNR, %.3f SSIM, %.1f%% swapped (final checkpoint %.2f dB, %.3f)",
        _averaged(steps),
        scores["psnr_db"],
        scores["ssim"],
        100 * scores["swapped_fraction"],
        record.results["psnr_db"],
        record.results["ssim"],
    )
    return mask_net, steps


def score_test(mask_net, split, step, which):
    """The one scoring of a finished run on its test mixtures, logged and returned.

    Args:
      mask_net: the mask net of the checkpoint to score.
      split: the test `MixtureSplit`.
      step: the step of that checkpoint, recorded as the scores' `step`.
      which: what the mask net is ("final checkpoint", "selected checkpoint" or the checkpoints
        averaged), for the log line.

    Returns:
      `evaluation.evaluate`'s scores with the split's half-mask baseline and `step` added.
    """
    scores = dict(
        evaluation.evaluate(mask_net, split), **evaluation.half_mask_baseline(split), step=step
    )
    log.info(
        "test (%d mixtures, %s, step %d): %.2f dB PSNR, %.3f SSIM, %.1f%% swapped "
        "(half mask %.2f dB, %.3f)",
        len(split.mixtures),
        which,
        step,
        scores["psnr_db"],
        scores["ssim"],
        100 * scores["swapped_fraction"],
        scores["half_mask_psnr_db"],
        scores["half_mask_ssim"],
    )
    return scores
