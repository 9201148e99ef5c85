"""Staff users and their roles."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractUser
from django.db import models

from kizuna.core.models import TimeStampedModel


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
        # A superuser may do everything whatever its role, so its role says so: the header
        # badge and the staff list showed オペレーター (the field's default) for the first
        # user made with `kizuna createsuperuser`. Here rather than in create_superuser, so a
        # user made superuser later (admin site, shell) follows too. To take the rights away,
        # clear is_superuser; the role can then be lowered.
        if self.is_superuser:
            self.role = Role.ADMIN
        # Django admin is for admins only: keep its flag in step with the role so the two
        # can never disagree.
        self.is_staff = self.role == Role.ADMIN or self.is_superuser
        super().save(*args, **kwargs)

    def has_role(self, *roles: str) -> bool:
        return self.is_active and (self.role in roles or self.is_superuser)

    # Django admin: an active 管理者 manages the staff accounts there (no delete: a leaver is
    # disabled, so their name stays on the audit trail) and reads the audit log, without
    # being a superuser. Everything else in Django admin stays the superuser's.
    def has_perm(self, perm: str, obj: Any = None) -> bool:
        if self.is_active and self.role == Role.ADMIN and perm in ADMIN_ROLE_PERMISSIONS:
            return True
        return super().has_perm(perm, obj)

    def has_module_perms(self, app_label: str) -> bool:
        if self.is_active and self.role == Role.ADMIN and app_label in ADMIN_ROLE_APPS:
            return True
        return super().has_module_perms(app_label)


ADMIN_ROLE_PERMISSIONS = frozenset(
    {"accounts.view_user", "accounts.add_user", "accounts.change_user", "core.view_auditlog"}
)
ADMIN_ROLE_APPS = frozenset(perm.partition(".")[0] for perm in ADMIN_ROLE_PERMISSIONS)


class ApiScope(models.TextChoices):
    """What an API key may do. A key carries only the scopes its integration needs."""

    CUSTOMERS_READ = "customers:read", "顧客の参照"
    CUSTOMERS_WRITE = "customers:write", "顧客の登録・変更"
    ORDERS_WRITE = "orders:write", "注文の登録・更新"
    SUBSCRIPTIONS_READ = "subscriptions:read", "定期の参照"
    SUBSCRIPTIONS_WRITE = "subscriptions:write", "定期の登録・変更"
    POINTS_READ = "points:read", "ポイントの参照"
    POINTS_WRITE = "points:write", "ポイントの付与・利用・調整"
    EVENTS_WRITE = "events:write", "行動イベントの送信"
    ONSITE_READ = "onsite:read", "サイト内メッセージの取得"
    ANALYTICS_READ = "analytics:read", "顧客分析の参照"
    # APPI requests (customers.privacy): a full export and an irreversible erasure. Never implied
    # by customers:read/write; an admin grants it to the DPO's integration only.
    PRIVACY = "privacy", "個人データの書き出し・削除(APPI)"


class ApiKey(TimeStampedModel):
    """A credential for the REST API, created by an admin for one integration (cart, LINE…).

    Only the SHA-256 of the key is stored: the key itself is shown once, when it is created.
    The key has 256 bits of randomness, so a plain hash is enough (no salt or slow hash is
    needed against guessing) and it can be looked up by an index on every request.
    """

    name = models.CharField("名前", max_length=100)
    prefix = models.CharField("キーの先頭", max_length=16)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField("権限", default=list)
    created_by = models.ForeignKey(
        User, on_delete=models.SET_NULL, null=True, related_name="+", verbose_name="作成者"
    )
    last_used_at = models.DateTimeField("最終利用日時", null=True, blank=True)
    revoked_at = models.DateTimeField("失効日時", null=True, blank=True)
    revoked_by = models.ForeignKey(
        User,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        verbose_name="失効させた人",
    )

    class Meta:
        verbose_name = "APIキー"
        verbose_name_plural = "APIキー"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.name}({self.prefix}…)"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes

    def scope_labels(self) -> list[str]:
        return [ApiScope(scope).label for scope in ApiScope if scope in self.scopes]


class TwoFactorPolicy(models.TextChoices):
    """Who must use TOTP two-factor authentication (RELIABILITY D4)."""

    OPTIONAL = "optional", "任意(各自がセキュリティ設定で有効にする)"
    ADMINS = "admins", "管理者は必須"
    ALL = "all", "全スタッフ必須"


class SecuritySettings(models.Model):
    """The shop's login rules: one row (pk=1), edited by admins on セキュリティ管理.

    A database row rather than an environment variable so that an admin can require two-factor
    authentication from the screen, and the change is audited like any other.
    """

    SINGLETON_ID = 1

    two_factor_policy = models.CharField(
        "2段階認証",
        max_length=16,
        choices=TwoFactorPolicy.choices,
        default=TwoFactorPolicy.OPTIONAL,
    )
    updated_at = models.DateTimeField("更新日時", auto_now=True)

    class Meta:
        verbose_name = "セキュリティ設定"
        verbose_name_plural = "セキュリティ設定"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="security_settings_singleton"),
        ]

    def __str__(self) -> str:
        return "セキュリティ設定"

    def save(self, *args: Any, **kwargs: Any) -> None:
        self.pk = self.SINGLETON_ID
        super().save(*args, **kwargs)

    @classmethod
    def load(cls) -> SecuritySettings:
        row, _ = cls.objects.get_or_create(pk=cls.SINGLETON_ID)
        return row

    def requires_two_factor(self, user: User) -> bool:
        if self.two_factor_policy == TwoFactorPolicy.ALL:
            return True
        return self.two_factor_policy == TwoFactorPolicy.ADMINS and (
            user.role == Role.ADMIN or user.is_superuser
        )
