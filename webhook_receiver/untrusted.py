"""Untrusted text made safe for a log line or a terminal.

Ids, integration names, handler error texts and bodies come from outside.
Written raw, a carriage return or a line feed forges a log line, and an
escape sequence rewrites a terminal. :func:`printable` escapes every control
character (C0, DEL, C1), line or paragraph separator, bidirectional override
and unpaired surrogate the way Python writes them in a string literal; the
log filter of :func:`protect` does it to every argument of a log record of
the package but numbers (an exception's message included), and to the
traceback's text except its own line breaks.
"""

from __future__ import annotations

import logging
import numbers
import re
import traceback
from collections.abc import Mapping

__all__ = ["UNSAFE", "logger", "printable", "protect"]

# What UNSAFE holds past C0: DEL, C1, the separators, the bidirectional controls, the surrogates.
_BEYOND_C0 = "\\x7f-\\x9f\\u2028\\u2029\\u202a-\\u202e\\u2066-\\u2069\\ud800-\\udfff"

#: Control characters (C0, DEL, C1), the line and paragraph separators (which ``str.splitlines`` and many log
#: viewers break lines at), the bidirectional overrides and isolates (which reorder what a terminal shows), and
#: unpaired surrogates: what no log line or terminal gets raw.
UNSAFE = re.compile(f"[\\x00-\\x1f{_BEYOND_C0}]")
_UNSAFE_BUT_NEWLINE = re.compile(f"[\\x00-\\x09\\x0b-\\x1f{_BEYOND_C0}]")


_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(value: object) -> str:
    """``str(value)`` with every control character and unpaired surrogate escaped (``\\x1b``, ``\\ud800``)."""
    return UNSAFE.sub(_escape, str(value))


def _traceback_lines(exc: traceback.TracebackException) -> list[str]:
    """A traceback as :mod:`traceback` writes it, but each exception's own text on one escaped line.

    The frames' line breaks are the traceback's structure and stay; the
    exception's message is untrusted (it may quote the event) and may hold none.
    """
    lines: list[str] = []
    if exc.__cause__ is not None:
        lines += _traceback_lines(exc.__cause__)
        lines.append("\nThe above exception was the direct cause of the following exception:\n\n")
    elif exc.__context__ is not None and not exc.__suppress_context__:
        lines += _traceback_lines(exc.__context__)
        lines.append("\nDuring handling of the above exception, another exception occurred:\n\n")
    if exc.stack:
        lines.append("Traceback (most recent call last):\n")
        lines.extend(_UNSAFE_BUT_NEWLINE.sub(_escape, frame) for frame in exc.stack.format())
    lines.append(printable("".join(exc.format_exception_only()).rstrip("\n")) + "\n")
    return lines


class _Escaped:
    """An argument that is neither text nor a number (an exception, say), escaped as ``%s`` or ``%r`` shows it."""

    __slots__ = ("value",)

    def __init__(self, value: object) -> None:
        self.value = value

    def __str__(self) -> str:
        return printable(str(self.value))

    def __repr__(self) -> str:
        return printable(repr(self.value))


def _escaped(argument: object) -> object:
    if isinstance(argument, str):
        return printable(argument)
    if argument is None or isinstance(argument, (int, float)):  # %d and %.1f need the number itself
        return argument
    if isinstance(argument, numbers.Number):  # Decimal, Fraction, numpy's: a number's text is safe
        return argument
    return _Escaped(argument)


class _Escaping(logging.Filter):
    """Escapes the arguments and the traceback of each record (the format string is the package's).

    Text is escaped at once; any other argument but a number (an exception,
    whose message may quote a server's or a sender's text) when the record
    is formatted.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_escaped(a) for a in record.args)
        elif isinstance(record.args, Mapping):  # logger.info("%(name)s", {"name": ...})
            record.args = {key: _escaped(value) for key, value in record.args.items()}
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            exc = traceback.TracebackException(*record.exc_info)
            record.exc_text = "".join(_traceback_lines(exc)).rstrip("\n")
        return True


def protect(logger: logging.Logger) -> logging.Logger:
    """Add the escaping filter to *logger* (once) and return it."""
    if not any(isinstance(f, _Escaping) for f in logger.filters):
        logger.addFilter(_Escaping())
    return logger


#: The package's logger (``webhook_receiver``), escaping what it is given.
logger = protect(logging.getLogger("webhook_receiver"))
