# -*- test-case-name: tests.test_admin -*-
"""Admin users: HTTP basic auth checked against bcrypt hashes (twisted.cred).

Users come from configuration as ``name:secret[:ro]`` items.  A secret is a
bcrypt hash (``$2b$...``); a plain password is accepted only when the
configuration allows it (the demo's ``admin:conduktor``).  bcrypt is slow on
purpose, so checks run off the reactor thread and successes are cached.
Repeated failures from one address slow that address down (``LoginThrottle``).
"""

import hashlib
import hmac
import secrets
from collections import OrderedDict
from dataclasses import dataclass

import bcrypt
from twisted.cred import credentials, error
from twisted.cred.checkers import ICredentialsChecker
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

log = Logger()


@dataclass(frozen=True)
class AdminUser:
    name: str
    secret: str
    read_only: bool = False

    @property
    def hashed(self):
        return self.secret.startswith(("$2a$", "$2b$", "$2y$"))


def parse_users(text, allow_plain):
    """``"admin:$2b$...,viewer:$2b$...:ro"`` -> {name: AdminUser}."""
    users = {}
    for item in filter(None, (i.strip() for i in (text or "").split(","))):
        parts = item.split(":")
        read_only = len(parts) == 3 and parts[2] in ("ro", "read-only")
        if len(parts) == 3 and not read_only and parts[2] not in ("rw", "read-write"):
            raise ValueError(f"admin user {parts[0]!r}: role must be ro or rw")
        if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
            raise ValueError(f"admin user entry {item!r}: expected name:secret[:ro]")
        user = AdminUser(parts[0], parts[1], read_only)
        if not user.hashed and not allow_plain:
            raise ValueError(f"admin user {user.name!r}: the password must be a bcrypt "
                             "hash (plain passwords need --admin-allow-plain true)")
        users[user.name] = user
    return users


def generated_admin():
    """No user configured: one admin with a random password, logged once."""
    password = secrets.token_urlsafe(18)
    log.warn("no admin user configured: generated admin password {password!r} "
             "for user 'admin' (set --admin-users to choose your own)",
             password=password)
    return {"admin": AdminUser("admin", password)}


@implementer(ICredentialsChecker)
class UserChecker:
    credentialInterfaces = (credentials.IUsernamePassword,)

    def __init__(self, users, run_blocking=None):
        self.users = users
        if run_blocking is None:
            from twisted.internet.threads import deferToThread
            run_blocking = deferToThread
        self.run_blocking = run_blocking
        self._verified = set()

    def requestAvatarId(self, creds):
        user = self.users.get(creds.username.decode("utf-8", "replace"))
        if user is None:
            return defer.fail(error.UnauthorizedLogin())
        password = creds.password
        if not user.hashed:
            ok = hmac.compare_digest(password, user.secret.encode())
            return defer.succeed(user) if ok else defer.fail(error.UnauthorizedLogin())
        fingerprint = (user.name, hashlib.sha256(password).hexdigest(), user.secret)
        if fingerprint in self._verified:
            return defer.succeed(user)

        def checked(ok):
            if not ok:
                raise error.UnauthorizedLogin()
            self._verified.add(fingerprint)
            return user
        return defer.maybeDeferred(
            self.run_blocking, bcrypt.checkpw, password, user.secret.encode()
        ).addCallback(checked)


class LoginThrottle:
    """Per source address: after a few failed logins, make it wait, doubling.

    Password guessing then costs time instead of only a request, and a
    source that is waiting is refused before any (bcrypt) check runs, so
    parallel guesses gain nothing.  The table of sources is an LRU with a
    cap, so a flood of addresses costs bounded memory; a success or a quiet
    period forgets a source.
    """

    def __init__(self, clock, free=3, base=1.0, cap=8.0, forget_after=900.0,
                 max_sources=10_000):
        self.clock = clock
        self.free, self.base, self.cap = free, base, cap
        self.forget_after = forget_after
        self.max_sources = max_sources
        self._sources = OrderedDict()  # source -> (failures, last failure, until)

    def wait(self, source):
        """Seconds *source* must still wait before its next login is checked."""
        entry = self._sources.get(source)
        return 0.0 if entry is None else max(0.0, entry[2] - self.clock())

    def failed(self, source):
        """Count a failed login; return how long *source* must now wait."""
        now = self.clock()
        failures, last, _ = self._sources.pop(source, (0, now, now))
        if now - last > self.forget_after:
            failures = 0
        failures += 1
        delay = 0.0
        if failures >= self.free:
            delay = min(self.cap, self.base * 2 ** min(failures - self.free, 32))
        self._sources[source] = (failures, now, now + delay)
        while len(self._sources) > self.max_sources:
            self._sources.popitem(last=False)
        if failures == self.free:
            log.warn("admin API: {n} failed logins in a row from {source}; slowing "
                     "it down (up to {cap:g} s between attempts)", n=failures,
                     source=source, cap=self.cap)
        return delay

    def succeeded(self, source):
        self._sources.pop(source, None)

    def __len__(self):
        return len(self._sources)
