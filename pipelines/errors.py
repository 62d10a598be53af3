"""Mistakes in the user's input. `aver` prints these as one line without a traceback (`--debug` shows it); any
other exception is a bug or an infrastructure fault and keeps its traceback. Each kind also derives from the
built-in exception it replaces, so callers catching KeyError/ValueError/FileNotFoundError keep working."""
from __future__ import annotations


class UserError(Exception):
    """Something the user can fix: an unknown name, bad params, a missing file."""

    def __str__(self) -> str:       # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownName(UserError, KeyError):
    """A feature set, corpus, extractor or adapter name that params.yaml or the registries do not know."""


class BadParams(UserError, ValueError):
    """A params.yaml entry or command option with a wrong key or value."""


class MissingFile(UserError, FileNotFoundError):
    """A file or folder the user named that does not exist."""
