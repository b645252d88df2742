"""Score a run's checkpoints, or a baseline, from mixtures alone:
`python -m aur_tf.unsupervised --workdir=W`.

W is the workdir of a training run (`python main.py`) or of a baseline (`python -m
aur_tf.baselines`, recognised by the `method` in its eval.json). For a run it prints one line per
checkpoint not scored yet, and one for its selected net (the average or pick that export takes)
unless that is scored already; for a baseline it recomputes the one entry of its separation
(identity, half_mask and rpca, from the data settings and method settings in its eval.json) unless
the baseline wrote it when it ran: a glo baseline cannot be recomputed (its trained generators are
not saved) and must be run again. Either way it writes W/unsupervised_scores.json (see
`aur_tf.unsupervised.runs`). Reads the validation mixtures, never their clean sources. Bad input
ends with one line on stderr and exit status 2.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from aur_tf import cli  # noqa: E402
from aur_tf.config import MIN_SCORED_MIXTURES  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402
from aur_tf.unsupervised import runs, scores  # noqa: E402

flags.DEFINE_string(
    "workdir",
    None,
    "Workdir of a training run, or of a baseline (python -m aur_tf.baselines; glo only if it "
    "was scored when it ran).",
)
flags.DEFINE_integer(
    "mixtures", runs.MIXTURES, "Validation mixtures to score on.", lower_bound=MIN_SCORED_MIXTURES
)
flags.DEFINE_integer(
    "judge_steps",
    scores.JudgeSettings.steps,
    "Training steps of the fresh judge discriminator.",
    lower_bound=1,
)
flags.DEFINE_bool(
    "latest_only", False, "Score the newest checkpoint only, not every one (runs only)."
)
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    cli.configure_logging()
    workdir = flags.FLAGS.workdir
    try:
        baseline = runs.baseline_record(workdir)
        record = runs.score_run(
            workdir,
            flags.FLAGS.mixtures,
            scores.JudgeSettings(steps=flags.FLAGS.judge_steps),
            flags.FLAGS.latest_only,
        )
    except UserError as e:
        cli.fail(e)
    scored = (
        f"the {baseline['method']} baseline scored"
        if baseline
        else f"{len(record['checkpoints'])} checkpoints"
        + (" and the selected net" if "selected" in record else "")
        + " scored"
    )
    print(f"{scored}; results in {os.path.join(workdir, runs.SCORES_FILE)}")


def run():
    """The console script's entry point."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
