"""URL checks and the redaction used wherever a URL is shown to a person."""

from __future__ import annotations

import re

from yarl import URL

_SPACE = re.compile(r"\s")
#: yarl raises IndexError, not ValueError, for some malformed hosts ("http://[::1]:@").
_PARSE_ERRORS = (ValueError, TypeError, IndexError)
#: Most URLs in a batch: http(s), a plain ASCII host, a port, printable ASCII after it.  yarl
#: accepts all of them, and its path is the second group (a test compares both on random URLs),
#: so queuing them needs no parse: two parses were a third of the cost of queuing a URL.
SIMPLE_URL = re.compile(
    r"https?://[A-Za-z0-9.-]+(?::(\d{1,5}))?(/[\w!$&'()*+,;=:@%/.~-]*)?(?:[?#][!-~]*)?", re.ASCII
)


def check_url(url: object) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else raise ValueError."""
    if isinstance(url, str):
        simple = SIMPLE_URL.fullmatch(url)
        if simple and (simple[1] is None or int(simple[1]) <= 65535):
            return url
    return _check_url(url)


def _check_url(url: object) -> str:
    if not isinstance(url, str):
        raise ValueError(f"URL must be a string, not {type(url).__name__}")
    if not url.strip():
        raise ValueError("URL is empty")
    if _SPACE.search(url):
        raise ValueError(f"URL contains whitespace: {redact_url(url)!r}")
    try:
        parsed = URL(url)
    except _PARSE_ERRORS as exc:
        raise ValueError(f"not a valid URL: {url!r} ({exc or type(exc).__name__})") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"not an absolute http(s) URL: {redact_url(url)!r}")
    if not parsed.host:
        raise ValueError(f"URL has no host: {redact_url(url)!r}")
    return url


def redact_url(url: str) -> str:
    """Mask the password and every query value, so a URL can be printed or logged."""
    try:
        parsed = URL(url)
    except _PARSE_ERRORS:
        return "<unparsable URL>"
    if not parsed.is_absolute():
        return url
    if parsed.password is not None:
        parsed = parsed.with_password("***")
    if parsed.query_string:
        masked = "&".join(f"{key}=***" for key in parsed.query)
        parsed = parsed.with_query(None)
        return f"{parsed}?{masked}"
    return str(parsed)
