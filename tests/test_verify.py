"""The secret check: right answers, and the shape of a constant-time comparison."""

from __future__ import annotations

import hmac
from typing import Any

import pytest

from webhook_receiver.verify import SecretVerifier, derive_secrets


def test_accepts_each_secret_and_nothing_else() -> None:
    verifier = SecretVerifier(["old", "new"])
    assert verifier.verify("old") and verifier.verify("new")
    for wrong in (None, "", "ne", "new ", "NEW", "oldnew", "n\x00ew"):
        assert not verifier.verify(wrong)
    assert verifier.newest == "new"


def test_non_ascii_and_surrogates_do_not_crash() -> None:
    verifier = SecretVerifier(["sécret"])
    assert verifier.verify("sécret")
    assert not verifier.verify("\udcff")


@pytest.mark.parametrize("bad", [[], [""], ["ok", ""]])
def test_empty_secrets_are_refused(bad: list[str]) -> None:
    with pytest.raises(ValueError):
        SecretVerifier(bad)


def test_repr_holds_no_secret() -> None:
    assert "top-secret" not in repr(SecretVerifier(["top-secret"]))


@pytest.mark.parametrize("candidate", [None, "x", "ne", "new", "old", "a" * 10_000, "new" + "a" * 50])
def test_every_secret_is_compared_as_a_fixed_length_digest(
    monkeypatch: pytest.MonkeyPatch, candidate: str | None
) -> None:
    """Whatever the guess, the same comparisons happen: one per secret, 32 bytes against 32 bytes.

    Timing itself is measured by ``bench/verify_timing.py``, not asserted here.
    """
    seen: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        seen.append((len(a), len(b)))
        return real(a, b)

    verifier = SecretVerifier(["old", "middle", "new"])
    monkeypatch.setattr(hmac, "compare_digest", spy)
    verifier.verify(candidate)
    assert seen == [(32, 32)] * 3


def test_derived_secrets_are_url_safe_and_ordered() -> None:
    secrets = derive_secrets(["older", "newer"], salt="moltin")
    assert len(secrets) == 2 and secrets[0] != secrets[1]
    assert all(len(s) == 43 and s.replace("-", "").replace("_", "").isalnum() for s in secrets)
    assert derive_secrets(["", None], salt="moltin") == []  # type: ignore[list-item]
