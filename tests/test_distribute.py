"""Multi-device and multi-worker training compute the one-device step on the same global batch.

TensorFlow runs in processes of their own here (tests/distributed_runs.py): logical devices and
multi-worker collectives must be configured before TensorFlow starts. The runs are tiny (width 4,
8 pairs, 5 steps: D updates at steps 1 and 5) and every subprocess has a timeout.
"""

import dataclasses
import json
import os
import socket
import subprocess
import sys

import distributed_runs
import numpy as np
import pytest
import tensorflow as tf

from aur_tf import train_lib
from aur_tf.errors import UserError

# Several devices and worker processes.
pytestmark = pytest.mark.slow

HELPER = distributed_runs.__file__
TIMEOUT_SECONDS = 300


def _finish(processes):
    """Waits for all processes; kills the rest if one fails or hangs. Returns their last lines."""
    try:
        outputs = [p.communicate(timeout=TIMEOUT_SECONDS) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
                p.communicate()
    failures = [
        f"process {i} exited with {p.returncode}:\n{stderr[-3000:]}"
        for i, (p, (_, stderr)) in enumerate(zip(processes, outputs))
        if p.returncode
    ]
    assert not failures, "\n\n".join(failures)
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


def _launch(mode, workdir, **env):
    return subprocess.Popen(
        [sys.executable, HELPER, mode, str(workdir)],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _assert_same_losses(run, reference):
    np.testing.assert_equal(sorted(run), sorted(reference))
    for name, values in reference.items():
        # Measured: 2e-5 relative at most; without synchronized BatchNorm the adversarial loss is
        # already 1e-2 off at step 1, so this tolerance does tell the two apart.
        np.testing.assert_allclose(run[name], values, rtol=1e-4, atol=1e-6, err_msg=name)


def _assert_same_checkpoint(workdir, reference_workdir):
    """Every variable of the latest checkpoints agrees: weights, BN statistics, Adam moments.

    Adam's steps do not change when all gradients are scaled alike, so the losses alone cannot
    tell a missing 1/R loss scaling; its moments can (the velocities would be R^2 times larger).
    """
    readers = [
        tf.train.load_checkpoint(os.path.join(w, "checkpoints"))
        for w in (workdir, reference_workdir)
    ]
    names = readers[0].get_variable_to_shape_map()
    assert names == readers[1].get_variable_to_shape_map()
    for name in sorted(names):
        if name.startswith(("_CHECKPOINTABLE_OBJECT_GRAPH", "train_seconds")):
            continue
        value, reference = (np.asarray(r.get_tensor(name)) for r in readers)
        # Measured: 1e-5 of the tensor's largest magnitude at most.
        np.testing.assert_allclose(
            value, reference, rtol=0, atol=1e-4 * np.abs(reference).max(), err_msg=name
        )


@pytest.fixture(scope="module")
def mirrored_runs(tmp_path_factory):
    """One-device and two-device MirroredStrategy runs of the same config, in one process."""
    workdir = tmp_path_factory.mktemp("mirrored")
    (report,) = _finish([_launch("mirrored", workdir)])
    return workdir, report


def test_two_devices_log_the_losses_of_one_device(mirrored_runs):
    _, report = mirrored_runs
    _assert_same_losses(report["mirrored"], report["default"])
    # The energy term's weight as `run_config` fades it.
    assert report["mirrored"]["beta_now"] == pytest.approx([5.0, 5.0, 3.75, 2.5, 1.25])
    assert report["mirrored"]["learning_rate_scale"] == pytest.approx([1, 1, 1, 0.875, 0.75])


def test_two_devices_reach_the_state_of_one_device(mirrored_runs):
    workdir, _ = mirrored_runs
    _assert_same_checkpoint(workdir / "mirrored", workdir / "default")


def test_a_float16_overflow_on_one_replica_skips_the_step_on_every_replica(mirrored_runs):
    _, report = mirrored_runs
    assert report["overflow"] == {"skipped": [1, 1], "weight": 1.0, "scale_ratio": 0.5}


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_workers_train_as_one_device_and_the_chief_checkpoint_resumes_on_one(
    tmp_path, stroke_data
):
    workdir = tmp_path / "two_workers"
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    scratch = [tmp_path / f"tmp_worker{i}" for i in range(2)]
    for directory in scratch:
        directory.mkdir()
    workers = [
        _launch(
            "worker",
            workdir,
            TMPDIR=str(scratch[i]),
            TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        )
        for i in range(2)
    ]
    assert [r["step"] for r in _finish(workers)] == [5, 5]

    # Only the chief wrote into the workdir; the other worker's checkpoints went to scratch, gone.
    assert sorted(os.listdir(workdir / "checkpoints")) == [
        "checkpoint",
        "ckpt-5.data-00000-of-00001",
        "ckpt-5.index",
    ]
    assert len(os.listdir(workdir / "tensorboard")) == 1
    assert [os.listdir(d) for d in scratch] == [[], []]

    # Resumed on one device, the run goes on exactly as a one-device run from the start.
    config = distributed_runs.run_config(str(workdir), strategy="multi_worker")
    resumed = train_lib.train(
        dataclasses.replace(config, strategy="default", train_steps=7), data=stroke_data
    )
    one_device = distributed_runs.run_config(str(tmp_path / "one_device"), train_steps=7)
    train_lib.train(one_device, data=stroke_data)
    assert resumed["step"] == 7
    logged = distributed_runs.logged_scalars(str(workdir))
    _assert_same_losses(logged, distributed_runs.logged_scalars(one_device.workdir))
    assert logged["beta_now"] == pytest.approx([5.0, 5.0, 3.75, 2.5, 1.25, 0.0, 0.0])
    assert logged["learning_rate_scale"] == pytest.approx([1, 1, 1, 0.875, 0.75, 0.625, 0.5])
    _assert_same_checkpoint(workdir, one_device.workdir)


def test_unknown_strategy_and_multi_worker_without_tf_config_are_user_errors(
    make_config, monkeypatch
):
    with pytest.raises(UserError, match="--strategy=horovod"):
        make_config(strategy="horovod")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(UserError, match="TF_CONFIG"):
        train_lib.train(make_config(strategy="multi_worker"))
