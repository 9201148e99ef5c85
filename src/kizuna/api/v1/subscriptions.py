"""定期 subscriptions: start, change (terms, pause, resume, cancel) and read."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from ninja import Path, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status
from pydantic import Field

from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.api.auth import ApiKeyAuth, key_actor
from kizuna.api.errors import not_found
from kizuna.api.idempotency import OPENAPI_MARK, idempotent
from kizuna.api.schemas import Date, Input, ObjectId, Yen, chars
from kizuna.api.v1.customers import writable_customer
from kizuna.api.v1.responses import customer_write_errors, read_errors, write_errors
from kizuna.commerce.models import ProductKind
from kizuna.commerce.services import product_ensure
from kizuna.subscriptions.models import CancelReason, Subscription, SubscriptionStatus
from kizuna.subscriptions.services import (
    cancelled_already,
    subscription_cancel,
    subscription_create,
    subscription_pause,
    subscription_resume,
    subscription_update,
)

router = Router(tags=["定期"])

CycleKindIn = Literal["days", "monthly_day"]
CycleDays = Annotated[int, Field(ge=7, le=180)]
MonthlyDay = Annotated[int, Field(ge=1, le=28)]
Quantity = Annotated[int, Field(ge=1, le=100)]
Commitment = Annotated[int, Field(ge=0, le=100)]
CancelReasonIn = Literal["surplus", "no_effect", "price", "skin", "switched", "moving", "other"]


class SubscriptionCreateIn(Input):
    customer_id: ObjectId = Field(description="顧客ID")
    product_code: Annotated[str, chars(64, min_length=1)] = Field(
        description="定期商品の商品コード(未登録なら商品を作ります)", examples=["SK-SUB-01"]
    )
    product_name: Annotated[str, chars(200)] = Field(
        default="", description="商品名(商品を新しく作るときに使います)", examples=["美容液 定期便"]
    )
    quantity: Quantity = Field(default=1, description="数量")
    unit_price: Yen = Field(description="定期価格(税込・円)")
    cycle_kind: CycleKindIn = Field(
        description="days: cycle_days 日ごと / monthly_day: 毎月 monthly_day 日"
    )
    cycle_days: CycleDays | None = Field(
        default=None, description="周期(日・7〜180)。cycle_kind が days のときだけ"
    )
    monthly_day: MonthlyDay | None = Field(
        default=None, description="毎月のお届け日(1〜28)。cycle_kind が monthly_day のときだけ"
    )
    started_on: Date = Field(description="開始日(今日から1年以内)", examples=["2026-05-01"])
    next_delivery_on: Date | None = Field(
        default=None, description="次回お届け予定日(今日以降・開始日以降。省略時は開始日)"
    )
    commitment_count: Commitment = Field(default=0, description="縛り回数(0: なし)")


class SubscriptionPatchIn(Input):
    """変える項目だけを送ります。休止は paused_until、再開は next_delivery_on、
    解約は cancel_reason(と cancel_note)と一緒に status を送ります。"""

    status: Literal["active", "paused", "cancelled"] | None = Field(
        default=None, description="active: 再開 / paused: 休止 / cancelled: 解約"
    )
    paused_until: Date | None = Field(default=None, description="休止期限(休止するとき必須)")
    cancel_reason: CancelReasonIn | None = Field(
        default=None, description="解約理由(解約するとき必須)"
    )
    cancel_note: Annotated[str, chars(1000)] = Field(default="", description="解約メモ")
    quantity: Quantity | None = None
    unit_price: Yen | None = None
    cycle_kind: CycleKindIn | None = None
    cycle_days: CycleDays | None = None
    monthly_day: MonthlyDay | None = None
    next_delivery_on: Date | None = Field(default=None, description="次回お届け予定日(今日以降)")
    commitment_count: Commitment | None = None


class SubscriptionOut(Schema):
    id: int
    customer_id: int
    product_code: str
    product_name: str
    quantity: int
    unit_price: int
    cycle_kind: str
    cycle_days: int | None
    monthly_day: int | None
    started_on: dt.date
    next_delivery_on: dt.date | None
    delivery_count: int
    commitment_count: int
    status: str
    paused_until: dt.date | None
    cancelled_on: dt.date | None
    cancel_reason: str


def subscription_out(sub: Subscription) -> dict[str, Any]:
    return {
        "id": sub.pk,
        "customer_id": sub.customer_id,
        "product_code": sub.product.code,
        "product_name": sub.product.name,
        "quantity": sub.quantity,
        "unit_price": sub.unit_price,
        "cycle_kind": sub.cycle_kind,
        "cycle_days": sub.cycle_days,
        "monthly_day": sub.monthly_day,
        "started_on": sub.started_on,
        "next_delivery_on": sub.next_delivery_on,
        "delivery_count": sub.delivery_count,
        "commitment_count": sub.commitment_count,
        "status": sub.status,
        "paused_until": sub.paused_until,
        "cancelled_on": sub.cancelled_on,
        "cancel_reason": sub.cancel_reason,
    }


def _subscription_or_404(subscription_id: int) -> Subscription:
    sub = Subscription.objects.select_related("product").filter(pk=subscription_id).first()
    if sub is None:
        raise not_found("定期")
    return sub


_TERMS = (
    "quantity",
    "unit_price",
    "cycle_kind",
    "cycle_days",
    "monthly_day",
    "next_delivery_on",
    "commitment_count",
)


@router.post(
    "/subscriptions",
    response={201: SubscriptionOut, **customer_write_errors()},
    auth=ApiKeyAuth(ApiScope.SUBSCRIPTIONS_WRITE),
    summary="定期を登録する",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def create_subscription(
    request: HttpRequest, payload: SubscriptionCreateIn
) -> Status[dict[str, Any]]:
    """他の顧客に統合された顧客の定期は登録できず 409(customer_merged、統合先の ID は
    merged_into)になります。個人データを削除(匿名化)済みの顧客には登録できず 422
    (invalid_data)です。"""
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    with transaction.atomic():
        customer = writable_customer(payload.customer_id, field="customer_id")
        if customer is None:
            raise ValidationError({"customer_id": "顧客が見つかりません"})
        product = product_ensure(
            code=payload.product_code,
            name=payload.product_name or payload.product_code,
            price=payload.unit_price,
            kind=ProductKind.SUBSCRIPTION,
        )
        sub = subscription_create(
            customer=customer,
            product=product,
            terms={name: getattr(payload, name) for name in _TERMS},
            started_on=payload.started_on,
            acting_user=key_actor(api_key),
        )
    return Status(201, subscription_out(_subscription_or_404(sub.pk)))


@router.patch(
    "/subscriptions/{subscription_id}",
    response={200: SubscriptionOut, **write_errors()},
    auth=ApiKeyAuth(ApiScope.SUBSCRIPTIONS_WRITE),
    summary="定期を変更・休止・再開・解約する",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def update_subscription(
    request: HttpRequest, subscription_id: Path[ObjectId], payload: SubscriptionPatchIn
) -> dict[str, Any]:
    """送った項目だけを変更します。状態の変更(休止・再開・解約)は、定期の画面と同じ
    ルールで行われます(例: 休止できるのは継続中の定期だけ)。"""
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    actor = key_actor(api_key)
    sub = _subscription_or_404(subscription_id)
    sent = payload.model_fields_set
    terms = {name: getattr(payload, name) for name in _TERMS if name in sent}
    _refuse_stray_status_fields(payload)
    with transaction.atomic():
        if payload.status is not None:
            sub = _change_status(sub, payload, terms, actor)
        if terms:
            sub = subscription_update(subscription=sub, changes=terms, acting_user=actor)
    return subscription_out(_subscription_or_404(subscription_id))


# The fields that go with one status change, and what to say when they come without it: a
# PATCH answers 200 only when it did what was sent, never while dropping part of it.
_STATUS_FIELDS = {
    "paused_until": ("paused", '休止期限は status: "paused" と一緒に指定してください'),
    "cancel_reason": ("cancelled", '解約理由は status: "cancelled" と一緒に指定してください'),
    "cancel_note": ("cancelled", '解約メモは status: "cancelled" と一緒に指定してください'),
}


def _refuse_stray_status_fields(payload: SubscriptionPatchIn) -> None:
    stray = {
        name: message
        for name, (status, message) in _STATUS_FIELDS.items()
        if getattr(payload, name) not in (None, "") and payload.status != status
    }
    if stray:
        raise ValidationError(stray)


def _change_status(
    sub: Subscription, payload: SubscriptionPatchIn, terms: dict[str, Any], actor: Any
) -> Subscription:
    """The status change sent; the status the 定期 already has is a change only when a field
    that goes with it differs (a new resume date for a paused one)."""
    if payload.status == "paused":
        if payload.paused_until is None:
            if sub.status == SubscriptionStatus.PAUSED:
                return sub
            raise ValidationError({"paused_until": "休止するときは休止期限を指定してください"})
        # On a paused 定期 this moves the resume date (or, the same date, changes nothing).
        return subscription_pause(subscription=sub, until=payload.paused_until, acting_user=actor)
    if payload.status == "active":
        if sub.status == SubscriptionStatus.ACTIVE:
            return sub  # a next_delivery_on sent with it is a change of terms
        next_delivery = terms.pop("next_delivery_on", None)
        if next_delivery is None:
            raise ValidationError(
                {"next_delivery_on": "再開するときは次回お届け予定日を指定してください"}
            )
        return subscription_resume(
            subscription=sub, next_delivery_on=next_delivery, acting_user=actor
        )
    if sub.status == SubscriptionStatus.CANCELLED:
        return _cancelled_as_sent(sub, payload)
    if payload.cancel_reason is None:
        raise ValidationError({"cancel_reason": "解約するときは解約理由を指定してください"})
    return subscription_cancel(
        subscription=sub,
        reason=CancelReason(payload.cancel_reason),
        note=payload.cancel_note,
        acting_user=actor,
    )


def _cancelled_as_sent(sub: Subscription, payload: SubscriptionPatchIn) -> Subscription:
    """A cancellation sent again (a retry) is answered as it stands when it asks for nothing
    else; a cancellation cannot be redone, so another reason or note is refused, saying when
    and why the 定期 was cancelled."""
    differs = {}
    if payload.cancel_reason is not None and payload.cancel_reason != sub.cancel_reason:
        differs["cancel_reason"] = "解約理由は変更できません"
    if payload.cancel_note and payload.cancel_note != sub.cancel_note:
        differs["cancel_note"] = "解約メモは変更できません"
    if differs:
        done = cancelled_already(sub)
        raise ValidationError({name: f"{done}。{why}" for name, why in differs.items()})
    return sub


@router.get(
    "/subscriptions/{subscription_id}",
    response={200: SubscriptionOut, **read_errors()},
    auth=ApiKeyAuth(ApiScope.SUBSCRIPTIONS_READ),
    summary="定期を1件取得する",
)
def get_subscription(request: HttpRequest, subscription_id: Path[ObjectId]) -> dict[str, Any]:
    return subscription_out(_subscription_or_404(subscription_id))
