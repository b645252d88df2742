"""Train a source-separation mask net from mixtures alone.

  python main.py --flagfile=configs/mnist.cfg

Every flag is a field of `aur_tf.config.Config` (see `--helpfull`). Bad input ends the run with one
line on stderr and exit status 2; a run whose losses or weights become non-finite ends with one
line and exit status 3.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app  # noqa: E402

from aur_tf import cli, memory  # noqa: E402
from aur_tf.config import Config  # noqa: E402
from aur_tf.errors import TrainingDiverged, UserError  # noqa: E402
from aur_tf.safe_io import printable  # noqa: E402

cli.define_flags(Config)
# The shell's status for a run ended by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130
# Apart from bad input's 2: the settings were valid, the optimisation failed.
DIVERGED_EXIT_CODE = 3


def main(argv):
    del argv
    cli.configure_logging()
    try:
        config = cli.settings_from_flags(Config)
        # Before TensorFlow allocates anything: settings that cannot fit are refused in one line.
        memory.check_training(config)
        # TensorFlow loads only once the flags are known to be good.
        if config.trials > 1:
            from aur_tf import trials

            results = trials.train_with_trials(config)
        else:
            from aur_tf import train_lib

            results = train_lib.train(config)
    except UserError as e:
        cli.fail(e)
    except TrainingDiverged as e:
        cli.fail(e, code=DIVERGED_EXIT_CODE)
    except KeyboardInterrupt:
        print(
            "interrupted: run the same command to resume from the last checkpoint", file=sys.stderr
        )
        sys.exit(INTERRUPTED_EXIT_CODE)
    test = results["test"]
    print(
        f"done: step {results['step']}, validation {results['psnr_db']:.2f} dB PSNR, "
        f"{results['ssim']:.3f} SSIM; test {test['psnr_db']:.2f} dB, {test['ssim']:.3f} "
        f"(half mask {test['half_mask_psnr_db']:.2f} dB, {test['half_mask_ssim']:.3f}); "
        f"results in {printable(os.path.join(config.workdir, 'eval.json'))}"
    )


def run():
    """The console script's entry point."""
    app.run(main, flags_parser=cli.parse_flags)


if __name__ == "__main__":
    run()
