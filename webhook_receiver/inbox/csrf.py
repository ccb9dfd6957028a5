"""CSRF tokens for the inbox's actions: a random nonce in a cookie, and the nonce signed with itsdangerous in the form.

A cross-site page can make the browser send the cookie, but cannot read it
nor the page carrying the token; the token is only valid with the cookie it
was made for, and for :data:`MAX_AGE` seconds.
"""

from __future__ import annotations

import hmac
import secrets

from itsdangerous import BadSignature, URLSafeTimedSerializer

__all__ = ["COOKIE", "FIELD", "HEADER", "MAX_AGE", "CsrfTokens"]

#: The cookie holding the nonce.
COOKIE = "webhook_receiver_inbox_csrf"
#: The form field holding the token.
FIELD = "csrf_token"
#: The header that can hold it instead (the page's scripts send it).
HEADER = "X-CSRF-Token"
#: How long a token is good for, in seconds.
MAX_AGE = 12 * 3600


class CsrfTokens:
    """Makes and checks tokens with a key of the app's.

    :param secret: the signing key (never shown: only HMACs of it are).
    """

    def __init__(self, secret: str | bytes) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="webhook_receiver.inbox.csrf")

    def __repr__(self) -> str:
        return "<CsrfTokens>"

    @staticmethod
    def new_nonce() -> str:
        """A fresh random nonce for the cookie."""
        return secrets.token_urlsafe(24)

    def token_for(self, nonce: str) -> str:
        """The token a form carries for the browser holding *nonce*."""
        return self._serializer.dumps(nonce)

    def valid(self, token: str | None, nonce: str | None) -> bool:
        """Whether *token* was made by :meth:`token_for` for *nonce*, less than :data:`MAX_AGE` ago."""
        if not token or not nonce:
            return False
        try:
            signed = self._serializer.loads(token, max_age=MAX_AGE)
        except BadSignature:
            return False
        return isinstance(signed, str) and hmac.compare_digest(signed, nonce)
