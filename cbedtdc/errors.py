"""The project's own error types: what a user can fix (a file, a sample, a setting), as opposed to a bug.

Every error the library raises on bad input, config, data, features, heads or checkpoints derives from
:class:`CbedtdcError`; its message names the file, sample or key and what to do. The thin CLIs
(:func:`cbedtdc.cliutil.run_cli`) print such an error as one line and exit 2; anything else, a programming error
included, keeps its traceback. :class:`InputError` is also a ``ValueError``, so callers that catch ``ValueError``
still catch it.
"""

from __future__ import annotations

__all__ = ["CbedtdcError", "InputError", "MissingKeysError"]


class CbedtdcError(Exception):
    """An error the user can fix; the message says what failed and what to do."""


class InputError(CbedtdcError, ValueError):
    """A bad value, file content or argument (a ``ValueError``)."""


class MissingKeysError(CbedtdcError, KeyError):
    """Samples asked for by key that a split or file does not hold (a ``KeyError``)."""

    def __str__(self) -> str:  # KeyError quotes its message; this one is a sentence
        return str(self.args[0]) if self.args else ""
