"""Errors a person can act on: the command line prints each as one line and exits with its code."""

from __future__ import annotations


class UserError(Exception):
    """A failure its message explains: the file, line, setting or service, and what to do."""

    exit_code = 1


class InputError(UserError, ValueError):
    """An argument, a file or a setting given to the command is wrong (exit code 2)."""

    exit_code = 2


class ServiceUnavailable(UserError):
    """A service did not answer within its bound (exit code 3): start it or fix its address."""

    exit_code = 3
