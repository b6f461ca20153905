"""What of a URL may be shown: one rule for every message, log line, page and printed setting.

Every URL (``scheme://...``) in a text keeps its scheme, host, port and path. Its userinfo (all
from ``scheme://`` to the last ``@`` of its line, so a password with an unencoded ``/ ? #``, ``@``
or space is hidden whole) and every value of a ``key=value`` after its host (any key: tokens,
API keys, passcodes) become ``***``. The rule reads text, not a parsed URL, so a malformed URL (an
unclosed ``[``, no host, an odd scheme, a bad ``%`` escape) is hidden all the same; where it cannot
tell, it hides more. A URL ends at the end of its line, or where another begins after a space,
a quote, a bracket, ``=``, ``,`` or ``;``; a value ends at ``&``, ``#`` or a space (punctuation
just before the space, such as the ``:`` of "URL: reason", is not part of it).
"""

from __future__ import annotations

import logging
import re

HIDDEN = "***"
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
_BOUNDARY = frozenset(" \t\r\n\"'(<[=,;")  # before a scheme, these start a new URL (not one inside a password)
_VALUE = re.compile(r"=[^&#]+?(?=[&#]|[.,:;)\]'\"]*$)")  # in a URL's text up to its first space


def redact(text: str) -> str:
    """`text` (a URL or a message holding any) with every URL's userinfo and query values as ***."""
    starts = []  # where each URL begins: the first scheme:// of a line, or one after a boundary
    for match in _SCHEME.finditer(text):
        if (not starts or text[match.start() - 1] in _BOUNDARY
                or text.rfind("\n", 0, starts[-1].start()) != text.rfind("\n", 0, match.start())):
            starts.append(match)
    shown, done = [], 0
    for index, match in enumerate(starts):
        end = starts[index + 1].start() if index + 1 < len(starts) else len(text)
        newline = text.find("\n", match.end(), end)
        end = end if newline < 0 else newline
        rest = text[match.end():end]
        at = rest.rfind("@")
        if at >= 0:
            rest = HIDDEN + rest[at:]
        token = re.match(r"\S*", rest).group()
        shown += [text[done:match.end()], _VALUE.sub("=" + HIDDEN, token), rest[len(token):]]
        done = end
    return "".join(shown) + text[done:]


class RedactingFormatter(logging.Formatter):
    """Log lines (the message, its arguments and any traceback) shown through :func:`redact`."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def log_to_stderr(fmt: str = "%(asctime)s %(levelname)s %(name)s: %(message)s") -> None:
    """The process's log on standard error at INFO, every line redacted."""
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(fmt))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
