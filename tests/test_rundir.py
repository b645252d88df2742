"""The run directory: one record schema, one JSON reader, one durable writer, load_run."""

import json
import os

import numpy as np
import pytest

from aur_tf import rundir
from aur_tf.config import Config
from aur_tf.data.mixtures import MixtureSplit
from aur_tf.errors import UserError


def _record(**changes):
    """A minimal valid mask-net eval.json record."""
    record = {
        "psnr_db": 20.0,
        "ssim": 0.9,
        "step": 4,
        "train_seconds": 1.5,
        "half_mask_psnr_db": 10.0,
        "half_mask_ssim": 0.5,
        "split": "validation",
        "config": {
            "source_a": "mnist?labels=0-4",
            "source_b": "mnist?labels=5-9",
            "mode": "unsupervised",
            "seed": 0,
            "train_steps": 4,
        },
        "history": [{"step": 4, "train_seconds": 1.5, "psnr_db": 20.0, "ssim": 0.9}],
        "machines": ["a CPU"],
        "test": {"psnr_db": 19.0, "ssim": 0.8},
    }
    record.update(changes)
    return record


def test_a_valid_record_and_a_baseline_record_fit_the_schema():
    assert rundir.invalid_field(_record()) is None
    baseline = _record(method="rpca", history=None)
    del baseline["history"], baseline["config"]["mode"], baseline["test"]
    assert rundir.invalid_field(baseline) is None


@pytest.mark.parametrize(
    "changes, field",
    [
        ({"psnr_db": None}, "psnr_db"),
        ({"step": True}, "step"),
        ({"config": []}, "config"),
        ({"method": 3}, "method"),
        ({"history": [{"step": 1}]}, "history"),
        ({"machines": "x"}, "machines"),
        ({"test": [1]}, "test"),
        ({"test": {"psnr_db": 1.0, "ssim": "0.8"}}, "test.ssim"),
    ],
)
def test_the_first_bad_field_is_named(changes, field):
    assert rundir.invalid_field(_record(**changes)) == field


@pytest.mark.parametrize("content", [b"[1, 2]", b'"text"', b"null", b"3"])
def test_json_of_the_wrong_type_is_a_one_line_user_error(tmp_path, content):
    path = tmp_path / "config.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match="the top-level object is missing.*: fix it") as raised:
        rundir.read_json_object(str(path), "fix it")
    assert "\n" not in str(raised.value)


@pytest.mark.parametrize("content", [b"{not json", b"\xff\xfe", b""])
def test_unreadable_json_is_a_user_error(tmp_path, content):
    path = tmp_path / "eval.json"
    path.write_bytes(content)
    with pytest.raises(UserError, match="eval.json is not readable JSON"):
        rundir.read_record(str(path))


def test_a_fifo_is_refused_instead_of_blocking(tmp_path):
    os.mkfifo(tmp_path / "eval.json")
    with pytest.raises(UserError, match="FIFO"):
        rundir.read_record(str(tmp_path / "eval.json"))


def test_a_missing_file_reads_as_none(tmp_path):
    assert rundir.read_json_object(str(tmp_path / "absent.json"), "") is None
    assert rundir.read_record(str(tmp_path / "eval.json")) is None


def test_a_record_with_a_bad_field_names_it_and_the_fix(tmp_path):
    path = tmp_path / "eval.json"
    rundir.write_json(str(path), _record(machines=[1]))
    with pytest.raises(
        UserError,
        match=r"eval\.json: machines is missing or of the wrong type "
        r"\(a damaged file, or not written by aur_tf\): move it",
    ):
        rundir.read_record(str(path), "move it")


def test_write_json_replaces_the_file_durably(tmp_path, monkeypatch):
    flushed = []
    fsync = os.fsync

    def recording_fsync(descriptor):
        flushed.append(os.readlink(f"/proc/self/fd/{descriptor}"))
        fsync(descriptor)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = tmp_path / "eval.json"
    path.write_text("old")
    rundir.write_json(str(path), {"b": 1, "a": [2]})
    assert json.loads(path.read_text()) == {"a": [2], "b": 1}
    assert os.listdir(tmp_path) == ["eval.json"]
    assert str(tmp_path) in flushed  # the directory, after the rename
    assert any(os.path.basename(p).endswith(".tmp") for p in flushed)  # the file, before it


def test_a_failed_write_is_a_user_error_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "eval.json"
    path.write_text("old")

    def full(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(UserError, match=r"cannot write .*eval\.json \(No space left on device\)"):
        rundir.write_json(str(path), {})
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["eval.json"]


def test_writing_through_a_symbolic_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").write_text("kept")
    os.symlink(tmp_path / "elsewhere", tmp_path / "eval.json")
    with pytest.raises(UserError, match="symbolic link"):
        rundir.write_json(str(tmp_path / "eval.json"), {})
    assert (tmp_path / "elsewhere").read_text() == "kept"


def test_samples_hold_the_first_mixtures_ordered_by_the_permutation(tmp_path):
    rng = np.random.default_rng(0)
    split = MixtureSplit(*(rng.random((10, 4, 4, 1), dtype=np.float32) for _ in range(3)))
    first, second = split.sources_a + 1, split.sources_b + 2
    rundir.write_samples(str(tmp_path), split, first, second, (1, 0))
    with np.load(tmp_path / rundir.SAMPLES_FILE) as samples:
        assert samples["mixtures"].shape == (rundir.SAMPLE_COUNT, 4, 4, 1)
        np.testing.assert_array_equal(samples["estimates_a"], second[: rundir.SAMPLE_COUNT])
        np.testing.assert_array_equal(samples["estimates_b"], first[: rundir.SAMPLE_COUNT])


def test_load_run_reads_the_config_and_record(tmp_path):
    config = Config(workdir=str(tmp_path), mask_width=4)
    rundir.write_json(rundir.path(str(tmp_path), rundir.CONFIG_FILE), config.to_dict())
    assert rundir.load_run(str(tmp_path)) == (config, {})
    rundir.write_json(rundir.path(str(tmp_path), rundir.EVAL_FILE), _record())
    assert rundir.load_run(str(tmp_path))[1] == _record()


@pytest.mark.parametrize(
    "config_json, message",
    [
        (None, "has no config.json"),
        (b"[]", "top-level object is missing"),
        (b'{"no_such_setting": 1}', "cannot read .*config.json"),
    ],
)
def test_load_run_refuses_what_is_not_a_run(tmp_path, config_json, message):
    if config_json is not None:
        (tmp_path / "config.json").write_bytes(config_json)
    with pytest.raises(UserError, match=message):
        rundir.load_run(str(tmp_path))


def test_load_run_refuses_a_missing_workdir(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        rundir.load_run(str(tmp_path / "absent"))


def test_a_changed_run_setting_is_refused_on_resume(tmp_path):
    saved = Config(workdir=str(tmp_path), mask_width=4)
    rundir.write_json(rundir.path(str(tmp_path), rundir.CONFIG_FILE), saved.to_dict())
    rundir.check_resumable(Config(workdir=str(tmp_path), mask_width=4, train_steps=9), chief=True)
    with pytest.raises(UserError, match="holds a run made with --mask_width=4"):
        rundir.check_resumable(Config(workdir=str(tmp_path), mask_width=8), chief=True)
    assert sorted(os.listdir(tmp_path)) == ["config.json"]


def test_the_writability_probe_never_writes_through_a_link(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    workdir = tmp_path / "run"
    workdir.mkdir()
    for name in (".write_test", ".write_test-x"):
        os.symlink(outside, workdir / name)
    rundir.check_writable(str(workdir))
    assert outside.read_text() == "precious"
    assert sorted(os.listdir(workdir)) == [".write_test", ".write_test-x"]


@pytest.mark.parametrize("folder", [rundir.CHECKPOINTS_DIR, rundir.TENSORBOARD_DIR])
def test_a_run_folder_that_is_a_file_is_refused(tmp_path, folder):
    (tmp_path / folder).write_text("not a folder")
    with pytest.raises(UserError, match=f"{folder} is not a directory"):
        rundir.check_writable(str(tmp_path))


def test_exclusive_keeps_a_second_holder_out(tmp_path):
    with rundir.exclusive(str(tmp_path), "training run"):
        with pytest.raises(UserError, match="is in use by another training run"):
            with rundir.exclusive(str(tmp_path), "training run"):
                pass
    with rundir.exclusive(str(tmp_path), "training run"):
        pass
