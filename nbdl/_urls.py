"""URL checks and the redaction used wherever a URL is shown to a person."""

from __future__ import annotations

import re

from yarl import URL

_SPACE = re.compile(r"\s")
#: What precedes a URL's query: scheme, slashes, the authority (user info and host), the path.
_PARTS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*:)?(/*)([^/]*)(.*)", re.DOTALL)
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
        shown = redact_url(url)
        raise ValueError(f"not a valid URL: {shown!r} ({exc or type(exc).__name__})") from None
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"not an absolute http(s) URL: {redact_url(url)!r}")
    if not parsed.host:
        raise ValueError(f"URL has no host: {redact_url(url)!r}")
    return url


def redact_url(url: str) -> str:
    """Mask the password, every query value and the fragment, so a URL can be printed or logged.

    It works on the text, not on a parse: the URLs that most need hiding in an error message are
    the ones no parser accepts (``https:/user:pw@host``, ``user:pw@host/a``).
    """
    rest, hash_mark, fragment = url.partition("#")
    rest, query_mark, query = rest.partition("?")
    match = _PARTS.fullmatch(rest)
    assert match is not None  # every group may be empty
    scheme, slashes, authority, path = match.groups(default="")
    userinfo, at, host = authority.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        if colon:
            authority = f"{user}:***@{host}"
        elif scheme and not slashes:  # "user:password@host/a": the "scheme" is the user
            authority = f"***@{host}"
    shown = f"{scheme}{slashes}{authority}{path}"
    if query_mark:
        shown += "?" + "&".join(_masked(part) for part in query.split("&"))
    if hash_mark:  # fragments carry tokens too (OAuth's "#access_token=...")
        shown += "#***" if fragment else "#"
    return shown


def _masked(part: str) -> str:
    key, equals, _ = part.partition("=")
    if equals:
        return f"{key}=***"
    return "***" if part else ""  # a part without "=" may be a bare token ("?AbC123")


def origin(url: str) -> str:
    """``scheme://host[:port]`` of an absolute URL: the key of per-host connection counts."""
    scheme, sep, rest = url.partition("://")
    end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if at != -1 and at < end:
            end = at
    return scheme + sep + rest[:end]
