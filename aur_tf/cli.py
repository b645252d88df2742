"""What the command-line entry points share: flags generated from settings, one-line errors.

Only entry modules (`main.py`, `python -m aur_tf.baselines`, `python -m aur_tf.report`,
`python -m export.onnx`, `python -m export.separate`) import
this; the library itself takes settings objects and never reads flags.
"""

import dataclasses
import logging
import os
import sys

from absl import flags
from absl import logging as absl_logging

from aur_tf import safe_io

USAGE_EXIT_CODE = 2
_FLAGFILE_PREFIXES = ("--flagfile=", "-flagfile=")
_DEFINE_BY_TYPE = {
    bool: flags.DEFINE_bool,
    int: flags.DEFINE_integer,
    float: flags.DEFINE_float,
    str: flags.DEFINE_string,
}


def define_flags(settings_type):
    """One flag per field of a settings dataclass whose fields come from `config.setting`."""
    for field in dataclasses.fields(settings_type):
        _DEFINE_BY_TYPE[type(field.default)](field.name, field.default, field.metadata["help"])


def settings_from_flags(settings_type):
    """The settings object built from the parsed flags that `define_flags` made for it."""
    return settings_type(
        **{field.name: flags.FLAGS[field.name].value for field in dataclasses.fields(settings_type)}
    )


def fail(message, code=USAGE_EXIT_CODE):
    """Ends the command with `error: <message>` on stderr: one printable line (`message` may
    quote file names with newlines or undecodable bytes), no traceback."""
    print(f"error: {safe_io.printable(message)}", file=sys.stderr)
    sys.exit(code)


def _flagfile_lines(path):
    """The lines of flagfile `path`, read only if it is a regular file of UTF-8 text.

    absl opens flagfiles with a plain `open`, which waits forever on a FIFO and reads a device
    such as /dev/zero without end, and decodes them as UTF-8 (a traceback on other bytes).
    """
    try:
        with safe_io.open_regular(path) as f:
            return f.read().decode("utf-8").splitlines()
    except safe_io.FileRefused as e:
        raise flags.Error(f"Unable to open flagfile {path}: it {e}") from None
    except UnicodeDecodeError as e:
        raise flags.Error(
            f"Unable to read flagfile {path}: not UTF-8 text ({e.reason} at byte {e.start})"
        ) from None
    except ValueError:  # a NUL character, which no path can hold
        raise flags.Error(
            f"Unable to open flagfile {path}: its name contains a NUL character"
        ) from None
    except OSError as e:
        raise flags.Error(f"Unable to open flagfile {path} ({e.strerror or e})") from None


def _check_flagfiles(args, seen=()):
    """Refuses (flags.Error) a --flagfile in `args` or nested in one that `_flagfile_lines`
    refuses, before absl reads them. absl's syntax: `--flagfile=PATH` or `--flagfile PATH` on the
    command line, `--flagfile=PATH` lines in files, one or two dashes, `~` expanded."""
    for index, arg in enumerate(args):
        if arg in ("--flagfile", "-flagfile") and index + 1 < len(args):
            path = args[index + 1]
        elif arg.startswith(_FLAGFILE_PREFIXES):
            path = arg.partition("=")[2].strip()
        else:
            continue
        path = os.path.expanduser(path)
        if path and path not in seen:  # absl skips empty and circular ones
            _check_flagfiles(_flagfile_lines(path), (*seen, path))


def parse_flags_and_inputs(argv):
    """absl parsing where a bad flag is one line and exit status 2 instead of a usage dump.

    Returns:
      The positional arguments after the program name (a command's INPUT files, say).
    """
    try:
        _check_flagfiles(argv[1:])
        return flags.FLAGS(argv)[1:]
    # UnicodeError: absl decodes flagfiles in the locale's encoding, which may not be UTF-8.
    except (flags.Error, UnicodeError) as e:
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
