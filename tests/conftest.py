"""Shared fixtures: one staff user per role, and the clients logged in as them.

Access tests follow healthchecks' owner / teammate / outsider pattern: for each page the roles
that may use it and the roles that may not are both exercised.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.core.cache import cache
from django.test import Client

from kizuna.accounts.models import Role, User
from tests.delivery_support import SENDER_ENV, SmtpServer
from tests.factories import make_user

# Playwright's sync API runs an event loop in the test thread; Django refuses ORM calls from
# a thread with a running loop unless told this is intended (it is: tests are synchronous).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Remove the workers' lock file beside the SQLite test database (Django drops the database
    itself but not this file, so every run would leave one in the data directory)."""
    from django.conf import settings

    test_name = settings.DATABASES["default"].get("TEST", {}).get("NAME")
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3") and test_name:
        Path(f"{test_name}.outbox-lock").unlink(missing_ok=True)


@pytest.fixture
def users(db: None) -> dict[Role, User]:
    return {role: make_user(role, username=f"{role.value}-user") for role in Role}


@pytest.fixture
def client_for(users: dict[Role, User]):  # type: ignore[no-untyped-def]
    def login(role: Role) -> Client:
        client = Client()
        client.force_login(users[role])
        return client

    return login


@pytest.fixture(autouse=True)
def _empty_cache() -> None:
    # The cache is per process and outlives each test's database; on SQLite a rolled-back
    # test hands out the same ids again, so a value cached for "run 1" must not leak.
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):  # type: ignore[no-untyped-def]
    # PBKDF2's deliberate slowness protects real passwords; in tests it only costs minutes.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def smtp(settings) -> Iterator[SmtpServer]:  # type: ignore[no-untyped-def]
    """A local SMTP server that the in-process worker sends to, with the shop's sender
    settings. (Tests whose worker is another process give it the server in its environment
    and define their own.)"""
    with SmtpServer() as server:
        settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
        settings.EMAIL_HOST = "127.0.0.1"
        settings.EMAIL_PORT = server.port
        settings.DEFAULT_FROM_EMAIL = SENDER_ENV["KIZUNA_MAIL_FROM"]
        settings.KIZUNA_PUBLIC_URL = SENDER_ENV["KIZUNA_PUBLIC_URL"]
        settings.KIZUNA_SENDER_NAME = SENDER_ENV["KIZUNA_SENDER_NAME"]
        settings.KIZUNA_SENDER_ADDRESS = SENDER_ENV["KIZUNA_SENDER_ADDRESS"]
        settings.KIZUNA_SENDER_CONTACT = SENDER_ENV["KIZUNA_SENDER_CONTACT"]
        yield server
