"""How well each unsupervised score tells good checkpoints from bad ones, from run records.

  python bench/unsupervised_score.py --runs='runs/mnist_fast_seed*,runs/fashion_seed*'

For every run (a workdir, or a copied record, holding `eval.json` with its history), each
evaluation that has a validation PSNR and unsupervised scores is one point: the remix consistency
that training records in every history entry, and the scores of `unsupervised_scores.json` from
`python -m aur_tf.unsupervised` where that was run (it replaces the history's remix consistency
for the checkpoints it scored). A baseline (`python -m aur_tf.baselines`: an eval.json with no
history) is one point, its eval.json `step` and validation `psnr_db` with the scores of its
`unsupervised_scores.json`. The candidates are those scores and `remix_minus_judge`, the
remix consistency less `scores.JUDGE_PENALTY_DB` per unit of judge AUC above chance
(`scores.remix_minus_judge_db`, what seed trials rank by): a mask that is consistent but wrong
(remixes the judge tells from mixtures) scores high on remix consistency alone.

A collapsed point, whose energy_share puts nearly everything in one output
(`aur_tf.evaluation.is_collapsed`, the rule training reports collapse by), ranks below every
point that has not collapsed, for every candidate; collapsed points rank among themselves by the
candidate. The identity baseline is why: its remixes are the mixtures themselves, so its remix
consistency is at the 100 dB ceiling and the judge is at chance, a trivially "perfect" score
that the method rules out by energy (its energy term), not by these scores. Points without an
energy_share (history-only ones) count as not collapsed.

Per dataset (the pair of sources) and candidate, over the points that have it, it prints:
  spearman   rank correlation with the validation PSNR over every point (sign: higher is better
             for the score's direction);
  auc        ROC AUC of the score separating "separated" points (validation PSNR at least
             SEPARATED_MARGIN_DB above the run's half mask) from the others;
  loss_db    per run, the validation PSNR of the best checkpoint minus that of the checkpoint the
             score picks, averaged over the runs that have more than one point (a baseline's
             single point leaves nothing to choose, and would pull the average toward 0);
  select_db  the same for the pick among the evaluations `--select=unsupervised` may pick, from
             half of the run's train_steps on (`callbacks.selectable_from`): the early phase's
             scores, high for untrained masks, take no part.
The runs and points counted include the baselines. The clean sources were used only to compute
the validation PSNR in eval.json, never the scores.
"""

import argparse
import glob
import json
import os
import sys

import numpy as np

from aur_tf.callbacks import selectable_from
from aur_tf.evaluation import is_collapsed
from aur_tf.unsupervised import runs as score_runs
from aur_tf.unsupervised.scores import remix_minus_judge_db, roc_auc, spearman

SEPARATED_MARGIN_DB = 3.0
# The scores read from run records, each oriented so that higher means better separated.
DIRECTIONS = {
    "remix_consistency_db": lambda value: value,
    "judge_auc": lambda value: -value,
    "energy_share": lambda value: -abs(value - 0.5),
    "mask_confidence": lambda value: value,
}
# Candidates computed from those scores: (the scores they need, the oriented value).
COMBINATIONS = {
    "remix_minus_judge": (
        ("remix_consistency_db", "judge_auc"),
        lambda scores: remix_minus_judge_db(scores["remix_consistency_db"], scores["judge_auc"]),
    ),
}


def _candidates():
    """`{name: (needed scores, oriented value of a point's scores)}` of every candidate."""
    single = {
        name: ((name,), lambda scores, name=name, orient=orient: orient(scores[name]))
        for name, orient in DIRECTIONS.items()
    }
    return {**single, **COMBINATIONS}


def load_points(workdir):
    """`(dataset, half_mask_psnr_db, [(step, psnr_db, {score: value})], selectable_from_step)` of
    one run or baseline, or None when it has no eval.json or none of its evaluations has an
    unsupervised score. A record without train_steps (a baseline) may be picked from step 0."""
    if not os.path.isfile(os.path.join(workdir, "eval.json")):
        return None
    with open(os.path.join(workdir, "eval.json")) as f:
        record = json.load(f)
    scores_path = os.path.join(workdir, score_runs.SCORES_FILE)
    scored = {}
    if os.path.isfile(scores_path):
        with open(scores_path) as f:
            scored = {entry["step"]: entry for entry in json.load(f)["checkpoints"]}
    # A baseline has no history: its one evaluation is the record's top level.
    history = record.get("history") or [{"step": record["step"], "psnr_db": record["psnr_db"]}]
    points = []
    for entry in history:
        scores = {name: entry[name] for name in DIRECTIONS if name in entry}
        scores.update(
            {
                name: value
                for name, value in scored.get(entry["step"], {}).items()
                if name in DIRECTIONS
            }
        )
        if any(name in scores for name in DIRECTIONS):
            points.append((entry["step"], entry["psnr_db"], scores))
    if not points:
        return None
    config = record["config"]
    return (
        f"{config['source_a']} vs {config['source_b']}",
        record["half_mask_psnr_db"],
        points,
        selectable_from(config.get("train_steps", 0)),
    )


def collapsed(scores):
    """Whether a point's scores mark a collapse: an energy_share outside the band training
    accepts (`is_collapsed`); False without one."""
    return "energy_share" in scores and is_collapsed(scores["energy_share"])


def _ranked(keys):
    """Ranks 1..n of `(not collapsed, oriented value)` keys, equal keys sharing one rank: every
    collapsed point below every other, each group in the candidate's order. Spearman's rho and
    the ROC AUC depend on the order alone, so these ranks stand in for the oriented values."""
    ordered = sorted(set(keys))
    rank = {key: position + 1 for position, key in enumerate(ordered)}
    return [float(rank[key]) for key in keys]


def summarize(runs):
    """`{dataset: {score: {"spearman", "auc", "loss_db", "select_db", "points", "runs"}}}` over
    `runs`, a list of `load_points` results; a score appears where some run has it, over the
    points that do. Collapsed points (`collapsed`) rank below all others for every score."""
    by_dataset = {}
    for dataset, half_mask, points, start in runs:
        by_dataset.setdefault(dataset, []).append((half_mask, points, start))
    summary = {}
    for dataset, members in by_dataset.items():
        summary[dataset] = {}
        for name, (needed, orient) in _candidates().items():
            keys, psnrs, separated, losses, select_losses, runs_counted = [], [], [], [], [], 0
            for half_mask, points, start in members:
                points = [point for point in points if all(k in point[2] for k in needed)]
                if not points:
                    continue
                run_keys = [(not collapsed(scores), orient(scores)) for _, _, scores in points]
                run_psnrs = [psnr for _, psnr, _ in points]
                keys += run_keys
                psnrs += run_psnrs
                separated += [psnr >= half_mask + SEPARATED_MARGIN_DB for psnr in run_psnrs]
                runs_counted += 1
                if len(points) > 1:
                    # The run's pick: its first point of the highest key.
                    pick = max(range(len(run_keys)), key=run_keys.__getitem__)
                    losses.append(max(run_psnrs) - run_psnrs[pick])
                    selectable = [i for i, point in enumerate(points) if point[0] >= start]
                    if selectable:
                        pick = max(selectable, key=run_keys.__getitem__)
                        select_losses.append(max(run_psnrs) - run_psnrs[pick])
            if not keys:
                continue
            separated = np.array(separated)
            values = np.array(_ranked(keys))
            auc = (
                roc_auc(values[separated], values[~separated])
                if separated.any() and (~separated).any()
                else float("nan")
            )
            summary[dataset][name] = {
                "spearman": spearman(values, psnrs),
                "auc": auc,
                "loss_db": float(np.mean(losses)) if losses else float("nan"),
                "select_db": float(np.mean(select_losses)) if select_losses else float("nan"),
                "points": len(values),
                "runs": runs_counted,
            }
    return summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--runs", required=True, help="comma-separated run directories or glob patterns (quoted)"
    )
    patterns = parser.parse_args().runs.split(",")
    workdirs = sorted({path for pattern in patterns for path in glob.glob(pattern)})
    loaded = [points for points in map(load_points, workdirs) if points]
    if not loaded:
        print(f"error: no run with unsupervised scores matches {patterns}", file=sys.stderr)
        sys.exit(2)
    for dataset, by_score in summarize(loaded).items():
        print(dataset)
        print(
            f"  {'score':<22}{'runs':>5}{'points':>7}{'spearman':>9}{'auc':>8}{'loss_db':>9}"
            f"{'select_db':>10}"
        )
        for name, figures in by_score.items():
            print(
                f"  {name:<22}{figures['runs']:>5}{figures['points']:>7}"
                f"{figures['spearman']:>9.3f}{figures['auc']:>8.3f}{figures['loss_db']:>9.2f}"
                f"{figures['select_db']:>10.2f}"
            )


if __name__ == "__main__":
    main()
