"""People who may use the node: `<data_dir>/users.json`, salted slow password hashes, one role each."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, cast

from node.framework.files import write_atomic

logger = logging.getLogger(__name__)

Role = Literal["node", "control", "read"]
ROLES: tuple[Role, ...] = ("node", "control", "read")
FILE = "users.json"
NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
MAX_PASSWORD = 1024

# mosquitto's own format (`$7$`: PBKDF2-SHA512, 12-byte salt, 64-byte hash, base64), so the very
# same line goes into a mosquitto password file (`milo broker-config`). mosquitto_passwd's default
# is 101 iterations; this count makes a guess cost ~0.1 s here (2 x86 cores), several times that on a Pi.
PBKDF2_PREFIX = "$7$"
ITERATIONS = 100_000
SALT_BYTES = 12
HASH_BYTES = 64
CACHE_SIZE = 64
# Hashes computed at once: a flood of wrong passwords from the LAN then costs one core, never all.
MAX_HASHING = 1


class UserError(ValueError):
    """A user name, role or password that cannot be stored; the message says why."""


def hash_password(password: str, *, iterations: int = ITERATIONS) -> str:
    salt = secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, HASH_BYTES)
    b64 = base64.b64encode
    return f"{PBKDF2_PREFIX}{iterations}${b64(salt).decode()}${b64(digest).decode()}"


def check_password(password: str, stored: str) -> bool:
    """True when `password` gives `stored` (a `$7$` line); slow on purpose, call it off the loop."""
    parts = stored.split("$")
    if len(parts) != 5 or f"${parts[1]}$" != PBKDF2_PREFIX or not parts[2].isascii():
        return False
    try:
        iterations = int(parts[2])
        salt, digest = base64.b64decode(parts[3], validate=True), base64.b64decode(parts[4], validate=True)
    except ValueError:
        return False
    if not 1 <= iterations <= 10_000_000:
        return False
    found = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, len(digest))
    return hmac.compare_digest(found, digest)


@dataclass(frozen=True)
class User:
    name: str
    role: Role
    hash: str


def _check_name(name: str) -> None:
    if not NAME_RE.fullmatch(name):
        raise UserError(f"user name {name[:80]!r}: 1-64 of A-Z a-z 0-9 _ . @ -")


class Users:
    """The users file, read again whenever it changes (`milo user add` while the node runs)."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / FILE
        self._users: dict[str, User] = {}
        self._stamp: tuple[int, int, int] | None = None
        self._version = 0  # counts the changes seen, whoever read them first (a CONNECT, the node's watch)
        self.problem: str | None = None  # why the file cannot be used: then nobody logs in
        # (name, keyed digest of the password) -> user: a reconnection costs no hash. Keyed with a
        # per-process secret, so the cache holds nothing a memory dump could test guesses against
        # faster than the real hash.
        self._verified: collections.OrderedDict[tuple[str, bytes], User] = collections.OrderedDict()
        self._key = secrets.token_bytes(32)
        self._hashing: asyncio.Semaphore | None = None

    # Reading ---------------------------------------------------------------------------------------
    def _refresh(self) -> None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            if self._stamp is not None or self._users or self.problem is not None:
                self._users, self._stamp, self.problem = {}, None, None
                self._verified.clear()
                self._version += 1
            return
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp == self._stamp:
            if self.problem is not None:
                raise UserError(self.problem)
            return
        self._stamp = stamp
        self._version += 1
        self._verified.clear()  # a removed user or a new password takes effect at once
        try:
            self._users = self._parse(self.path.read_bytes())
        except (OSError, UserError) as exc:
            self._users = {}
            self.problem = f"{self.path}: {exc}"
            logger.error("users: %s; nobody can log in until it is fixed", self.problem)
            raise UserError(self.problem) from exc
        self.problem = None

    @staticmethod
    def _parse(raw: bytes) -> dict[str, User]:
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise UserError(f"{FILE} is not JSON: {exc}") from exc
        entries = data.get("users") if isinstance(data, dict) else None
        if not isinstance(entries, dict):
            raise UserError(f'{FILE} must hold {{"users": {{name: {{"role", "hash"}}}}}}')
        users: dict[str, User] = {}
        for name, entry in entries.items():
            if (
                not isinstance(entry, dict)
                or entry.get("role") not in ROLES
                or not isinstance(entry.get("hash"), str)
                or not NAME_RE.fullmatch(name)
            ):
                raise UserError(f"{FILE}: entry {name[:80]!r} is not a user (role, hash)")
            users[name] = User(name, cast(Role, entry["role"]), entry["hash"])
        return users

    def all(self) -> list[User]:
        self._refresh()
        return sorted(self._users.values(), key=lambda u: u.name)

    def any(self) -> bool:
        """Whether any user exists: a fresh install has none (README, Security)."""
        try:
            self._refresh()
        except (OSError, UserError):
            return True  # an unreadable file must not open the node up
        return bool(self._users)

    def version(self) -> int:
        """Reads the file again if it changed (a stat otherwise); the number changes with every change."""
        with contextlib.suppress(OSError, UserError):
            self._refresh()
        return self._version

    def lookup(self, name: str) -> User | str:
        """The user as the file says now, else why nobody of that name can log in."""
        try:
            self._refresh()
        except (OSError, UserError) as exc:
            return f"the users file cannot be read ({exc})"
        return self._users.get(name) or "the user was removed"

    # Checking --------------------------------------------------------------------------------------
    def _lookup(self, name: str, password: str) -> tuple[User | None, tuple[str, bytes]]:
        self._refresh()
        key = (name, hmac.digest(self._key, password.encode(), "sha256"))
        return self._users.get(name), key

    def verify(self, name: str, password: str) -> Role | None:
        """The user's role when the password is right, else None (blocking: hashes when not cached)."""
        user, key = self._lookup(name, password)
        found = self._finish(user, key, user is not None and check_password(password, user.hash))
        return found.role if found is not None else None

    async def verify_async(self, name: str, password: str) -> Role | None:
        """As `verify`, hashing in a thread: a CONNECT never stalls the broker's event loop."""
        user = await self.login_async(name, password)
        return user.role if user is not None else None

    async def login_async(self, name: str, password: str) -> User | None:
        """The user, as the file held it when the password was checked, when the password is right."""
        if len(password) > MAX_PASSWORD or not NAME_RE.fullmatch(name):
            return None
        for _ in range(2):
            try:
                user, key = self._lookup(name, password)
            except (OSError, UserError):
                return None
            if user is None:
                return None
            ok = await self._password_ok(user, key, password)
            if self._current(name) == user:
                return self._finish(user, key, ok)
            # The file changed while hashing (`milo user add` gave a new password): the answer
            # and the cache entry would be the old password's, so check against the new entry.
        return None

    async def _password_ok(self, user: User, key: tuple[str, bytes], password: str) -> bool:
        if key in self._verified:
            self._verified.move_to_end(key)
            return True
        if self._hashing is None:
            self._hashing = asyncio.Semaphore(MAX_HASHING)
        async with self._hashing:
            if key in self._verified:  # the same login may have been checked meanwhile
                return True
            return await asyncio.to_thread(check_password, password, user.hash)

    def _current(self, name: str) -> User | None:
        try:
            self._refresh()
        except (OSError, UserError):
            return None
        return self._users.get(name)

    def _finish(self, user: User | None, key: tuple[str, bytes], ok: bool) -> User | None:
        if user is None or not ok:
            return None
        self._verified[key] = user
        while len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return user

    # Writing ---------------------------------------------------------------------------------------
    def _save(self, users: dict[str, User]) -> None:
        body = {"users": {u.name: {"role": u.role, "hash": u.hash} for u in users.values()}}
        data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        old = os.umask(0o077)  # hashes are for the node's user only
        try:
            write_atomic(self.path, data)
        finally:
            os.umask(old)
        self.path.chmod(0o600)

    def add(self, name: str, role: str, password: str) -> bool:
        """Add or replace a user; True when it replaced one."""
        _check_name(name)
        if role not in ROLES:
            raise UserError(f"role {role!r}: one of {', '.join(ROLES)}")
        if not password or len(password) > MAX_PASSWORD:
            raise UserError(f"the password must be 1-{MAX_PASSWORD} characters")
        self._refresh()
        users = dict(self._users)
        replaced = name in users
        users[name] = User(name, role, hash_password(password))
        self._save(users)
        return replaced

    def remove(self, name: str) -> bool:
        self._refresh()
        if name not in self._users:
            return False
        users = {k: v for k, v in self._users.items() if k != name}
        self._save(users)
        return True


__all__ = ["ROLES", "Role", "User", "UserError", "Users", "check_password", "hash_password"]
