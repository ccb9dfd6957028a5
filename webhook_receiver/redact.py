"""Hiding the passwords of URLs in text bound for a message or a repr."""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

__all__ = ["hide_passwords", "url_passwords"]

#: The query parameters that carry a password in database and Redis URLs (any case).
PASSWORD_PARAMETERS = ("password", "passwd", "pass", "pwd")

#: ``scheme://user:password@host``: the password runs to the last ``@`` before the host (a URL parser's
#: reading: it may hold ``@`` and ``'`` unencoded), never across white space or a ``/`` (which would end
#: the host part, and bounds the scan: text of many ``x://u:`` took seconds), and at most 1,024 characters.
_USERINFO = re.compile(
    r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^:/?#@\s'\"<>]*)"
    r":(?P<password>[^\s\"<>/]{0,1024})@(?=[^@\s\"<>/?#']*(?:[/?#\s'\"<>]|$))"
)
_QUERY = re.compile(
    r"(?P<head>[?&;](?:" + "|".join(PASSWORD_PARAMETERS) + r")=)(?P<password>[^&;#\s'\"<>]*)", re.IGNORECASE
)


def url_passwords(url: str) -> list[str]:
    """Every password *url* carries, as written and decoded: ``user:pw@`` and ``?password=pw``.

    :param url: any URL; one that does not parse yields nothing.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return []
    found: list[str] = []
    userinfo, at, _ = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += _cut_password(url)
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if name.lower() in PASSWORD_PARAMETERS and value:
            found.append(value)
    found += [unquote(value) for value in list(found)]
    return sorted({value for value in found if value}, key=len, reverse=True)


#: Where a URL parser ends the user info when the password holds one of these unencoded.
_DELIMITERS = re.compile(r"[/?#]")


def _cut_password(url: str) -> list[str]:
    """A password holding an unencoded ``/``, ``?`` or ``#``, and its pieces: what a parser quotes of it.

    A parser ends the host part at the first of them, so that the password's
    head is read as a port (``Port could not be cast to integer value as
    'head'``) and its tail as a path or fragment: the whole text between the
    scheme's ``://`` and the last ``@`` is taken as the user info, and each
    piece of its password of three characters or more is hidden too.
    """
    rest = url.partition("://")[2]
    userinfo, at, _ = rest.rpartition("@")
    if not at or any(c.isspace() for c in userinfo) or not _DELIMITERS.search(userinfo):
        return []
    user, colon, password = userinfo.partition(":")
    if not colon or _DELIMITERS.search(user) or not password:
        return []
    return [password, *(piece for piece in _DELIMITERS.split(password) if len(piece) >= 3)]


def hide_passwords(text: str, *urls: str) -> str:
    """*text* with every URL password in it replaced by ``***``.

    Hides ``scheme://user:pw@host`` and ``?password=pw`` (``passwd``,
    ``pass``, ``pwd``, any case) wherever they appear, and, for each of
    *urls*, its passwords wherever they appear alone (a driver's error
    message may quote one without the URL around it).

    :param text: a message or a repr.
    :param urls: URLs whose passwords must not show, in any form.
    """
    for url in urls:
        for password in url_passwords(url):
            text = text.replace(password, "***")
    text = _USERINFO.sub(lambda m: f"{m['head']}:***@", text)
    return _QUERY.sub(lambda m: f"{m['head']}***", text)
