"""HTTP bearer tokens: made here, kept in the index only as SHA-256 digests (pure code).

A token is 256 random bits; a plain SHA-256 of it is as strong as a slow password hash
would be, and keeps each request's check to one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

ROLES = ("admin", "reader", "uploader")
PREFIX = "pmt_"


@dataclass(frozen=True)
class NewToken:
    token: str  # shown once, never stored
    token_id: str  # short public name for list and revoke
    digest: str


def digest(token: str) -> str:
    return hashlib.sha256(token.strip().encode()).hexdigest()


def token_id(token_digest: str) -> str:
    return token_digest[:12]


def new_token() -> NewToken:
    token = PREFIX + secrets.token_urlsafe(32)
    d = digest(token)
    return NewToken(token, token_id(d), d)


def may(role: str, needed: str) -> bool:
    """Admin may do everything; reader reads; uploader uploads."""
    return role == "admin" or role == needed
