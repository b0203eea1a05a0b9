"""API token format, hashing and constant-time verification (pure functions)."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

TOKEN_PREFIX = "pvw_"
PREFIX_LENGTH = 8


@dataclass(frozen=True)
class NewToken:
    prefix: str
    plaintext: str
    token_hash: str


def hash_token(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


def generate_token() -> NewToken:
    prefix = secrets.token_hex(PREFIX_LENGTH // 2)
    plaintext = f"{TOKEN_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
    return NewToken(prefix=prefix, plaintext=plaintext, token_hash=hash_token(plaintext))


def parse_prefix(plaintext: str) -> str | None:
    """The lookup prefix of a presented token, or None if it is not shaped like ours."""
    if not plaintext.startswith(TOKEN_PREFIX):
        return None
    prefix, sep, secret = plaintext[len(TOKEN_PREFIX):].partition("_")
    if not sep or len(prefix) != PREFIX_LENGTH or not secret:
        return None
    return prefix


def token_matches(plaintext: str, token_hash: str) -> bool:
    return hmac.compare_digest(hash_token(plaintext), token_hash)
