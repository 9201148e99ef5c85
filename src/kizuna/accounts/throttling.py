"""Login throttling on top of django-axes (RELIABILITY D4; settings in kizuna/settings.py).

Failed logins are counted in the database, per username + IP and per IP. Axes compares every
count with one limit; Kizuna gives the per-IP count a limit of its own (higher, because an
office's staff often share one IP), so `LoginThrottle` reports the login as over the limit as
soon as either count reaches its own limit.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from axes.handlers.database import AxesDatabaseHandler
from axes.handlers.proxy import AxesProxyHandler
from axes.helpers import get_cool_off, get_lockout_parameters
from axes.models import AccessAttempt
from django.conf import settings
from django.db import transaction
from django.db.models import Sum
from django.http import HttpRequest
from django.utils import timezone

from kizuna.core.audit import Actor, audit_record


class LoginThrottle(AxesDatabaseHandler):
    """Axes' database handler with a separate limit for the per-IP count."""

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        limit: int = settings.AXES_FAILURE_LIMIT
        parameters = get_lockout_parameters(request, credentials)
        counts = []
        for parameter, attempts in zip(
            parameters, self.get_user_attempts(request, credentials), strict=True
        ):
            count = attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            group_limit = (
                settings.KIZUNA_LOGIN_IP_FAILURE_LIMIT if parameter == "ip_address" else limit
            )
            if count >= group_limit:
                return max(count, limit)
            counts.append(count)
        # Below every group's own limit: report the count, capped so that a per-IP count
        # between the two limits never reads as a lockout.
        return min(max(counts, default=0), limit - 1)


def client_ip(request: HttpRequest) -> str:
    """The address failures are counted against.

    Behind KIZUNA_TRUSTED_PROXY_COUNT proxies the client is that many entries from the right of
    X-Forwarded-For (entries further left are whatever the client chose to send, so they are
    never trusted). Without proxies it is the connection's own address.
    """
    remote = str(request.META.get("REMOTE_ADDR", ""))
    proxies: int = settings.KIZUNA_TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [
        part.strip()
        for part in str(request.META.get("HTTP_X_FORWARDED_FOR", "")).split(",")
        if part.strip()
    ]
    if len(forwarded) < proxies:
        return remote
    return forwarded[-proxies]


@dataclass(frozen=True)
class FailedLogins:
    """Recent failures of one username from one address, for the admins' list."""

    attempt: AccessAttempt
    locked: bool
    locked_until: dt.datetime


def recent_failed_logins(limit: int = 100) -> list[FailedLogins]:
    """Failures still inside the cool-off window, newest first, each marked when it is locked."""
    cool_off = get_cool_off() or dt.timedelta(0)
    since = timezone.now() - cool_off
    rows = list(AccessAttempt.objects.filter(attempt_time__gte=since).order_by("-attempt_time"))
    per_ip: dict[str, int] = {}
    per_user_ip: dict[tuple[str, str], int] = {}
    for row in rows:
        ip, pair = row.ip_address or "", (row.username or "", row.ip_address or "")
        per_ip[ip] = per_ip.get(ip, 0) + row.failures_since_start
        per_user_ip[pair] = per_user_ip.get(pair, 0) + row.failures_since_start
    return [
        FailedLogins(
            attempt=row,
            locked=(
                per_user_ip[(row.username or "", row.ip_address or "")]
                >= settings.AXES_FAILURE_LIMIT
                or per_ip[row.ip_address or ""] >= settings.KIZUNA_LOGIN_IP_FAILURE_LIMIT
            ),
            locked_until=row.attempt_time + cool_off,
        )
        for row in rows[:limit]
    ]


@transaction.atomic
def unlock_login(*, attempt: AccessAttempt, acting_user: Any) -> int:
    """Forget the failures of this row's username (from anywhere) and of its IP (any username).

    Both, because either count may be the one that locks: clearing only the username + IP pair
    would leave its IP locked when the per-IP count is over its limit.
    """
    audit_record(
        actor=Actor.of(acting_user),
        action="login_lock.release",
        instance=attempt,
        customer_id=None,
        changes={
            "username": [attempt.username, None],
            "ip_address": [attempt.ip_address, None],
        },
    )
    count: int = AxesProxyHandler.reset_attempts(
        ip_address=attempt.ip_address, username=attempt.username, ip_or_username=True
    )
    return count
