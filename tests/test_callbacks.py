"""The training callbacks, each on its own with stand-ins for the trainer and its checkpoints."""

import logging
import math
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from aur_tf import callbacks
from aur_tf.config import Config
from aur_tf.errors import TrainingDiverged


class _Trainer:
    """What the callbacks read of a trainer: the step, skipped steps, weights, metrics."""

    def __init__(self, weights=(np.zeros(2, np.float32),)):
        self.step_counter = tf.Variable(0, dtype=tf.int64)
        self.skipped_steps = tf.Variable(0, dtype=tf.int64)
        self.weights = [keras.Variable(w, name=f"w{i}") for i, w in enumerate(weights)]
        self.stop_training = False
        self.resets = 0

    def reset_metrics(self):
        self.resets += 1


def _attached(callback, trainer):
    callback.set_model(trainer)
    return callback


def _steps(callback, trainer, logs, count):
    """Runs `count` steps of `callback`, the trainer's step counting up as fit's does."""
    callback.on_train_begin()
    for batch in range(count):
        trainer.step_counter.assign_add(1)
        callback.on_train_batch_end(batch, logs)


def test_sustained_training_collapse_is_detected_once():
    state = callbacks.RunState(model=None)
    shares = [0.5, 0.99, 0.99, 0.3, 0.01, 0.98, 0.97, 0.99, 0.5, 0.99, 0.99, 0.99]
    detected = [
        step
        for step, share in enumerate(shares, start=1)
        if state.watch_collapse(step, share, windows=3)
    ]
    # Steps 5-7 are the first three collapsed windows in a row (either output may take it all).
    assert detected == [7] and state.collapse_detected_at_step == 7


def test_the_clock_leaves_paused_time_out():
    state = callbacks.RunState(model=None)
    clock = callbacks.TrainingClock(state)
    clock.on_train_begin()
    with clock.paused():
        time.sleep(0.05)
    clock.tick()
    assert 0 <= float(state.train_seconds.numpy()) < 0.04


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_non_finite_loss_stops_training_naming_the_kept_checkpoint(value):
    trainer = _Trainer()
    state = callbacks.RunState(trainer)
    manager = types.SimpleNamespace(latest_checkpoint="run/checkpoints/ckpt-2")
    guard = _attached(callbacks.DivergenceGuard(state, manager), trainer)
    _steps(guard, trainer, {"loss_mask": np.ones(1)}, 2)
    with pytest.raises(
        TrainingDiverged,
        match=f"loss_mask became {value} at step 3; the last "
        "checkpoint, run/checkpoints/ckpt-2, is kept",
    ):
        _steps(guard, trainer, {"loss_mask": np.full(1, value)}, 1)
    assert trainer.stop_training


def test_a_checkpoint_of_non_finite_weights_is_refused():
    trainer = _Trainer(weights=[np.array([1.0, np.nan], np.float32)])
    state = callbacks.RunState(trainer)
    saved = []
    manager = types.SimpleNamespace(
        latest_checkpoint=None,
        directory="ckpts",
        save=lambda checkpoint_number: saved.append(checkpoint_number),
    )
    config = Config(checkpoint_every=2, train_steps=4)
    checkpointing = _attached(
        callbacks.Checkpointing(config, state, manager, callbacks.TrainingClock(state)), trainer
    )
    with pytest.raises(
        TrainingDiverged, match="weight w0 became non-finite at step 2; no checkpoint was written"
    ):
        _steps(checkpointing, trainer, {}, 2)
    assert saved == []


def test_progress_lines_come_every_log_every_steps_and_at_the_end(caplog):
    trainer = _Trainer()
    state = callbacks.RunState(trainer)
    config = Config(log_every=2, train_steps=5, collapse_windows=2)
    progress = _attached(
        callbacks.ProgressLog(config, state, tf.summary.create_noop_writer()), trainer
    )
    with caplog.at_level(logging.INFO, logger="aur_tf"):
        _steps(progress, trainer, {"loss_mask": np.full(1, 0.5), "energy_share": np.ones(1)}, 5)
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert [line.split(" |")[0] for line in lines] == ["step 2/5", "step 4/5", "step 5/5"]
    assert "mask 0.5000" in lines[0] and trainer.resets == 3
    # Every window had all energy in one output: collapsed from the second window on.
    assert state.collapse_detected_at_step == 4
    assert progress.take_means() == {"loss_mask": 0.5, "energy_share": 1.0}
    assert progress.take_means() == {}


def test_training_stops_at_train_steps():
    trainer = _Trainer()
    stop = _attached(callbacks.StopAtStep(callbacks.RunState(trainer), train_steps=3), trainer)
    _steps(stop, trainer, {}, 2)
    assert not trainer.stop_training
    _steps(stop, trainer, {}, 1)
    assert trainer.stop_training


def test_image_grid_rows_are_mixture_estimates_and_sources():
    rng = np.random.default_rng(0)
    split = types.SimpleNamespace(
        **{name: rng.random((3, 4, 5, 1), np.float32) for name in ("sources_a", "sources_b")}
    )
    split.mixtures = (split.sources_a + split.sources_b) / 2
    masks = np.stack([np.ones((4, 5, 1)), np.zeros((4, 5, 1))])  # two of the three mixtures
    grid = callbacks._image_grid(split, masks)
    assert grid.shape == (1, 2 * 4, 5 * 5, 1)
    first, second = grid[0, :4], grid[0, 4:]
    y0, y1 = split.mixtures[0], split.mixtures[1]
    columns = [first[:, 5 * i : 5 * (i + 1)] for i in range(5)]
    expected = [y0, np.clip(2 * y0, 0, 1), 0 * y0, split.sources_a[0], split.sources_b[0]]
    for column, want in zip(columns, expected):
        np.testing.assert_allclose(column, want, atol=1e-6)
    np.testing.assert_allclose(second[:, 5:10], 0 * y1, atol=1e-6)
    np.testing.assert_allclose(second[:, 10:15], np.clip(2 * y1, 0, 1), atol=1e-6)
