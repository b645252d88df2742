"""What the command-line entry points share: flags generated from settings, one-line errors.

Only entry modules (`main.py`, `python -m aur_tf.baselines`, `python -m aur_tf.report`,
`python -m export.onnx`, `python -m export.separate`) import
this; the library itself takes settings objects and never reads flags.
"""
import dataclasses
import logging
import sys

from absl import flags
from absl import logging as absl_logging

USAGE_EXIT_CODE = 2
_DEFINE_BY_TYPE = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
                   str: flags.DEFINE_string}


def define_flags(settings_type):
    """One flag per field of a settings dataclass whose fields come from `config.setting`."""
    for field in dataclasses.fields(settings_type):
        _DEFINE_BY_TYPE[type(field.default)](field.name, field.default, field.metadata["help"])


def settings_from_flags(settings_type):
    """The settings object built from the parsed flags that `define_flags` made for it."""
    return settings_type(**{field.name: flags.FLAGS[field.name].value
                            for field in dataclasses.fields(settings_type)})


def fail(message, code=USAGE_EXIT_CODE):
    """Ends the command with `error: <message>` on stderr: one line, no traceback."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_flags_and_inputs(argv):
    """absl parsing where a bad flag is one line and exit status 2 instead of a usage dump.

    Returns:
      The positional arguments after the program name (a command's INPUT files, say).
    """
    try:
        return flags.FLAGS(argv)[1:]
    except flags.Error as e:
        fail(f"{e}; see --helpfull for every flag")


def parse_flags(argv):
    """`parse_flags_and_inputs` for commands that take flags only; returns `[program]`."""
    inputs = parse_flags_and_inputs(argv)
    if inputs:
        fail(f"unexpected arguments {inputs}: every setting is a --flag=value")
    return argv[:1]


def configure_logging():
    """aur_tf's progress lines on stdout; TensorFlow's and tf2onnx's INFO lines hidden."""
    absl_logging.set_verbosity(absl_logging.WARNING)
    logger = logging.getLogger("aur_tf")
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
