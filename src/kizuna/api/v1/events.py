"""Behaviour events from the shop's site, in batches of up to 1,000.

Each event is checked on its own: good events are stored, bad ones are reported by their
position in the batch, so one malformed event does not cost the other 999. Customers are
found by their identities in one query per identity kind and the events are written with one
bulk insert, so a full batch costs a handful of queries.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Annotated, Any, Literal

import pydantic
from django.http import HttpRequest
from ninja import Router, Schema
from ninja.decorators import decorate_view
from pydantic import Field, WithJsonSchema

from kizuna.accounts.models import ApiScope
from kizuna.api.auth import ApiKeyAuth
from kizuna.api.errors import pydantic_fields
from kizuna.api.idempotency import OPENAPI_MARK, idempotent
from kizuna.api.schemas import Input, Payload, RequiredIdentitiesIn, Timestamp, chars
from kizuna.api.v1.responses import write_errors
from kizuna.commerce.models import Product
from kizuna.commerce.services import is_ahead
from kizuna.customers.models import BehaviourEvent, BehaviourKind, Identity, IdentityKind
from kizuna.customers.resolution import MATCH_ORDER
from kizuna.customers.services import normalize_identity

router = Router(tags=["行動イベント"])

MAX_EVENTS = 1000
FUTURE_EVENT = "発生日時が未来の日付です"


class EventIn(Input):
    """サイトでの顧客の行動1件。"""

    customer: RequiredIdentitiesIn = Field(description="誰の行動か(登録済みの顧客の識別子)")
    kind: Literal["page_view", "product_view", "cart_add", "checkout_start"] = Field(
        description="page_view: ページ閲覧 / product_view: 商品閲覧 / cart_add: カート追加 / "
        "checkout_start: 購入手続き開始"
    )
    occurred_at: Timestamp = Field(description="発生日時")
    product_code: Annotated[str, chars(64)] | None = Field(
        default=None, description="商品コード", examples=["SK-TR-01"]
    )
    url: Annotated[str, chars(500)] = Field(
        default="", description="URL", examples=["https://shop.example.jp/items/sk-tr-01"]
    )
    payload: Payload = Field(default_factory=dict)


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    """The schema with its local $refs replaced by what they point to (EventIn has no cycles)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            return _inline(defs[ref.removeprefix("#/$defs/")], defs)
        return {key: _inline(value, defs) for key, value in node.items() if key != "$defs"}
    if isinstance(node, list):
        return [_inline(item, defs) for item in node]
    return node


_RAW_EVENT_SCHEMA = EventIn.model_json_schema()
EVENT_SCHEMA = _inline(_RAW_EVENT_SCHEMA, _RAW_EVENT_SCHEMA.get("$defs", {}))


class EventBatchIn(Input):
    # Items are checked one by one in the handler, so the schema documents EventIn while the
    # envelope accepts anything per item (a bad item is reported, not fatal to the batch).
    events: list[Annotated[Any, WithJsonSchema(EVENT_SCHEMA)]] = Field(
        min_length=1, max_length=MAX_EVENTS, description=f"イベント(1〜{MAX_EVENTS}件)"
    )


class EventError(Schema):
    index: int = Field(description="events の中の位置(0から)")
    fields: dict[str, str] = Field(description="項目ごとの誤り")


class EventBatchOut(Schema):
    accepted: int = Field(description="保存した件数")
    rejected: int = Field(description="保存しなかった件数")
    errors: list[EventError] = Field(description="保存しなかったイベントとその理由")


def _customer_ids(events: dict[int, EventIn]) -> dict[int, int]:
    """Each event's customer id, by the strongest identity that is known (cart member ID,
    e-mail, phone, then LINE ID): one query per identity kind for the whole batch."""
    wanted: dict[IdentityKind, dict[int, str]] = defaultdict(dict)
    for index, event in events.items():
        for kind, value in event.customer.as_kinds().items():
            wanted[kind][index] = normalize_identity(kind, value)
    owners: dict[tuple[str, str], int] = {}
    for kind, keys in wanted.items():
        rows = Identity.objects.filter(kind=kind, value__in=set(keys.values()))
        owners.update(
            ((kind.value, value), customer_id)
            for value, customer_id in rows.values_list("value", "customer_id")
        )
    order = (*MATCH_ORDER, IdentityKind.LINE_USER)
    found: dict[int, int] = {}
    for index in events:
        for kind in order:
            key = wanted.get(kind, {}).get(index)
            if key is not None and (kind.value, key) in owners:
                found[index] = owners[(kind.value, key)]
                break
    return found


@router.post(
    "/events",
    response={200: EventBatchOut, **write_errors()},
    auth=ApiKeyAuth(ApiScope.EVENTS_WRITE),
    summary="行動イベントをまとめて送る",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def ingest_events(request: HttpRequest, payload: EventBatchIn) -> dict[str, Any]:
    """正しいイベントは保存し、誤りのあるイベントは位置(index)と理由を返します。
    顧客は登録済みの識別子で照合します。見つからない顧客のイベントは保存しません。
    発生日時が明日より先のイベント(注文の受注日時と同じく1日の余裕)も保存しません。"""
    errors: dict[int, dict[str, str]] = {}
    valid: dict[int, EventIn] = {}
    for index, item in enumerate(payload.events):
        try:
            valid[index] = EventIn.model_validate(item)
        except pydantic.ValidationError as exc:
            errors[index] = pydantic_fields(
                exc.errors(include_input=False), strip_source=False, root="event"
            )
    customer_ids = _customer_ids(valid)
    for index, event in valid.items():
        fields: dict[str, str] = {}
        if is_ahead(event.occurred_at):
            # As an order's ordered_at (FUTURE_SLACK): a day's slack for the site's clock; a
            # year typed wrong would become the customer's latest activity and could start a
            # scenario (cart abandonment) at the wrong time.
            fields["occurred_at"] = FUTURE_EVENT
        if index not in customer_ids:
            fields["customer"] = "この識別子の顧客が登録されていません"
        if fields:
            errors[index] = fields
    codes = {e.product_code for i, e in valid.items() if e.product_code and i not in errors}
    products = dict(Product.objects.filter(code__in=codes).values_list("code", "id"))
    rows = []
    for index, event in valid.items():
        if index in errors:
            continue
        extra: dict[str, Any] = {}
        if event.product_code and event.product_code not in products:
            # Kept in the payload, so an event for a product not yet in the catalogue is
            # not lost; segments can still read it.
            extra["product_code"] = event.product_code
        rows.append(
            BehaviourEvent(
                customer_id=customer_ids[index],
                kind=BehaviourKind(event.kind),
                occurred_at=event.occurred_at,
                product_id=products.get(event.product_code or ""),
                url=event.url,
                payload={**event.payload, **extra},
            )
        )
    BehaviourEvent.objects.bulk_create(rows, batch_size=500)
    return {
        "accepted": len(rows),
        "rejected": len(errors),
        "errors": [{"index": i, "fields": errors[i]} for i in sorted(errors)],
    }
