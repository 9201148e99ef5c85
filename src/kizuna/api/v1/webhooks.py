"""Webhooks the cart posts (order and customer events) and the e-mail provider posts (bounces
and complaints).

Authenticated by the HMAC signature of the raw body (kizuna.core.webhooks), not by an API key.
Each event is applied once whatever the number of deliveries (RELIABILITY I2), and an older
version never overwrites a newer one (I3): orders through `order_upsert`'s `updated_at` check,
customers through the times of the customer events already applied (an event without a time
does not overwrite a customer a dated event was applied to). Identities older than the customer
they match — a stale customer event's, a new order's placed before a customer event applied —
are not attached (the newest e-mail address is where messages go).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.http import HttpRequest
from ninja import Path, Router, Schema
from pydantic import BaseModel, ConfigDict, Field, model_validator

from kizuna.api.auth import WebhookSignatureAuth, webhook_actor
from kizuna.api.errors import django_fields
from kizuna.api.ingest import resolve_customer
from kizuna.api.schemas import (
    IDENTITY_FIELDS,
    ProfileFields,
    RequiredIdentitiesIn,
    Timestamp,
    chars,
    known_fields_only,
)
from kizuna.api.v1.orders import OrderBody, OrderNumber, ingest_order
from kizuna.api.v1.responses import errors_for
from kizuna.campaigns.suppression import notification_apply
from kizuna.core import webhooks
from kizuna.core.models import WebhookSource
from kizuna.core.races import retry_lost_race
from kizuna.customers.models import Customer, Identity, IdentityKind
from kizuna.customers.services import customer_update, normalize_identity

router = Router(tags=["Webhook"])

SourceSlug = Annotated[str, Field(pattern=r"^[-a-zA-Z0-9_]{1,50}$")]
EventId = Annotated[str, chars(200, min_length=1)]


class OrderEventData(OrderBody):
    number: OrderNumber = Field(description="注文番号", examples=["100234"])


class Envelope(BaseModel):
    # Carts add fields of their own to events; they are ignored rather than refused.
    # A plain pydantic model, not ninja's Schema: Schema reads any value by its attributes, so
    # a body that is not a JSON object ([1, 2]) was answered with "id, type and data are
    # required" instead of "send an object".
    model_config = ConfigDict(extra="ignore")

    @model_validator(mode="before")
    @classmethod
    def _ignore_carts_own_fields(cls, value: Any) -> Any:
        # Inside `data` too, at any depth (the order's customer, its profile, each line): a
        # cart sends its own fields there as well, and the models of `data` are the REST
        # API's, which refuse unknown fields. Only unknown keys go; known fields are
        # validated as strictly as in the REST API.
        field = cls.model_fields.get("data")
        if field is not None and isinstance(value, dict) and "data" in value:
            value = {**value, "data": known_fields_only(field.annotation, value["data"])}
        return value

    id: EventId = Field(
        description="イベントID(再送でも同じ値)。重複排除に使います", examples=["evt_01"]
    )
    type: Annotated[str, chars(64)] = Field(
        default="", description="イベントの種類", examples=["order.updated"]
    )


# The event types each endpoint applies. Every one carries the whole current state in `data`
# and is applied the same way (create or bring up to date); any other type is refused with
# 422 rather than guessed at ("order.deleted" applied as an update would be wrong).
OrderEventType = Literal["order.created", "order.updated"]
CustomerEventType = Literal["customer.created", "customer.updated"]


class OrderEvent(Envelope):
    type: OrderEventType = Field(
        description="イベントの種類: order.created(注文の作成)か order.updated(注文の変更)",
        examples=["order.updated"],
    )
    data: OrderEventData


class CustomerEventData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    identities: RequiredIdentitiesIn
    profile: ProfileFields = Field(
        description="新しい顧客なら family_name が必要。既存の顧客は送った項目だけ更新します"
    )
    updated_at: Timestamp | None = Field(
        default=None,
        description=(
            "カート側でこの顧客が最後に変わった日時(毎回送ってください)。反映済みのイベントより"
            "古いイベントと、updated_at 付きのイベントを反映済みの顧客への updated_at のない"
            "イベントは無視します(outcome: stale)"
        ),
    )


class CustomerEvent(Envelope):
    type: CustomerEventType = Field(
        description="イベントの種類: customer.created(会員登録)か customer.updated(会員情報の変更)",
        examples=["customer.updated"],
    )
    data: CustomerEventData


class WebhookOut(Schema):
    event_id: str
    duplicate: bool = Field(description="true: 受信済みのイベント(何も変更していません)")
    outcome: str = Field(
        description=(
            "created / updated(項目の変更か識別子の追加)/ unchanged / stale(古い更新のため無視)"
        )
    )
    customer_id: int | None
    order_number: str | None
    identities_not_attached: list[str] = Field(
        description=(
            "送った識別子のうち、他の顧客が持っているためこの顧客に付けなかったもの(項目名: "
            "email・phone・cart_member_id・line_user_id)。2人は同じ人かもしれないので名寄せ候補に"
            "入り、スタッフが画面で確かめます。duplicate・stale のときは空です"
        ),
        examples=[["email"]],
    )


_ERRORS = errors_for(400, 401, 413, 415, 422)


def _duplicate(source: WebhookSource, event_id: str) -> dict[str, Any]:
    previous = webhooks.webhook_event_previous(source=source, event_id=event_id)
    return {
        "event_id": event_id,
        "duplicate": True,
        "outcome": previous.outcome if previous else "",
        "customer_id": previous.customer_id if previous else None,
        "order_number": (previous.ref or None) if previous and previous.topic == "order" else None,
        "identities_not_attached": [],
    }


def _owners(identities: Mapping[IdentityKind, str]) -> dict[str, int]:
    """{field name ("email"…): id of the customer holding it} for the identities sent that a
    customer holds. Identities reach here validated, so each normalises."""
    names = {kind: name for name, kind in IDENTITY_FIELDS.items()}
    keys = {
        (kind, normalize_identity(kind, value)): names[kind] for kind, value in identities.items()
    }
    if not keys:
        return {}
    held = Q()
    for kind, key in keys:
        held |= Q(kind=kind, value=key)
    rows = Identity.objects.filter(held).values_list("kind", "value", "customer_id")
    return {keys[(IdentityKind(kind), key)]: owner for kind, key, owner in rows}


def _not_attached(owners: Mapping[str, int], customer_id: int) -> list[str]:
    """The identities sent that stay with another customer: resolution left them there and
    proposed the two records as duplicates, for staff to review."""
    return sorted(name for name, owner in owners.items() if owner != customer_id)


@router.post(
    "/webhooks/{source}/orders",
    response={200: WebhookOut, **_ERRORS},
    auth=WebhookSignatureAuth(),
    summary="注文イベントを受け取る(Webhook)",
)
def order_webhook(
    request: HttpRequest, source: Path[SourceSlug], payload: OrderEvent
) -> dict[str, Any]:
    """カートからの注文イベント。署名(X-Kizuna-Signature)とタイムスタンプ
    (X-Kizuna-Timestamp)が正しく、5分以内のものだけを受け付けます。同じイベントIDは
    何度届いても1回だけ反映し、2回目以降は `duplicate: true` を返します。"""
    sender: WebhookSource = request.auth  # type: ignore[attr-defined]
    data = payload.data
    with transaction.atomic():
        event = webhooks.webhook_event_claim(
            source=sender, event_id=payload.id, topic="order", source_updated_at=data.updated_at
        )
        if event is None:
            return _duplicate(sender, payload.id)

        old_identities: list[bool] = []  # the last answer (resolution may run again)

        def identities_stale(matched: Customer) -> bool:
            # A new order's customer identities are as of checkout. A customer event dated
            # after it (a changed e-mail address) was applied already: the order's address is
            # the old one and must not become the newest, where messages go. Locked first, as
            # the customer events lock it.
            Customer.objects.select_for_update().values_list("pk").get(pk=matched.pk)
            stale = webhooks.customer_known_after(customer_id=matched.pk, at=data.ordered_at)
            old_identities[:] = [stale]
            return stale

        order, outcome, _ = ingest_order(
            number=data.number,
            body=data,
            actor=webhook_actor(sender),
            source=f"webhook:{sender.slug}",
            field_prefix="data.",
            customer_stale=identities_stale,
        )
        webhooks.webhook_event_finish(
            event=event, customer_id=order.customer_id, ref=order.number, outcome=outcome.value
        )
        # Identities older than the customer were neither attached nor proposed: none listed.
        owners = {} if any(old_identities) else _owners(data.customer.identities.as_kinds())
    return {
        "event_id": payload.id,
        "duplicate": False,
        "outcome": outcome.value,
        "customer_id": order.customer_id,
        "order_number": order.number,
        "identities_not_attached": _not_attached(owners, order.customer_id),
    }


@router.post(
    "/webhooks/{source}/customers",
    response={200: WebhookOut, **_ERRORS},
    auth=WebhookSignatureAuth(),
    summary="顧客イベントを受け取る(Webhook)",
)
def customer_webhook(
    request: HttpRequest, source: Path[SourceSlug], payload: CustomerEvent
) -> dict[str, Any]:
    """カートからの会員登録・会員情報変更。識別子で顧客を照合し、いなければ作ります。"""
    sender: WebhookSource = request.auth  # type: ignore[attr-defined]
    data = payload.data
    actor = webhook_actor(sender)
    with transaction.atomic():
        event = webhooks.webhook_event_claim(
            source=sender, event_id=payload.id, topic="customer", source_updated_at=data.updated_at
        )
        if event is None:
            return _duplicate(sender, payload.id)
        changes = data.profile.changes()
        identities = data.identities.as_kinds()
        owners_before = _owners(identities)

        def stale(matched: Customer) -> bool:
            # Asked by resolution before it attaches anything, so an older event carrying the
            # customer's old e-mail address does not make it the newest again (messages go to
            # the newest). Locked first, so two events for one customer are compared and
            # applied one after the other.
            Customer.objects.select_for_update().values_list("pk").get(pk=matched.pk)
            return webhooks.customer_event_is_stale(
                customer_id=matched.pk, source_updated_at=data.updated_at, event=event
            )

        resolution = retry_lost_race(
            lambda: resolve_customer(
                identities=identities,
                profile=changes,
                actor=actor,
                source=f"webhook:{sender.slug}",
                field_prefix="data.profile.",
                stale=stale,
                # The event's identities as of its time (now, when the cart sends none).
                observed_at=data.updated_at,
            )
        )
        customer = Customer.objects.select_for_update().get(pk=resolution.customer.pk)
        if resolution.stale:
            # Dropped whole: no identity attached, no profile change, no duplicate proposed.
            outcome: CustomerOutcome = "stale"
            not_attached: list[str] = []
        else:
            owners = _owners(identities)
            # An identity the customer holds now and did not before was added by this event.
            added = any(
                owner == customer.pk and owners_before.get(name) != customer.pk
                for name, owner in owners.items()
            )
            outcome = _apply_customer_event(
                customer=customer,
                created=resolution.created,
                identity_added=added,
                changes=changes,
                actor=actor,
            )
            not_attached = _not_attached(owners, customer.pk)
        webhooks.webhook_event_finish(
            event=event, customer_id=customer.pk, ref=str(customer.pk), outcome=outcome
        )
    return {
        "event_id": payload.id,
        "duplicate": False,
        "outcome": outcome,
        "customer_id": customer.pk,
        "order_number": None,
        "identities_not_attached": not_attached,
    }


CustomerOutcome = Literal["created", "updated", "unchanged", "stale"]


def _apply_customer_event(
    *,
    customer: Customer,
    created: bool,
    identity_added: bool,
    changes: dict[str, Any],
    actor: Any,
) -> CustomerOutcome:
    """A fresh event (resolution found it not stale): its profile fields onto the customer.

    A stale event is dropped whole before this. That loses no opt-out (RELIABILITY S6): these
    events carry profile fields only, never consent; an opt-out comes by the unsubscribe link,
    and a bounce or complaint by the e-mail events webhook, neither of which checks any age.
    Were consent ever added to this event, its opt-out must be applied even when the rest is
    stale."""
    if created:
        return "created"
    if "family_name" in changes and not changes["family_name"]:
        raise ValidationError({"data.profile.family_name": "姓は空にできません"})
    before = customer.updated_at
    try:
        updated = customer_update(customer=customer, changes=changes, acting_user=actor)
    except ValidationError as exc:
        _, fields = django_fields(exc, prefix="data.profile.")
        raise ValidationError(fields or exc.messages) from None
    return "updated" if identity_added or updated.updated_at != before else "unchanged"


class EmailEventData(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal["bounce", "complaint"] = Field(
        description="bounce(不達)または complaint(迷惑メール報告)"
    )
    email: Annotated[str, chars(254, min_length=1)] = Field(
        description="対象のメールアドレス", examples=["hanako@example.jp"]
    )
    bounce_type: Literal["permanent", "transient"] = Field(
        default="permanent", description="bounce のみ。transient(一時的な不達)は無視します"
    )
    detail: Annotated[str, chars(500)] = Field(default="", description="診断メッセージなど")


class EmailEvent(Envelope):
    data: EmailEventData


class EmailEventOut(Schema):
    event_id: str
    duplicate: bool = Field(description="true: 受信済みのイベント(何も変更していません)")
    outcome: str = Field(
        description="added(配信停止に追加)/ already(登録済み)/ ignored(一時的な不達)"
    )


@router.post(
    "/webhooks/{source}/email-events",
    response={200: EmailEventOut, **_ERRORS},
    auth=WebhookSignatureAuth(),
    summary="メールのバウンス・苦情通知を受け取る(Webhook)",
)
def email_event_webhook(
    request: HttpRequest, source: Path[SourceSlug], payload: EmailEvent
) -> dict[str, Any]:
    """メール配信サービスからのバウンス(恒久的な不達)・苦情通知。署名とタイムスタンプの
    確認、イベントIDでの重複排除は注文イベントと同じです。対象のアドレスを配信停止リストに
    追加し(監査ログに記録)、以後そのアドレスへは取引連絡も含めて送信しません。"""
    sender: WebhookSource = request.auth  # type: ignore[attr-defined]
    with transaction.atomic():
        event = webhooks.webhook_event_claim(
            source=sender, event_id=payload.id, topic="email", source_updated_at=None
        )
        if event is None:
            previous = webhooks.webhook_event_previous(source=sender, event_id=payload.id)
            return {
                "event_id": payload.id,
                "duplicate": True,
                "outcome": previous.outcome if previous else "",
            }
        try:
            outcome = notification_apply(
                payload.data.model_dump(), acting_user=webhook_actor(sender)
            )
        except ValidationError as exc:
            # Named where it is in the event, as the other webhooks' errors are (data.…).
            message, fields = django_fields(exc)
            raise ValidationError(
                {
                    ("data.email" if name == "address" else f"data.{name}"): text
                    for name, text in fields.items()
                }
                or message
            ) from None
        # The address is not stored with the event (it is PII; the suppression row has it).
        webhooks.webhook_event_finish(event=event, customer_id=None, ref="", outcome=outcome)
    return {"event_id": payload.id, "duplicate": False, "outcome": outcome}
