"""The error a user can act on, and how a command reports it: one line on
stderr and an exit status (2 bad input, 3 a failed run, 4 an unwritable file,
75 a preempted run)."""

from __future__ import annotations

import sys


class UserError(Exception):
    """A problem with what the user asked for. Entry points print its message
    alone (no traceback) and exit with status 2."""


class OutputError(UserError):
    """A file could not be written (no space, no permission); the previous
    file, if any, is kept. Exit status 4."""

    exit_code = 4


def write_failed(path, error: OSError) -> OutputError:
    why = error.strerror or str(error)
    return OutputError(f"could not write {path}: {why}; the previous file, if any, is kept as it was")


def run_main(main, argv=None):
    """Calls ``main(argv)``; a :class:`UserError` becomes one line on stderr and
    its ``exit_code`` (2 for bad input, 3 for a failed run)."""
    try:
        main(argv)
    except UserError as error:
        message = " ".join(line.strip() for line in str(error).splitlines() if line.strip())  # one line, always
        print(f"error: {message}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))
    sys.exit(0)
