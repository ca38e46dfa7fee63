# SPDX-License-Identifier: Apache-2.0
"""Who may use the dashboard: passwords (Argon2id), sessions, lockout, roles, the audit trail.

    auth = Authenticator(db, idle_s=8 * 3600, max_s=24 * 3600)
    token, session = await auth.login("li", password, remote="10.0.0.5")   # AuthFailed / AuthLocked
    session = await auth.session(token)                                    # None: log in again

The cookie holds a 32-byte random token; the database keeps only its
SHA-256, so a copy of the database opens no session. Each session has its
own CSRF token. Five failed logins in a row lock the account for five
minutes; a failed login costs one Argon2 verification whether the user
exists or not, and says the same either way.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import re
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from fleet.dashboard.db import Conn, Database
from fleet.dashboard.errors import AuthFailed, AuthForbidden, AuthLocked, UserError
from fleet.dashboard.queries import audit

__all__ = ["Authenticator", "Session", "ROLES", "MIN_PASSWORD", "MAX_FAILURES", "LOCK_S", "check_username",
           "check_password", "require_role", "token_hash", "new_hasher"]

ROLES = ("viewer", "operator", "admin")
MIN_PASSWORD = 12
MAX_PASSWORD = 1024
MAX_FAILURES = 5
LOCK_S = 300
HASHING_AT_ONCE = 2
TOUCH_EVERY_S = 60          # a session's last_seen is written at most this often (not on every request)
_USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
FAILED = "wrong user name or password"
UNKNOWN = "(unknown)"          # the audit's name for a login attempt with a name that is no user


def new_hasher() -> PasswordHasher:
    """Argon2id with argon2-cffi's current defaults (RFC 9106's low-memory profile)."""
    return PasswordHasher()


def check_username(name: str) -> str:
    if not _USERNAME.match(name):
        raise UserError(f"user name {name!r}: letters, digits, '_', '.', '@', '-', at most 64, starting with a "
                        "letter or digit")
    return name


def check_password(password: str) -> str:
    if len(password) < MIN_PASSWORD:
        raise UserError(f"the password is too short: at least {MIN_PASSWORD} characters")
    if len(password) > MAX_PASSWORD:
        raise UserError(f"the password is too long: at most {MAX_PASSWORD} characters")
    return password


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", "replace")).hexdigest()


@dataclasses.dataclass(frozen=True)
class Session:
    username: str
    role: str
    csrf: str
    token_sha256: str


def require_role(session: Session, role: str) -> None:
    """AuthForbidden unless ``session``'s role is ``role`` or above (viewer < operator < admin)."""
    if ROLES.index(session.role) < ROLES.index(role):
        raise AuthForbidden(f"this needs the {role} role (you are {session.role})")


class Authenticator:
    """Logins, sessions and logouts against dashboard_users / dashboard_sessions, each audited."""

    def __init__(self, db: Database, *, idle_s: int, max_s: int, hasher: PasswordHasher | None = None) -> None:
        self.db = db
        self.idle_s, self.max_s = idle_s, max_s
        self.hasher = hasher or new_hasher()
        # Verified against when the user does not exist, so that costs what a wrong password costs.
        self._decoy = self.hasher.hash(secrets.token_urlsafe(16))
        # Each Argon2 call takes the hasher's memory (64 MiB by default): a burst of logins waits its turn
        # rather than taking a gigabyte.
        self._hashing = asyncio.Semaphore(HASHING_AT_ONCE)

    async def _verify(self, stored: str, password: str) -> bool:
        def check() -> bool:
            try:
                return bool(self.hasher.verify(stored, password))
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False
        # Argon2 takes tens of milliseconds of CPU: off the event loop, so other requests go on meanwhile.
        async with self._hashing:
            return await asyncio.to_thread(check)

    async def login(self, username: str, password: str, *, remote: str) -> tuple[str, Session]:
        """A new session for a correct password; AuthFailed (401) or AuthLocked (429) otherwise, all audited."""
        name = username.strip()[:128]
        async with self.db.connection() as conn, conn.transaction():
            # FOR UPDATE: attempts on one account run one after the other, so the lockout counts all of them.
            cur = await conn.execute(
                "SELECT password_hash, role, disabled_at IS NOT NULL, coalesce(locked_until > now(), false) "
                "FROM dashboard_users WHERE username = %s FOR UPDATE", (name,))
            row = await cur.fetchone()
            if row is not None and row[3]:
                await audit(conn, name, "login_failed", name, {"reason": "locked"}, remote)
                failure: Exception = AuthLocked("too many failed logins: this account is locked for a few "
                                                "minutes")
            elif row is None or row[2] or len(password) > MAX_PASSWORD:
                await self._verify(self._decoy, password[:MAX_PASSWORD])
                reason = "unknown_user" if row is None else "disabled" if row[2] else "too_long"
                # A name that is no user is not kept: it is often a password typed into the wrong field.
                who = UNKNOWN if row is None else name
                await audit(conn, who, "login_failed", who, {"reason": reason}, remote)
                failure = AuthFailed(FAILED)
            elif not await self._verify(row[0], password):
                cur = await conn.execute(
                    "UPDATE dashboard_users SET "
                    "failed_logins = CASE WHEN failed_logins + 1 >= %(max)s THEN 0 ELSE failed_logins + 1 END, "
                    "locked_until = CASE WHEN failed_logins + 1 >= %(max)s "
                    "  THEN now() + make_interval(secs => %(lock)s) ELSE locked_until END "
                    "WHERE username = %(name)s RETURNING locked_until > now()",
                    {"max": MAX_FAILURES, "lock": LOCK_S, "name": name})
                locked = await cur.fetchone()
                await audit(conn, name, "login_failed", name,
                            {"reason": "password", "locked": bool(locked and locked[0])}, remote)
                failure = AuthFailed(FAILED)
            else:
                return await self._open(conn, name, row[0], row[1], password, remote)
        raise failure

    async def _open(self, conn: Conn, name: str, stored: str, role: str, password: str, remote: str
                    ) -> tuple[str, Session]:
        rehash = None
        if self.hasher.check_needs_rehash(stored):
            # Parameters changed since this hash was made: store one with today's, now that we know the password.
            async with self._hashing:
                rehash = await asyncio.to_thread(self.hasher.hash, password)
        await conn.execute("UPDATE dashboard_users SET failed_logins = 0, locked_until = NULL, "
                           "password_hash = coalesce(%s, password_hash) WHERE username = %s", (rehash, name))
        token = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode("ascii")
        csrf = secrets.token_urlsafe(32)
        digest = token_hash(token)
        await conn.execute("DELETE FROM dashboard_sessions WHERE expires_at < now() "
                           "OR last_seen < now() - make_interval(secs => %s)", (self.idle_s,))
        await conn.execute("INSERT INTO dashboard_sessions (token_sha256, username, csrf_token, expires_at) "
                           "VALUES (%s, %s, %s, now() + make_interval(secs => %s))", (digest, name, csrf, self.max_s))
        await audit(conn, name, "login", name, {"rehashed": True} if rehash else {}, remote)
        return token, Session(name, role, csrf, digest)

    async def session(self, token: str | None) -> Session | None:
        """The live session of ``token`` (not expired, not idle too long, its user enabled), else None."""
        if not token or len(token) > 128:
            return None
        digest = token_hash(token)
        async with self.db.connection() as conn:
            cur = await conn.execute(
                "SELECT s.username, u.role, s.csrf_token, s.last_seen < now() - make_interval(secs => %s) "
                "FROM dashboard_sessions s JOIN dashboard_users u ON u.username = s.username "
                "WHERE s.token_sha256 = %s AND u.disabled_at IS NULL AND s.expires_at > now() "
                "AND s.last_seen > now() - make_interval(secs => %s)", (TOUCH_EVERY_S, digest, self.idle_s))
            row = await cur.fetchone()
            if row is None:
                return None
            if row[3]:
                await conn.execute("UPDATE dashboard_sessions SET last_seen = now() WHERE token_sha256 = %s", (digest,))
        return Session(row[0], row[1], row[2], digest)

    async def logout(self, session: Session, *, remote: str) -> None:
        async with self.db.connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM dashboard_sessions WHERE token_sha256 = %s", (session.token_sha256,))
            await audit(conn, session.username, "logout", session.username, {}, remote)

