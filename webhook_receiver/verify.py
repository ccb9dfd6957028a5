"""Checking the ``X-MOLTIN-SECRET-KEY`` header, and deriving secrets from Flask's ``SECRET_KEY``.

Moltin sends the integration's ``secret_key`` verbatim (there is no HMAC of the
body), so the check is a comparison, made in constant time:

* the candidate and every configured secret are first reduced to fixed-length
  (32-byte) keyed BLAKE2b digests under a key drawn at start, so the
  comparison takes the same time whatever the candidate's length;
* the digests are compared with :func:`hmac.compare_digest`, so the time does
  not depend on how many leading characters are right;
* every configured secret is compared, even after a match, so the time does not
  tell which secret (or whether a rotated one) matched.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from typing import Iterable, Sequence

from itsdangerous import Signer

__all__ = ["SecretVerifier", "derive_secrets"]


class SecretVerifier:
    """Accepts any of several secrets, compared in constant time.

    :param secrets: the accepted secrets, oldest to newest, as with
        itsdangerous' key lists; the newest is the one to register upstream.
    :raises ValueError: if *secrets* is empty or holds an empty string.
    """

    def __init__(self, secrets: Sequence[str]) -> None:
        if not secrets:
            raise ValueError("at least one secret is needed")
        if any(not isinstance(s, str) or not s for s in secrets):
            raise ValueError("every secret must be a non-empty string")
        self._key = os.urandom(32)
        # Newest first, as itsdangerous tries keys.
        self._digests = tuple(self._digest(s) for s in reversed(secrets))
        self._newest = secrets[-1]

    def __repr__(self) -> str:
        return f"<SecretVerifier secrets={len(self._digests)}>"

    @property
    def newest(self) -> str:
        """The newest secret: the value to register as ``configuration.secret_key``."""
        return self._newest

    def also_accepting(self, secret: str) -> SecretVerifier:
        """A verifier that accepts *secret* too; :attr:`newest` stays the same.

        For a session secret, such as the one ``flask webhooks tunnel``
        registers for a temporary integration.

        :raises ValueError: if *secret* is empty.
        """
        if not isinstance(secret, str) or not secret:
            raise ValueError("the secret must be a non-empty string")
        clone = object.__new__(SecretVerifier)
        clone._key = self._key
        clone._digests = (self._digest(secret), *self._digests)
        clone._newest = self._newest
        return clone

    def _digest(self, value: str) -> bytes:
        return hashlib.blake2b(value.encode("utf-8", "surrogateescape"), key=self._key, digest_size=32).digest()

    def verify(self, candidate: str | None) -> bool:
        """Tell whether *candidate* is one of the accepted secrets.

        :param candidate: the header's value, or ``None`` when it is absent.
        """
        if candidate is None:
            candidate = ""
        digest = self._digest(candidate)
        matched = False
        for expected in self._digests:
            # No short cut: every secret is compared.
            matched |= hmac.compare_digest(expected, digest)
        return matched


def derive_secrets(secret_keys: Iterable[str | bytes], *, salt: str) -> list[str]:
    """Derive webhook secrets from Flask secret keys.

    Each Flask key gives one webhook secret, an HMAC-SHA256 of the salt under
    the key (itsdangerous' ``hmac`` key derivation), URL-safe base64 encoded:
    43 characters a store can hold and a header can carry. The order is kept,
    so ``SECRET_KEY_FALLBACKS + [SECRET_KEY]`` gives oldest to newest.

    :param secret_keys: Flask secret keys, oldest to newest.
    :param salt: tells apart the secrets of several receivers; the receiver's
        name is used.
    """
    keys = [k.encode("utf-8") if isinstance(k, str) else k for k in secret_keys if k]
    if not keys:
        return []
    signer = Signer(keys, salt=f"webhook_receiver.{salt}", key_derivation="hmac", digest_method=hashlib.sha256)
    return [base64.urlsafe_b64encode(signer.derive_key(key)).rstrip(b"=").decode("ascii") for key in keys]
