"""Staff users and their roles."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser
from django.db import models


class Role(models.TextChoices):
    ADMIN = "admin", "管理者"
    MARKETER = "marketer", "マーケター"
    OPERATOR = "operator", "オペレーター"
    ANALYST = "analyst", "アナリスト"


class User(AbstractUser):
    """A member of the shop's staff. The role decides every page and action they may use."""

    role = models.CharField("役割", max_length=16, choices=Role.choices, default=Role.OPERATOR)

    class Meta:
        verbose_name = "スタッフ"
        verbose_name_plural = "スタッフ"

    def save(self, *args: Any, **kwargs: Any) -> None:
        # Django admin is for admins only: keep its flag in step with the role so the two
        # can never disagree.
        self.is_staff = self.role == Role.ADMIN or self.is_superuser
        super().save(*args, **kwargs)

    def has_role(self, *roles: str) -> bool:
        return self.is_active and (self.role in roles or self.is_superuser)
