"""The error types that reach users as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (flags, source specs, files, checkpoints).

    The message is one line that says what is wrong and how to fix it; entry points print it
    and exit with status 2.
    """


class TrainingDiverged(Exception):
    """A loss or weight became NaN or infinite; no checkpoint is written after it.

    Not the input's fault, so entry points exit with their own status (3), letting a scheduler
    retry with other settings instead of treating the run as misconfigured.
    """
