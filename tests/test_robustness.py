"""Whole runs through main.py: kill -9 and resume, determinism, divergence.

A run killed with SIGKILL once its first checkpoint exists, then started again with the same
command, must resume at its last checkpoint and end bit-identical to a run that was never
interrupted (with --deterministic); two uninterrupted runs must log identical losses.
"""

import glob
import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from cli_helpers import ROOT, assert_one_line_error, run_main

# Subprocesses killed and resumed.
pytestmark = pytest.mark.slow

STEPS, CHECKPOINT_EVERY = 80, 10


def run_args(npz_source, workdir, *extra):
    return [
        f"--source_a=npz:{npz_source}?labels=0-4",
        f"--source_b=npz:{npz_source}?labels=5-9",
        f"--workdir={workdir}",
        "--train_mixtures=60",
        "--test_mixtures=20",
        "--batch_pairs=4",
        "--mask_width=4",
        "--disc_width=4",
        f"--train_steps={STEPS}",
        f"--checkpoint_every={CHECKPOINT_EVERY}",
        "--log_every=1",
        "--eval_every=40",
        "--deterministic",
        *extra,
    ]


def logged_scalars(workdir):
    """`{(tag, step): value}` of the train/ scalars in TensorBoard, later event files winning."""
    import tensorflow as tf

    values = {}
    for path in sorted(glob.glob(os.path.join(workdir, "tensorboard", "events.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag.startswith("train/") and value.tag != "train/steps_per_second":
                    values[value.tag, event.step] = tf.make_ndarray(value.tensor).item()
    return values


def checkpointed_values(workdir):
    """Every value in the final checkpoint except the wall-clock training time."""
    import tensorflow as tf

    reader = tf.train.load_checkpoint(os.path.join(workdir, "checkpoints", f"ckpt-{STEPS}"))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if not name.startswith("train_seconds")
    }


def assert_same_values(a, b):
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)


@pytest.fixture(scope="module")
def straight_run(npz_source, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight") / "run"
    result = run_main(*run_args(npz_source, workdir))
    assert result.returncode == 0, result.stderr
    return workdir


def test_sigkill_then_the_same_command_resumes_and_ends_identical(
    npz_source, straight_run, tmp_path
):
    workdir = tmp_path / "run"
    args = run_args(npz_source, workdir)
    state_file = workdir / "checkpoints" / "checkpoint"
    with open(tmp_path / "killed.log", "w") as output:
        process = subprocess.Popen(
            [sys.executable, os.path.join(ROOT, "main.py"), *args],
            stdout=output,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 300
        while not state_file.exists():
            assert process.poll() is None, (tmp_path / "killed.log").read_text()
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            time.sleep(0.01)
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed_output = (tmp_path / "killed.log").read_text()
    assert process.returncode == -signal.SIGKILL and "done:" not in killed_output
    last_logged = max(int(step) for step in re.findall(rf"step (\d+)/{STEPS}", killed_output))

    result = run_main(*args)

    assert result.returncode == 0, result.stderr
    resumed = re.search(r"resumed from (\S+) at step (\d+)", result.stdout)
    assert resumed, result.stdout
    step = int(resumed.group(2))
    assert resumed.group(1) == str(workdir / "checkpoints" / f"ckpt-{step}")
    assert step % CHECKPOINT_EVERY == 0 and 0 < step < STEPS
    # What was lost is at most one checkpoint interval of the killed run's progress.
    assert 0 <= last_logged - step <= CHECKPOINT_EVERY
    assert f"training unsupervised from step {step} to {STEPS}" in result.stdout
    with open(workdir / "eval.json") as f:
        results = json.load(f)
    assert results["step"] == STEPS and np.isfinite(results["psnr_db"])
    assert [h["step"] for h in results["history"]] == [40, 80]
    # Same weights, optimizer moments and step counter as the uninterrupted run; same TensorBoard
    # losses at every step, the resumed run's file continuing the killed run's steps.
    assert_same_values(checkpointed_values(workdir), checkpointed_values(straight_run))
    assert logged_scalars(workdir) == logged_scalars(straight_run)
    assert len(glob.glob(str(workdir / "tensorboard" / "events.*"))) == 2


def test_deterministic_runs_log_identical_losses(npz_source, straight_run, tmp_path):
    result = run_main(*run_args(npz_source, tmp_path / "again"))
    assert result.returncode == 0, result.stderr
    losses = logged_scalars(tmp_path / "again")
    assert {step for _, step in losses} == set(range(1, STEPS + 1))
    assert losses == logged_scalars(straight_run)
    assert_same_values(checkpointed_values(tmp_path / "again"), checkpointed_values(straight_run))


def test_divergence_is_one_line_and_writes_no_checkpoint_after_it(npz_source, run_cli, tmp_path):
    workdir = tmp_path / "run"
    # The first mask update throws the weights to ~1e30, so step 2's losses overflow.
    status, _, err = run_cli(
        *run_args(npz_source, workdir, "--checkpoint_every=1", "--mask_learning_rate=1e30")
    )
    assert_one_line_error(
        status,
        err,
        r"became nan at step 2; the last checkpoint, .*ckpt-1, is "
        r"kept: lower the learning rates",
        expected_status=3,
    )
    assert sorted(os.listdir(workdir / "checkpoints")) == [
        "checkpoint",
        "ckpt-1.data-00000-of-00001",
        "ckpt-1.index",
    ]
