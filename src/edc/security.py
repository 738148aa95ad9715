"""Secrets and their checks: password hashes, random tokens, signatures, CSRF tokens.

Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second recommendation).
API tokens and session ids are random; only their SHA-256 is stored, so a leaked database does
not hand out logins. Signatures are HMAC-SHA256 under the platform's secret key.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

API_TOKEN_PREFIX = "edc_"
_hasher = PasswordHasher()
# Verified when the user name is unknown, so a wrong name costs as long as a wrong password.
_DUMMY_HASH = _hasher.hash("an unknown user's password")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """True when ``password`` matches; takes the same time for a missing hash."""
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def password_needs_rehash(password_hash: str) -> bool:
    return _hasher.check_needs_rehash(password_hash)


def new_api_token() -> str:
    return API_TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def digest(token: str) -> str:
    """What the database keeps of a token or session id."""
    return hashlib.sha256(token.encode()).hexdigest()


def sign(secret_key: str, value: str, *, purpose: str) -> str:
    """``value.signature``; ``purpose`` keeps a signature for one use from passing for another."""
    mac = hmac.new(secret_key.encode(), f"{purpose}:{value}".encode(), hashlib.sha256)
    return f"{value}.{mac.hexdigest()}"


def unsign(secret_key: str, signed: str, *, purpose: str) -> str | None:
    """The value inside ``signed``, or None when the signature does not match."""
    value, dot, _mac = signed.rpartition(".")
    if not dot or not value:
        return None
    if hmac.compare_digest(sign(secret_key, value, purpose=purpose), signed):
        return value
    return None


def csrf_token(secret_key: str, *, nonce: str, session_id: str | None) -> str:
    """The form token for a browser: its CSRF cookie's nonce bound to its session (signed).

    A signed double-submit token: a cross-site page can make the browser send the cookies but
    can neither read them nor compute this value, and a token from another session does not pass.
    """
    message = f"csrf:{nonce}:{session_id or ''}".encode()
    return hmac.new(secret_key.encode(), message, hashlib.sha256).hexdigest()


def csrf_token_matches(
    secret_key: str, presented: str | None, *, nonce: str | None, session_id: str | None
) -> bool:
    if not presented or not nonce:
        return False
    expected = csrf_token(secret_key, nonce=nonce, session_id=session_id)
    return hmac.compare_digest(expected, presented)
