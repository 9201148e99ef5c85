"""Shared fixtures: one staff user per role, and the clients logged in as them.

Access tests follow healthchecks' owner / teammate / outsider pattern: for each page the roles
that may use it and the roles that may not are both exercised.
"""

from __future__ import annotations

import os

import pytest
from django.core.cache import cache
from django.test import Client

from kizuna.accounts.models import Role, User
from tests.factories import make_user

# Playwright's sync API runs an event loop in the test thread; Django refuses ORM calls from
# a thread with a running loop unless told this is intended (it is: tests are synchronous).
os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")


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
