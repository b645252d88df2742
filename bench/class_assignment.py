"""Which output each class of a source goes to: `swapped_fraction` broken down by class pairs.

  python bench/class_assignment.py --workdir=runs/mnist

For a run whose two sources are label-filtered (e.g. `mnist?labels=0-4` and `mnist?labels=5-9`)
it separates the run's validation mixtures with its latest checkpoint and prints, for every pair
(label of source a, label of source b), the percentage of those mixtures whose source a comes out
where the evaluation's permutation puts it. A solved run shows ~100% everywhere. A run on the
plateau (docs/results.md) shows how it is undecided: a class near 50% against every partner goes
either way at random, one whose share flips between partners is assigned by the pair.
"""

import argparse
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from aur_tf import cli, evaluation, metrics  # noqa: E402
from aur_tf.data.mixtures import load_mixture_dataset  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402
from aur_tf.rundir import load_run, restore_mask_net  # noqa: E402


def kept_by_label_pair(kept, labels_a, labels_b):
    """`{(label_a, label_b): (mixtures, fraction kept)}` over the pairs that occur.

    Args:
      kept: `[N]` bool, whether each mixture's source a comes out where the set puts it.
      labels_a, labels_b: `[N]` integer labels of each mixture's two sources.
    """
    table = {}
    for pair in sorted(set(zip(labels_a.tolist(), labels_b.tolist()))):
        chosen = (labels_a == pair[0]) & (labels_b == pair[1])
        table[pair] = (int(chosen.sum()), float(kept[chosen].mean()))
    return table


def source_labels(split, config):
    """`(labels_a, labels_b)`, the `[N]` labels of a `MixtureSplit`'s two sources.

    Raises:
      UserError: a source of `config` has no labels filter, so its images have no labels.
    """
    for spec, labels in ((config.source_a, split.labels_a), (config.source_b, split.labels_b)):
        if labels is None:
            raise UserError(
                f"source {spec!r} has no ?labels filter: the classes of its images "
                "are unknown, so there is nothing to break down"
            )
    return split.labels_a, split.labels_b


def format_table(table):
    """The table of `kept_by_label_pair` as text: rows label a, columns label b, % kept."""
    rows = sorted({a for a, _ in table})
    columns = sorted({b for _, b in table})
    lines = ["a \\ b " + "".join(f"{b:>6}" for b in columns)]
    for a in rows:
        cells = "".join(
            f"{100 * table[a, b][1]:>5.0f}%" if (a, b) in table else f"{'':>6}" for b in columns
        )
        lines.append(f"{a:>5} {cells}")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--workdir",
        required=True,
        help="workdir of a training run whose --source_a and --source_b have ?labels filters",
    )
    workdir = parser.parse_args().workdir
    cli.configure_logging()
    try:
        config, _ = load_run(workdir)
        validation = load_mixture_dataset(config).validation
        labels_a, labels_b = source_labels(validation, config)
        mask_net, checkpoint = restore_mask_net(workdir, config)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    estimates = metrics.estimates_from_mask(
        validation.mixtures, evaluation.predict_masks(mask_net, validation.mixtures)
    )
    scores = metrics.score_separation(*estimates, validation.sources_a, validation.sources_b)
    kept = ~metrics.swapped_per_image(
        *estimates, validation.sources_a, validation.sources_b, scores.permutation
    )
    print(
        f"{checkpoint}: {len(kept)} validation mixtures, {scores.psnr_db:.2f} dB PSNR, "
        f"{100 * scores.swapped_fraction:.1f}% swapped; % of mixtures whose source a comes out "
        f"on output {scores.permutation[0]}, by label of source a (rows) and b (columns):"
    )
    print(format_table(kept_by_label_pair(kept, labels_a, labels_b)))


if __name__ == "__main__":
    main()
