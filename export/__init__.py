"""Deployment of trained runs: `python -m export.onnx` and `python -m export.separate`.

Both commands report bad input as one line `error: <message>` on stderr with exit status 2, like
`main.py`. Their absl flags are defined only when the command runs (`run()`), so both modules can
be imported together (e.g. by tests) without clashing flag names.
"""
import sys

from absl import flags

USAGE_EXIT_CODE = 2


def fail(message, code=USAGE_EXIT_CODE):
    """Prints `error: <message>` to stderr and exits with `code`."""
    print(f"error: {message}", file=sys.stderr)
    sys.exit(code)


def parse_flags(argv):
    """absl parsing where a bad flag is one line and exit status 2 instead of a usage dump.

    Returns:
      The positional arguments after the program name.
    """
    try:
        return flags.FLAGS(argv)[1:]
    except flags.Error as e:
        fail(f"{e}; see --helpfull for every flag")
