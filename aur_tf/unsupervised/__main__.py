"""Score a run's checkpoints from mixtures alone: `python -m aur_tf.unsupervised --workdir=W`.

Prints one line per checkpoint and writes W/unsupervised_scores.json (see
`aur_tf.unsupervised.runs`). Reads the run's validation mixtures, never its clean sources. Bad
input ends with one line on stderr and exit status 2.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from aur_tf import cli  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402
from aur_tf.unsupervised import runs, scores  # noqa: E402

flags.DEFINE_string("workdir", None, "Workdir of a training run.")
flags.DEFINE_integer("mixtures", 1000, "Validation mixtures to score on.", lower_bound=4)
flags.DEFINE_integer(
    "judge_steps",
    scores.JudgeSettings.steps,
    "Training steps of the fresh judge discriminator.",
    lower_bound=1,
)
flags.DEFINE_bool("latest_only", False, "Score the newest checkpoint only, not every one.")
flags.mark_flag_as_required("workdir")


def main(argv):
    del argv
    cli.configure_logging()
    try:
        record = runs.score_run(
            flags.FLAGS.workdir,
            flags.FLAGS.mixtures,
            scores.JudgeSettings(steps=flags.FLAGS.judge_steps),
            flags.FLAGS.latest_only,
        )
    except UserError as e:
        cli.fail(e)
    print(
        f"{len(record['checkpoints'])} checkpoints scored; results in "
        f"{os.path.join(flags.FLAGS.workdir, runs.SCORES_FILE)}"
    )


def run():
    """The console script's entry point."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
