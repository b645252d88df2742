"""Run a baseline on the data of a training config.

  python -m aur_tf.baselines --flagfile=configs/mnist.cfg --method=rpca --workdir=runs/rpca

The data flags are main.py's (every `Config` field, so its flagfiles work; those that only concern
the mask net are ignored), plus `--method` and the `--rpca_*` / `--glo_*` settings. Later flags
override a flagfile's, so `--workdir` goes after it. Results go to WORKDIR/eval.json and
WORKDIR/samples.npz. Bad input ends the run with one line on stderr and exit status 2.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from aur_tf import cli  # noqa: E402
from aur_tf.baselines import METHODS, runner  # noqa: E402
from aur_tf.baselines.glo import GloSettings  # noqa: E402
from aur_tf.baselines.rpca import RpcaSettings  # noqa: E402
from aur_tf.config import Config  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402

flags.DEFINE_enum(
    "method",
    None,
    METHODS,
    "Baseline to run: identity (M = 1), half_mask "
    "(M = 1/2), rpca (robust PCA per mixture) or glo (two generators, learned "
    "codes).",
)
flags.mark_flag_as_required("method")
for _settings_type in (Config, RpcaSettings, GloSettings):
    cli.define_flags(_settings_type)


def main(argv):
    del argv
    cli.configure_logging()
    try:
        settings = [cli.settings_from_flags(t) for t in (Config, RpcaSettings, GloSettings)]
        results = runner.run_baseline(flags.FLAGS.method, *settings)
    except UserError as e:
        cli.fail(e)
    print(
        f"done: {results['method']}, {results['psnr_db']:.2f} dB PSNR, {results['ssim']:.3f} "
        f"SSIM (half mask {results['half_mask_psnr_db']:.2f} dB, "
        f"{results['half_mask_ssim']:.3f}); results in "
        f"{os.path.join(settings[0].workdir, 'eval.json')}"
    )


def run():
    """The console script's entry point."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
