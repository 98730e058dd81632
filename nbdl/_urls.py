"""URL checks and the redaction used wherever a URL is shown to a person."""

from __future__ import annotations

import re

from yarl import URL

_SPACE = re.compile(r"\s")


def check_url(url: object) -> str:
    """Return ``url`` if it is an absolute http(s) URL with a host, else raise ValueError."""
    if not isinstance(url, str):
        raise ValueError(f"URL must be a string, not {type(url).__name__}")
    if not url.strip():
        raise ValueError("URL is empty")
    if _SPACE.search(url):
        raise ValueError(f"URL contains whitespace: {redact_url(url)!r}")
    try:
        parsed = URL(url)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a valid URL: {url!r} ({exc})") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"not an absolute http(s) URL: {redact_url(url)!r}")
    if not parsed.host:
        raise ValueError(f"URL has no host: {redact_url(url)!r}")
    return url


def redact_url(url: str) -> str:
    """Mask the password and every query value, so a URL can be printed or logged."""
    try:
        parsed = URL(url)
    except (ValueError, TypeError):
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
