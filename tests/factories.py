"""Small builders for test data. Each returns saved rows with believable Japanese values."""

from __future__ import annotations

import datetime as dt
import itertools
from typing import Any

from django.utils import timezone

from kizuna.accounts.models import Role, User
from kizuna.commerce.models import Order, OrderLine, Product, ProductKind
from kizuna.core.audit import Actor
from kizuna.customers.models import (
    ConsentChannel,
    ConsentMethod,
    Customer,
    Identity,
    IdentityKind,
)
from kizuna.customers.services import consent_grant, consent_withdraw
from kizuna.subscriptions.models import CycleKind, Subscription, SubscriptionStatus

_seq = itertools.count(1)
PASSWORD = "kizuna-test-pass-1"


def make_user(role: Role, username: str | None = None) -> User:
    name = username or f"{role.value}{next(_seq)}"
    return User.objects.create_user(username=name, password=PASSWORD, role=role)


def make_customer(**fields: Any) -> Customer:
    values: dict[str, Any] = {
        "family_name": "山田",
        "given_name": "花子",
        "family_kana": "ヤマダ",
        "given_kana": "ハナコ",
        "postal_code": "1500002",
        "prefecture": 13,
        "address1": "渋谷区渋谷2-1-1",
        "registered_at": timezone.now() - dt.timedelta(days=100),
    }
    values.update(fields)
    return Customer.objects.create(**values)


def add_identity(customer: Customer, kind: IdentityKind, value: str, display: str = "") -> Identity:
    return Identity.objects.create(
        customer=customer, kind=kind, value=value, display_value=display or value
    )


def make_product(kind: ProductKind = ProductKind.MAIN, price: int = 4980) -> Product:
    n = next(_seq)
    return Product.objects.create(code=f"P-{n}", name=f"美容液 {n}", kind=kind, price=price)


def make_order(
    customer: Customer,
    *,
    number: str | None = None,
    product: Product | None = None,
    quantity: int = 1,
    ordered_at: dt.datetime | None = None,
) -> Order:
    product = product or make_product()
    amount = product.price * quantity
    order = Order.objects.create(
        number=number or f"T{next(_seq):08d}",
        customer=customer,
        ordered_at=ordered_at or timezone.now(),
        subtotal=amount,
        total=amount,
    )
    OrderLine.objects.create(
        order=order,
        product=product,
        product_name=product.name,
        unit_price=product.price,
        quantity=quantity,
        amount=amount,
    )
    return order


def make_subscription(customer: Customer, **fields: Any) -> Subscription:
    """A running subscription to a subscription product at its list price, every 30 days from
    today. Giving `monthly_day` alone makes it monthly (毎月N日), and a cancelled status gets the
    date and the empty next delivery that subscription_cancel leaves."""
    product = fields.pop("product", None) or make_product(ProductKind.SUBSCRIPTION, 3980)
    today = timezone.localdate()
    values: dict[str, Any] = {
        "customer": customer,
        "product": product,
        "unit_price": product.price,
        "started_on": today,
    }
    # A subscription has one cycle: a monthly one carries no day count.
    if "monthly_day" in fields:
        values["cycle_kind"] = CycleKind.MONTHLY_DAY
    else:
        values.update(cycle_kind=CycleKind.DAYS, cycle_days=30)
    values.update(fields)
    if values.get("status") == SubscriptionStatus.CANCELLED:
        values.setdefault("cancelled_on", today)
        values.setdefault("next_delivery_on", None)
    else:
        # The first box is due on the start day, as subscription_create sets it.
        values.setdefault("next_delivery_on", values["started_on"])
    return Subscription.objects.create(**values)


CONSENT_ACTOR = Actor.system("test")


def grant_consent(
    customer: Customer,
    at: dt.datetime | None = None,
    channel: ConsentChannel = ConsentChannel.EMAIL,
) -> None:
    """The customer subscribes on the shop's sign-up form at `at` (default: now)."""
    consent_grant(
        customer=customer,
        channel=channel,
        method=ConsentMethod.WEB_FORM,
        source_form="会員登録",
        wording_version="2025-01",
        acting_user=CONSENT_ACTOR,
        at=at,
    )


def withdraw_consent(
    customer: Customer, at: dt.datetime, channel: ConsentChannel = ConsentChannel.EMAIL
) -> None:
    """The customer leaves through an unsubscribe link at `at`."""
    consent_withdraw(
        customer=customer,
        channel=channel,
        method=ConsentMethod.UNSUBSCRIBE,
        acting_user=CONSENT_ACTOR,
        at=at,
    )
