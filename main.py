"""Train a source-separation mask net from mixtures alone: `python main.py --flagfile=configs/mnist.cfg`.

Every flag is a field of `aur_tf.config.Config` (see `--helpfull`). Bad input ends the run with one
line on stderr and exit status 2.
"""
import logging
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from aur_tf.config import Config  # noqa: E402
from aur_tf.errors import UserError  # noqa: E402

_DEFINE_BY_TYPE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                   str: flags.DEFINE_string}
for _name, _default, _help in Config.fields():
    _DEFINE_BY_TYPE[type(_default)](_name, _default, _help)
FLAGS = flags.FLAGS
USAGE_EXIT_CODE = 2
# The shell's status for a run ended by Ctrl-C (128 + SIGINT).
INTERRUPTED_EXIT_CODE = 130


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    sys.exit(USAGE_EXIT_CODE)


def parse_flags(argv):
    """absl parsing, but a bad flag is one line and exit status 2 instead of a usage dump."""
    try:
        remaining = FLAGS(argv)
    except flags.Error as e:
        fail(f"{e}; see --helpfull for every flag")
    if len(remaining) > 1:
        fail(f"unexpected arguments {remaining[1:]}: every setting is a --flag=value")
    return remaining


def config_from_flags():
    return Config(**{name: FLAGS[name].value for name, _, _ in Config.fields()})


def configure_logging():
    logger = logging.getLogger("aur_tf")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


def main(argv):
    del argv
    configure_logging()
    try:
        config = config_from_flags()
        from aur_tf import train_lib  # TensorFlow loads only once the flags are known to be good.
        results = train_lib.train(config)
    except UserError as e:  # including train_lib.TrainingDiverged
        fail(e)
    except KeyboardInterrupt:
        print("interrupted: run the same command to resume from the last checkpoint",
              file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT_CODE)
    print(f"done: step {results['step']}, {results['psnr_db']:.2f} dB PSNR, {results['ssim']:.3f} SSIM "
          f"(half mask {results['half_mask_psnr_db']:.2f} dB, {results['half_mask_ssim']:.3f}); "
          f"results in {os.path.join(config.workdir, 'eval.json')}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
