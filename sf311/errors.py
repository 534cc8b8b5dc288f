"""Errors a person can act on: the command line prints each as one line and exits with its code."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """Return the first line of err's message, or its type's name when it has none: for logs."""
    return (str(err).strip() or type(err).__name__).splitlines()[0]


class UserError(Exception):
    """A failure its message explains: the file, line, setting or service, and what to do."""

    exit_code = 1


class InputError(UserError, ValueError):
    """An argument, a file or a setting given to the command is wrong (exit code 2)."""

    exit_code = 2


class ServiceUnavailable(UserError):
    """A service did not answer within its bound (exit code 3): start it or fix its address."""

    exit_code = 3
