"""bench/unsupervised_score.py: reading run records and the figures it reports."""

import json

import pytest


def _run(directory, half_mask, history, scores=None, train_steps=None):
    """A run record: eval.json's history `[(step, psnr_db)]` or `[(step, psnr_db, remix
    consistency)]`, unless None its config's train_steps, and unless None,
    unsupervised_scores.json's `{step: {name: value}}`."""
    directory.mkdir()
    config = {"source_a": "a", "source_b": "b"}
    if train_steps is not None:
        config["train_steps"] = train_steps
    (directory / "eval.json").write_text(
        json.dumps(
            {
                "config": config,
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
    dataset, half_mask, points, start = unsupervised_score.load_points(str(run))
    assert dataset == "a vs b" and half_mask == 16.0 and start == 0
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
    _, _, points, _ = unsupervised_score.load_points(str(trained))
    assert [scores for _, _, scores in points] == [
        {"remix_consistency_db": 17.0},
        {"remix_consistency_db": 19.0},
    ]
    _, _, points, _ = unsupervised_score.load_points(str(rescored))
    assert points[0][2] == {"remix_consistency_db": 17.0}
    assert points[1][2] == _scores(25.0, 0.55)
    summary = unsupervised_score.summarize(
        [unsupervised_score.load_points(str(run)) for run in (trained, rescored)]
    )["a vs b"]
    assert summary["remix_consistency_db"]["points"] == 4
    assert summary["remix_consistency_db"]["runs"] == 2
    assert summary["judge_auc"]["points"] == 1 and summary["judge_auc"]["runs"] == 1


def test_select_db_picks_from_half_of_train_steps_on(tmp_path, unsupervised_score):
    """The untrained net of step 1 has the highest remix consistency: picked by the score alone
    it loses 10 dB, but `--select=unsupervised` may pick only from step 2 (half of 4) on."""
    history = [(1, 12.0, 21.0), (2, 18.0, 17.0), (3, 22.0, 20.0), (4, 21.5, 19.0)]
    run = unsupervised_score.load_points(str(_run(tmp_path / "run", 16.0, history, None, 4)))
    assert run[3] == 2
    summary = unsupervised_score.summarize([run])["a vs b"]["remix_consistency_db"]
    assert summary["loss_db"] == pytest.approx(10.0)
    assert summary["select_db"] == pytest.approx(0.0)


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


def _baseline(directory, psnr, scores=None):
    """A baseline's record: no history, its validation PSNR at the top level, step 0, and
    unless None, its unsupervised_scores.json entry."""
    directory.mkdir()
    (directory / "eval.json").write_text(
        json.dumps(
            {
                "config": {"source_a": "a", "source_b": "b"},
                "half_mask_psnr_db": 16.0,
                "method": "identity",
                "psnr_db": psnr,
                "step": 0,
            }
        )
    )
    if scores is not None:
        (directory / "unsupervised_scores.json").write_text(
            json.dumps({"checkpoints": [{"step": 0, **scores}]})
        )
    return directory


def test_a_baseline_is_one_point_at_its_validation_psnr(tmp_path, unsupervised_score):
    identity = _scores(100.0, 0.5)
    run = _baseline(tmp_path / "identity", 11.0, dict(identity, energy_share=1.0))
    dataset, half_mask, points, start = unsupervised_score.load_points(str(run))
    assert (dataset, half_mask, start) == ("a vs b", 16.0, 0)
    assert points == [(0, 11.0, dict(identity, energy_share=1.0))]
    assert unsupervised_score.load_points(str(_baseline(tmp_path / "unscored", 11.0))) is None


def test_a_collapsed_point_ranks_below_every_other_for_every_score(unsupervised_score):
    """Identity's trivially "perfect" remix consistency and judge, and a run's collapsed
    checkpoint, rank below the others: every score then orders these points as the PSNR does
    (without the rule, remix consistency would pick the collapsed checkpoint, 11 dB lost)."""
    collapsed = dict(_scores(100.0, 0.5), energy_share=1.0, mask_confidence=1.0)
    run = (
        "a vs b",
        16.0,
        [
            (1, 12.0, dict(_scores(15.0, 0.7), energy_share=0.45, mask_confidence=0.5)),
            (2, 10.0, dict(_scores(30.0, 0.52), energy_share=0.97, mask_confidence=0.95)),
            (3, 21.0, dict(_scores(25.0, 0.55), energy_share=0.55, mask_confidence=0.9)),
        ],
        0,
    )
    identity = ("a vs b", 16.0, [(0, 11.0, collapsed)], 0)
    summary = unsupervised_score.summarize([run, identity])["a vs b"]
    for name in ("remix_consistency_db", "judge_auc", "remix_minus_judge", "mask_confidence"):
        assert summary[name]["points"] == 4 and summary[name]["runs"] == 2, name
        assert summary[name]["spearman"] == pytest.approx(1.0), name
        assert summary[name]["loss_db"] == 0.0, name  # the run picks step 3, not step 2
        assert summary[name]["auc"] == 1.0, name
    losing = ("a vs b", 16.0, [(1, 20.0, _scores(25.0, 0.5)), (2, 21.0, _scores(24.0, 0.5))], 0)
    losses = unsupervised_score.summarize([losing, identity])["a vs b"]["remix_consistency_db"]
    assert losses["runs"] == 2
    assert losses["loss_db"] == pytest.approx(1.0)  # the baseline's single point does not count
    assert unsupervised_score.collapsed({"energy_share": 0.95})
    assert not unsupervised_score.collapsed({"energy_share": 0.94})
    assert not unsupervised_score.collapsed({"remix_consistency_db": 100.0})
