"""Parsers of response headers that come from the network (and so may be anything)."""

from __future__ import annotations

import re

#: ASCII only: a str pattern's \d also takes other scripts' digits, and int() would read them.
_CONTENT_RANGE = re.compile(
    r"^\s*bytes\s+(\d{1,19})-(\d{1,19})/(\d{1,19}|\*)\s*$", re.IGNORECASE | re.ASCII
)


def parse_content_range(value: str | None) -> tuple[int, int, int | None] | None:
    """``"bytes 0-99/1000"`` → ``(0, 99, 1000)``; ``"bytes 0-99/*"`` → ``(0, 99, None)``.

    None for anything else, including a range that is empty, reversed or past the total:
    such an answer cannot be written into a file safely.
    """
    if not value:
        return None
    match = _CONTENT_RANGE.match(value)
    if match is None:
        return None
    start, end = int(match.group(1)), int(match.group(2))
    total = None if match.group(3) == "*" else int(match.group(3))
    if end < start or (total is not None and end >= total):
        return None
    return start, end, total
