"""Validation PSNR / SSIM of the mean of each run's newest N checkpoints, for several N.

  python bench/checkpoint_averaging.py --workdirs=runs/a,runs/b --counts=1,4,6,8,12,16,24

How `--average_checkpoints` is chosen (docs/results.md): each finished run's newest N checkpoints
are averaged as `aur_tf.averaging.average_mask_net` does at the end of training, and the average
is scored on the run's validation mixtures; the test mixtures are never scored. N = 1 is the
newest checkpoint alone. A run keeps only --keep_checkpoints checkpoints, so a larger N averages
what it kept. Prints a row per run and the mean over the runs for each N.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aur_tf import averaging, cli, evaluation  # noqa: E402
from aur_tf.data.mixtures import load_mixture_dataset  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402
from aur_tf.rundir import load_run  # noqa: E402


def averaged_scores(workdir, counts):
    """`{N: (psnr_db, ssim)}` on the run's validation mixtures of the mean of its newest N
    checkpoints, for each N in `counts`."""
    config, _ = load_run(workdir)
    validation = load_mixture_dataset(config).validation
    scores = {}
    for count in counts:
        mask_net, _ = averaging.average_mask_net(workdir, config, count)
        result = evaluation.evaluate(mask_net, validation)
        scores[count] = (result["psnr_db"], result["ssim"])
    return scores


def format_table(scores_by_run, counts):
    """Rows of `averaged_scores` per run (`{workdir: scores}`) and their mean, as text: PSNR dB /
    SSIM for each N."""
    header = "run".ljust(40) + "".join(f"{'N=' + str(n):>16}" for n in counts)
    lines = [header]
    rows = list(scores_by_run.items())
    if len(rows) > 1:
        mean = {n: tuple(sum(s[n][i] for _, s in rows) / len(rows) for i in (0, 1)) for n in counts}
        rows.append((f"mean of {len(rows)} runs", mean))
    for name, scores in rows:
        cells = "".join(f"{scores[n][0]:>9.3f} {scores[n][1]:.3f}" for n in counts)
        lines.append(name[-40:].ljust(40) + cells)
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdirs", required=True, help="comma-separated finished runs")
    parser.add_argument("--counts", default="1,4,6,8,12,16,24", help="comma-separated N >= 1")
    args = parser.parse_args()
    cli.configure_logging()
    try:
        counts = [int(n) for n in args.counts.split(",")]
    except ValueError:
        parser.error(f"--counts={args.counts} must be comma-separated integers")
    if min(counts) < 1:
        parser.error(f"--counts={args.counts} must all be at least 1")
    try:
        scores = {w: averaged_scores(w, counts) for w in args.workdirs.split(",")}
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    print("validation PSNR (dB) and SSIM of the mean of the newest N checkpoints")
    print(format_table(scores, counts))


if __name__ == "__main__":
    main()
