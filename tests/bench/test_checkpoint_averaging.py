"""bench/checkpoint_averaging.py: averages scored on validation, and their table."""

import numpy as np

from aur_tf import averaging, evaluation, rundir, train_lib
from aur_tf.data.mixtures import load_mixture_dataset


def test_each_count_scores_the_average_of_that_many_newest_checkpoints(
    checkpoint_averaging, labelled_npz_config
):
    config = labelled_npz_config(
        "0-4", "5-9", train_steps=4, eval_every=4, checkpoint_every=1, keep_checkpoints=4
    )
    train_lib.train(config)
    scores = checkpoint_averaging.averaged_scores(config.workdir, [1, 3])
    validation = load_mixture_dataset(config).validation
    newest, _ = rundir.restore_mask_net(config.workdir, config)
    assert scores[1][0] == evaluation.evaluate(newest, validation)["psnr_db"]
    three, steps = averaging.average_mask_net(config.workdir, config, 3)
    assert steps == [2, 3, 4]
    expected = evaluation.evaluate(three, validation)
    np.testing.assert_allclose(scores[3], (expected["psnr_db"], expected["ssim"]))
    assert scores[3] != scores[1]


def test_the_table_has_a_row_per_run_and_their_mean(checkpoint_averaging):
    text = checkpoint_averaging.format_table(
        {"runs/a": {1: (20.0, 0.8), 8: (21.0, 0.9)}, "runs/b": {1: (22.0, 0.9), 8: (23.0, 0.7)}},
        [1, 8],
    )
    lines = text.splitlines()
    assert lines[0].split() == ["run", "N=1", "N=8"]
    assert lines[1].split() == ["runs/a", "20.000", "0.800", "21.000", "0.900"]
    assert lines[2].split() == ["runs/b", "22.000", "0.900", "23.000", "0.700"]
    assert lines[3].split() == ["mean", "of", "2", "runs", "21.000", "0.850", "22.000", "0.800"]
