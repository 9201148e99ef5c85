"""The staff login backend: Django's ModelBackend whose session lookup also reads the 2FA state.

The access middleware asks on every request whether the user still owes a 2FA step. Reading
that with the user row (one query, as before) keeps the pages' query counts unchanged.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.backends import ModelBackend
from django.db.models import Exists, OuterRef, Subquery
from django_otp.plugins.otp_totp.models import TOTPDevice

from kizuna.accounts.models import SecuritySettings, User


class StaffBackend(ModelBackend):
    def get_user(self, user_id: Any) -> User | None:
        confirmed = TOTPDevice.objects.filter(user=OuterRef("pk"), confirmed=True)
        policy = SecuritySettings.objects.filter(pk=SecuritySettings.SINGLETON_ID).values(
            "two_factor_policy"
        )[:1]
        user = (
            User.objects.annotate(
                has_two_factor=Exists(confirmed), two_factor_policy=Subquery(policy)
            )
            .filter(pk=user_id)
            .first()
        )
        if user is None or not self.user_can_authenticate(user):
            return None
        return user
