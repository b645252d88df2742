"""bench/class_assignment.py: the class-pair table, its argument checks, a run end to end."""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from cli_helpers import ROOT

from aur_tf import train_lib
from aur_tf.config import Config
from aur_tf.data.mixtures import MixtureSplit
from aur_tf.errors import UserError

SCRIPT = os.path.join(ROOT, "bench", "class_assignment.py")


def test_kept_by_label_pair_counts_only_the_pairs_that_occur(class_assignment):
    labels_a = np.array([0, 0, 0, 1, 1])
    labels_b = np.array([5, 5, 6, 5, 5])
    kept = np.array([True, False, True, True, True])
    assert class_assignment.kept_by_label_pair(kept, labels_a, labels_b) == {
        (0, 5): (2, 0.5),
        (0, 6): (1, 1.0),
        (1, 5): (2, 1.0),
    }


def test_format_table_leaves_missing_pairs_blank(class_assignment):
    text = class_assignment.format_table({(0, 5): (2, 0.5), (0, 6): (1, 1.0), (1, 5): (2, 1.0)})
    assert text.splitlines() == ["a \\ b      5     6", "    0    50%  100%", "    1   100%      "]


@pytest.mark.parametrize("unlabelled", ["a", "b"])
def test_a_source_without_labels_filter_is_a_user_error(class_assignment, unlabelled):
    config = Config(
        source_a="npz:a.npz" if unlabelled == "a" else "npz:a.npz?labels=0",
        source_b="npz:b.npz" if unlabelled == "b" else "npz:b.npz?labels=1",
    )
    labels = np.zeros(2, np.int64)
    split = MixtureSplit(
        *np.zeros((3, 2, 32, 32, 1), np.float32),
        labels_a=None if unlabelled == "a" else labels,
        labels_b=None if unlabelled == "b" else labels,
    )
    with pytest.raises(UserError, match=f"source 'npz:{unlabelled}.npz' has no \\?labels filter"):
        class_assignment.source_labels(split, config)


@pytest.mark.slow
def test_a_run_on_labelled_sources_gets_one_cell_per_class_pair(labelled_npz_config):
    config = labelled_npz_config(
        "0-1", "2-3", train_steps=2, eval_every=2, checkpoint_every=2, log_every=2
    )
    train_lib.train(config)
    result = subprocess.run(
        [sys.executable, SCRIPT, f"--workdir={config.workdir}"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert re.search(r"ckpt-2: 8 validation mixtures, .* dB PSNR", lines[0]), lines[0]
    assert lines[1].split() == ["a", "\\", "b", "2", "3"]
    assert [line.split()[0] for line in lines[2:]] == ["0", "1"]
    assert all(re.fullmatch(r"\d+%", cell) for line in lines[2:] for cell in line.split()[1:])
