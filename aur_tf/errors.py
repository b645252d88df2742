"""The one error type that reaches users as a single line instead of a traceback."""


class UserError(Exception):
    """Bad input from the user (flags, source specs, files, checkpoints).

    The message is one line that says what is wrong and how to fix it; entry points print it
    and exit with status 2.
    """
