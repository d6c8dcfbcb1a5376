"""Errors that carry a message meant for a person, never a traceback."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (a file, a flag, a folder): the message says what is wrong and what to do."""
