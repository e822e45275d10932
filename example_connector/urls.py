"""Which parts of a URL are secret, and the form of a URL that is safe to show.

A feed URL may carry credentials (``user:password@``) and an access key in its
path or query; the platform URL may carry a password.  The redaction itself
is the library's (:mod:`connector_batching.redaction`); this module only says
what to redact and how a URL is displayed.
"""

from __future__ import annotations

from urllib.parse import urlsplit

__all__ = ["redact_url", "secret_fragments"]

#: Fragments shorter than this are not treated as secrets (they would mangle
#: unrelated text and are not worth hiding).
MIN_FRAGMENT = 4


def secret_fragments(source: str) -> list[str]:
    """The parts of ``source`` that may be secret, longest first.

    For a URL: the whole URL, its user info, password and user name, its path
    and query (an access key often travels in either) and each query value.
    Nothing for a local path.
    """
    parts = urlsplit(source)
    if not parts.scheme or len(parts.scheme) == 1:  # a path (or a Windows drive)
        return []
    found = {source, parts.path, parts.query, parts.fragment}
    userinfo, at, _host = parts.netloc.rpartition("@")
    if at:
        found.add(userinfo)
        user, _colon, password = userinfo.partition(":")
        found.update((user, password))
    for pair in parts.query.split("&"):
        found.add(pair.partition("=")[2])
    if parts.path:
        found.add(parts.path + (f"?{parts.query}" if parts.query else ""))
    return sorted((f for f in found if len(f) >= MIN_FRAGMENT), key=len, reverse=True)


def redact_url(source: str) -> str:
    """``source`` reduced to scheme, host and port, safe to log.

    Credentials, path (which may embed an access key) and query are dropped;
    a local path is returned as it is.
    """
    parts = urlsplit(source)
    if not parts.scheme or len(parts.scheme) == 1:
        return source
    host = parts.hostname or ""
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    rest = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{host}{port}{rest}"
