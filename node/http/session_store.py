"""Browser sessions in the index: only each cookie's SHA-256 is kept, beside the token it
was exchanged for, so revoking that token ends its sessions at once."""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable

from node.db import Database

SESSION_PREFIX = "pms_"


def digest(cookie: str) -> str:
    return hashlib.sha256(cookie.encode()).hexdigest()


class SessionStore:
    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self._db = db
        self._clock = clock

    async def open(self, token_sha256: str, lifetime: float) -> str:
        """A new session for the token with this digest; returns the cookie value (the
        only copy of it)."""
        cookie = SESSION_PREFIX + secrets.token_urlsafe(32)
        now = self._clock()
        async with self._db.transaction() as conn:
            # Expired rows go as new ones come: the table stays the size of the live ones.
            await conn.execute("DELETE FROM http_sessions WHERE expires_at <= ?", (now,))
            await conn.execute(
                "INSERT INTO http_sessions (sha256, token_sha256, created_at, expires_at)"
                " VALUES (?, ?, ?, ?)", (digest(cookie), token_sha256, now, now + lifetime))
        return cookie

    async def token_of(self, cookie: str) -> str | None:
        """The token digest of a live session (not expired, its token not revoked)."""
        rows = await self._db.fetchall(
            "SELECT s.token_sha256 FROM http_sessions s JOIN http_tokens t"
            " ON t.sha256 = s.token_sha256"
            " WHERE s.sha256 = ? AND s.expires_at > ? AND t.revoked_at IS NULL",
            (digest(cookie), self._clock()))
        return rows[0]["token_sha256"] if rows else None

    async def close(self, cookie: str) -> bool:
        async with self._db.transaction() as conn:
            cursor = await conn.execute("DELETE FROM http_sessions WHERE sha256 = ?",
                                        (digest(cookie),))
            return cursor.rowcount > 0
