"""Tabulate finished runs: `python -m aur_tf.report --runs='runs/glo_seed*,runs/rpca' --out=report`.

Writes OUT/results.md (Markdown table beside the paper's figures) and OUT/separations.png (a
Fig. 2-style comparison), and prints the table; `--readme=README.md` also puts both into the
README between its marker lines (`--readme_runs` picks the rows it shows). Bad input ends
with one line on stderr and exit status 2.
"""

from absl import app, flags

from aur_tf import cli
from aur_tf.errors import UserError
from aur_tf.report.results import write_report
from aur_tf.rundir import SAMPLE_COUNT

flags.DEFINE_list(
    "runs",
    None,
    "Run directories or glob patterns (quote them), comma-separated; each must hold an eval.json.",
)
flags.DEFINE_string("out", "report", "Directory for results.md and separations.png.")
flags.DEFINE_bool(
    "copy_runs",
    False,
    "Also copy each run's eval.json and samples.npz into "
    "OUT/runs/NAME (NAME: the workdir's last component), so that "
    "--runs='OUT/runs/*' regenerates the report without the workdirs.",
)
flags.DEFINE_string(
    "readme",
    None,
    "Also put the table and the figure into this Markdown file, "
    "between its two marker lines (see aur_tf.report.results.README_BEGIN and "
    "README_END), replacing what is there.",
)
flags.DEFINE_list(
    "readme_runs",
    None,
    "With --readme: the runs (table rows, by the names the table gives them) the README shows, "
    "comma-separated; default all. The README's tables then link the full report for the rest "
    "and for every run's settings.",
)
flags.DEFINE_integer(
    "figure_mixtures", 4, f"Test mixtures shown in the figure (1 to {SAMPLE_COUNT})."
)
flags.mark_flag_as_required("runs")
flags.register_validator(
    "figure_mixtures",
    lambda n: 1 <= n <= SAMPLE_COUNT,
    f"--figure_mixtures must be between 1 and {SAMPLE_COUNT}",
)


def main(argv):
    del argv
    cli.configure_logging()
    try:
        print(
            write_report(
                flags.FLAGS.runs,
                flags.FLAGS.out,
                flags.FLAGS.figure_mixtures,
                flags.FLAGS.copy_runs,
                flags.FLAGS.readme,
                flags.FLAGS.readme_runs,
            ),
            end="",
        )
    except UserError as e:
        cli.fail(e)


def run():
    """The console script's entry point."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
