"""bench/unsupervised_score.py: reading run records and the figures it reports."""

import json

import pytest


def _run(directory, half_mask, history, scores=None):
    """A run record: eval.json's history `[(step, psnr_db)]` or `[(step, psnr_db, remix
    consistency)]`, and unless None, unsupervised_scores.json's `{step: {name: value}}`."""
    directory.mkdir()
    (directory / "eval.json").write_text(
        json.dumps(
            {
                "config": {"source_a": "a", "source_b": "b"},
                "half_mask_psnr_db": half_mask,
                "history": [
                    dict(zip(("step", "psnr_db", "remix_consistency_db"), entry))
                    for entry in history
                ],
            }
        )
    )
    if scores is not None:
        (directory / "unsupervised_scores.json").write_text(
            json.dumps(
                {"checkpoints": [{"step": step, **values} for step, values in scores.items()]}
            )
        )
    return directory


def _scores(consistency, judge):
    return {
        "remix_consistency_db": consistency,
        "judge_auc": judge,
        "energy_share": 0.5,
        "mask_confidence": 0.9,
    }


def test_points_join_history_and_scores_by_step(tmp_path, unsupervised_score):
    run = _run(
        tmp_path / "run",
        16.0,
        [(1, 12.0), (2, 20.0), (3, 21.0)],
        {2: _scores(20.0, 0.6), 3: _scores(25.0, 0.55)},
    )
    dataset, half_mask, points = unsupervised_score.load_points(str(run))
    assert dataset == "a vs b" and half_mask == 16.0
    assert [(step, psnr) for step, psnr, _ in points] == [(2, 20.0), (3, 21.0)]
    assert unsupervised_score.load_points(str(tmp_path)) is None


def test_summary_orients_each_score_and_picks_checkpoints(tmp_path, unsupervised_score):
    history = [(1, 12.0), (2, 18.0), (3, 22.0), (4, 21.0)]
    # Consistency follows PSNR except at step 4; the judge's AUC falls as PSNR rises.
    scores = {
        1: _scores(10.0, 0.9),
        2: _scores(15.0, 0.7),
        3: _scores(20.0, 0.55),
        4: _scores(30.0, 0.6),
    }
    run = unsupervised_score.load_points(str(_run(tmp_path / "run", 16.0, history, scores)))
    summary = unsupervised_score.summarize([run])["a vs b"]
    assert summary["judge_auc"]["spearman"] == pytest.approx(1.0)
    assert summary["judge_auc"]["loss_db"] == 0.0
    assert summary["remix_consistency_db"]["spearman"] == pytest.approx(0.8)
    assert summary["remix_consistency_db"]["loss_db"] == pytest.approx(1.0)  # picks step 4
    # Separated: at least 19 dB (the half mask + 3); steps 3 and 4.
    assert summary["judge_auc"]["auc"] == 1.0
    assert summary["remix_consistency_db"]["auc"] == 1.0
    assert summary["judge_auc"]["points"] == 4 and summary["judge_auc"]["runs"] == 1


def test_the_histories_remix_consistency_counts_where_no_checkpoint_was_scored(
    tmp_path, unsupervised_score
):
    trained = _run(tmp_path / "trained", 16.0, [(1, 12.0, 17.0), (2, 20.0, 19.0)])
    rescored = _run(
        tmp_path / "rescored",
        16.0,
        [(1, 12.0, 17.0), (2, 20.0, 19.0)],
        {2: _scores(25.0, 0.55)},
    )
    _, _, points = unsupervised_score.load_points(str(trained))
    assert [scores for _, _, scores in points] == [
        {"remix_consistency_db": 17.0},
        {"remix_consistency_db": 19.0},
    ]
    _, _, points = unsupervised_score.load_points(str(rescored))
    assert points[0][2] == {"remix_consistency_db": 17.0}
    assert points[1][2] == _scores(25.0, 0.55)
    summary = unsupervised_score.summarize(
        [unsupervised_score.load_points(str(run)) for run in (trained, rescored)]
    )["a vs b"]
    assert summary["remix_consistency_db"]["points"] == 4
    assert summary["remix_consistency_db"]["runs"] == 2
    assert summary["judge_auc"]["points"] == 1 and summary["judge_auc"]["runs"] == 1


def test_the_combination_penalises_consistent_remixes_the_judge_tells_apart(
    tmp_path, unsupervised_score
):
    # Step 2 is consistent but wrong: the highest remix consistency, and a judge far from chance.
    history = [(1, 12.0), (2, 13.0), (3, 22.0)]
    scores = {1: _scores(17.0, 0.8), 2: _scores(23.0, 0.85), 3: _scores(21.0, 0.52)}
    run = unsupervised_score.load_points(str(_run(tmp_path / "run", 16.0, history, scores)))
    summary = unsupervised_score.summarize([run])["a vs b"]
    assert summary["remix_consistency_db"]["loss_db"] == pytest.approx(9.0)
    assert summary["remix_minus_judge"]["loss_db"] == 0.0
    assert summary["remix_minus_judge"]["spearman"] == pytest.approx(1.0)
