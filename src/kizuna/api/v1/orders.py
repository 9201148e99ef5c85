"""Orders: create or bring up to date by order number (the same upsert as CSV and webhooks),
one at a time (`PUT /orders/{number}`) or up to BATCH_MAX per request (`POST /orders/batch`)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError
from django.db.models import Q
from django.http import HttpRequest
from django.utils import timezone
from ninja import Path, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status
from pydantic import Field

from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.api.auth import ApiKeyAuth, key_actor
from kizuna.api.errors import ApiError, ErrorDetail, django_fields
from kizuna.api.idempotency import OPENAPI_MARK, idempotent
from kizuna.api.schemas import CustomerIn, Date, Input, Timestamp, Yen, chars
from kizuna.api.v1.responses import write_errors
from kizuna.commerce.models import Order, OrderStatus, ProductKind, SalesChannel
from kizuna.commerce.services import (
    LineInput,
    OrderInput,
    OrderItem,
    OrderResult,
    UpsertOutcome,
    orders_upsert_many,
)
from kizuna.core import jp
from kizuna.core.audit import Actor
from kizuna.customers.merge import final_survivor_id
from kizuna.customers.models import Customer, Identity
from kizuna.customers.resolution import MATCH_ORDER, ResolveRequest
from kizuna.customers.services import normalize_identity

router = Router(tags=["注文"])

OrderNumber = Annotated[str, chars(64, min_length=1)]
# Orders per batch request: large enough that a cart's sync job sends few requests, small
# enough that one request holds its row locks briefly and its body stays well under 2.5 MB.
BATCH_MAX = 500


class LineIn(Input):
    product_code: Annotated[str, chars(64, min_length=1)] = Field(
        description="商品コード(未登録なら商品を作ります)", examples=["SK-TR-01"]
    )
    product_name: Annotated[str, chars(200, min_length=1)] = Field(
        description="商品名(販売時の名前)", examples=["美容液トライアル"]
    )
    unit_price: Yen = Field(description="単価(税込・円)")
    quantity: int = Field(ge=1, le=10_000, description="数量", examples=[1])
    product_kind: Literal["trial", "main", "subscription", "sample", "other"] = Field(
        default="other", description="商品区分(商品を新しく作るときに使います)"
    )


class OrderBody(Input):
    customer: CustomerIn
    ordered_at: Timestamp = Field(description="受注日時(明日より先の日時は受け付けません)")
    status: Literal["received", "shipped", "delivered", "cancelled", "returned"] = Field(
        default="received", description="状態。前の状態に戻ることはありません"
    )
    channel: Literal["web", "phone", "paper", "line", "subscription"] = Field(
        default="web", description="受注経路"
    )
    lines: list[LineIn] = Field(min_length=1, max_length=200, description="注文明細")
    discount: Yen = Field(default=0, description="値引き(円)")
    shipping_fee: Yen = Field(default=0, description="送料(円)")
    points_used: Yen = Field(default=0, description="利用ポイント")
    payment_method: Annotated[str, chars(32)] = Field(default="", description="支払方法")
    shipped_on: Date | None = Field(default=None, description="出荷日(明日まで)")
    delivered_on: Date | None = Field(default=None, description="お届け日(明日まで)")
    carrier: Annotated[str, chars(50)] = Field(default="", description="配送業者")
    tracking_number: Annotated[str, chars(50)] = Field(default="", description="伝票番号")
    cancelled_at: Timestamp | None = Field(default=None, description="キャンセル・返品日時")
    cancel_reason: Annotated[str, chars(200)] = Field(default="", description="キャンセル理由")
    updated_at: Timestamp | None = Field(
        default=None,
        description=(
            "カート側でこの注文が最後に変わった日時(毎回送ってください)。保存済みより古い更新は"
            "無視されます(outcome: stale)。updated_at 付きの内容が保存済みの注文への updated_at の"
            "ない更新は、状態を進めることと未入力の出荷日・お届け日だけを反映します"
            "(何も進まなければ stale)"
        ),
    )


class OrderOut(Schema):
    id: int
    number: str = Field(description="注文番号")
    customer_id: int
    customer_created: bool = Field(description="この注文で顧客を新しく作ったか")
    outcome: Literal["created", "updated", "unchanged", "stale"] = Field(
        description="created: 新規 / updated: 更新 / unchanged: 変化なし / stale: 古い更新のため無視"
    )
    status: str
    ordered_at: dt.datetime = Field(description="受注日時(日本時間、+09:00)")
    subtotal: int
    discount: int
    shipping_fee: int
    points_used: int
    total: int


class BatchOrderIn(OrderBody):
    number: OrderNumber = Field(description="注文番号", examples=["EC-2026-0001"])


class OrderBatchIn(Input):
    orders: list[BatchOrderIn] = Field(
        min_length=1,
        max_length=BATCH_MAX,
        description=f"注文(1〜{BATCH_MAX}件)。同じ注文番号が複数あれば、並び順に適用します",
    )


class BatchItemOut(Schema):
    number: str = Field(description="送られた注文番号")
    ok: bool = Field(description="登録・更新できたか")
    order: OrderOut | None = Field(description="結果(ok のとき)")
    error: ErrorDetail | None = Field(description="取り込めなかった理由(ok でないとき)")


class OrderBatchOut(Schema):
    results: list[BatchItemOut] = Field(description="送られた順の、注文ごとの結果")
    created: int = Field(description="新規")
    updated: int = Field(description="更新")
    unchanged: int = Field(description="変化なし")
    stale: int = Field(description="古い更新のため無視")
    failed: int = Field(description="取り込めなかった注文")


def order_input(number: str, body: OrderBody, source: str) -> OrderInput:
    return OrderInput(
        number=number,
        ordered_at=body.ordered_at,
        lines=tuple(
            LineInput(
                product_code=line.product_code,
                product_name=line.product_name,
                unit_price=line.unit_price,
                quantity=line.quantity,
                product_kind=ProductKind(line.product_kind),
            )
            for line in body.lines
        ),
        status=OrderStatus(body.status),
        channel=SalesChannel(body.channel),
        discount=body.discount,
        shipping_fee=body.shipping_fee,
        points_used=body.points_used,
        payment_method=body.payment_method,
        source=source,
        shipped_on=body.shipped_on,
        delivered_on=body.delivered_on,
        carrier=body.carrier,
        tracking_number=body.tracking_number,
        cancelled_at=body.cancelled_at,
        cancel_reason=body.cancel_reason,
        source_updated_at=body.updated_at,
    )


def ingest_orders(
    items: Sequence[tuple[str, OrderBody]],
    *,
    actor: Actor,
    source: str,
    customer_stale: Callable[[Customer], bool] | None = None,
) -> list[OrderResult]:
    """Upsert the orders, resolving the customer of each new one, in one bulk write (see
    kizuna.commerce.services.orders_upsert_many: it also settles creation races).
    `customer_stale`: see ingest_order."""
    return orders_upsert_many(
        [
            OrderItem(
                order_input(number, body, source),
                who=ResolveRequest(
                    identities=body.customer.identities.as_kinds(),
                    profile=body.customer.profile.changes(),
                    stale=customer_stale,
                    observed_at=body.ordered_at,
                ),
            )
            for number, body in items
        ],
        acting_user=actor,
        source=source,
    )


def customer_conflicts(items: Sequence[tuple[str, OrderBody]]) -> list[ApiError | None]:
    """For each item, the 409 to answer when it names a stored order whose identities belong
    to another existing customer. The upsert keeps a stored order's customer and never
    resolves its identities again, so such an order answered "unchanged" and the cart never
    learnt that the change of customer was dropped. Customers are compared by their final
    merge survivor: a customer merged since is the same customer. Identities nobody holds
    yet (a new address) are not a conflict: they name no other customer."""
    conflicts: list[ApiError | None] = [None] * len(items)
    stored = dict(
        Order.objects.filter(number__in={jp.normalize_identifier(n) for n, _ in items})
        .values_list("number", "customer_id")
        .iterator()
    )
    if not stored:
        return conflicts
    wanted: dict[int, list[tuple[str, str]]] = {}
    for index, (number, body) in enumerate(items):
        if jp.normalize_identifier(number) not in stored:
            continue
        try:
            keys = {
                kind: normalize_identity(kind, value)
                for kind, value in body.customer.identities.as_kinds().items()
                if value.strip()
            }
        except ValidationError:
            continue  # an unreadable identity matches no one
        # The kind that decides, as customer resolution matches: strongest first.
        ordered = sorted(keys, key=lambda k: MATCH_ORDER.index(k) if k in MATCH_ORDER else 99)
        wanted[index] = [(kind.value, keys[kind]) for kind in ordered]
    pairs = {pair for strongest_first in wanted.values() for pair in strongest_first}
    if not pairs:
        return conflicts
    lookup = Q()
    for kind, value in pairs:
        lookup |= Q(kind=kind, value=value)
    owners = {
        (kind, value): customer_id
        for kind, value, customer_id in Identity.objects.filter(lookup).values_list(
            "kind", "value", "customer_id"
        )
    }
    customers = Customer.objects.only("pk", "merged_into_id").in_bulk(
        {*owners.values(), *stored.values()}
    )

    def survivor(customer_id: int) -> int:
        return final_survivor_id(customers[customer_id]) or customer_id

    for index, strongest_first in wanted.items():
        owner = next((owners[pair] for pair in strongest_first if pair in owners), None)
        order_customer = survivor(stored[jp.normalize_identifier(items[index][0])])
        if owner is not None and survivor(owner) != order_customer:
            conflicts[index] = ApiError(
                409,
                "conflict",
                f"この注文は別の顧客(顧客ID {order_customer})に登録済みです。"
                "注文の顧客は変更できません",
            )
    return conflicts


def ingest_order(
    *,
    number: str,
    body: OrderBody,
    actor: Actor,
    source: str,
    field_prefix: str = "",
    customer_stale: Callable[[Customer], bool] | None = None,
) -> tuple[Order, UpsertOutcome, bool]:
    """One order (`PUT /orders/{number}`, webhooks): (order, outcome, customer created).
    A refused order raises ValidationError with its fields named as the client sent them
    (`field_prefix` is where the order sits in the request: "data." in a webhook event).
    `customer_stale` (kizuna.customers.resolution.ResolveRequest.stale): True when the
    order's customer identities are older than the existing customer they match; the order is
    still stored with that customer, and none of its identities is attached."""
    (result,) = ingest_orders(
        [(number, body)], actor=actor, source=source, customer_stale=customer_stale
    )
    if result.error is not None:
        _, fields = error_fields(result, prefix=field_prefix)
        raise ValidationError(fields or result.error.messages)
    assert result.order is not None  # noqa: S101 - set whenever there is no error
    assert result.outcome is not None  # noqa: S101 - likewise
    return result.order, result.outcome, result.customer_created


def error_fields(result: OrderResult, *, prefix: str = "") -> tuple[str, dict[str, str]]:
    """A refused item's message and {field: message}, fields named as the client sent them."""
    assert result.error is not None  # noqa: S101 - only called for refused items
    where = prefix + ("customer.profile." if result.customer_error else "")
    return django_fields(result.error, prefix=where)


def order_out(order: Order, outcome: UpsertOutcome, *, customer_created: bool) -> dict[str, Any]:
    return {
        "id": order.pk,
        "number": order.number,
        "customer_id": order.customer_id,
        "customer_created": customer_created,
        "outcome": outcome.value,
        "status": order.status,
        # In the shop's time zone whatever the outcome: a stored order read back from the
        # database is in UTC ("…Z"), one just written still carries the offset it was sent with.
        "ordered_at": timezone.localtime(order.ordered_at),
        "subtotal": order.subtotal,
        "discount": order.discount,
        "shipping_fee": order.shipping_fee,
        "points_used": order.points_used,
        "total": order.total,
    }


# Registered before PUT /orders/{number}, whose path would otherwise take "batch" as a number.
@router.post(
    "/orders/batch",
    response={200: OrderBatchOut, **write_errors()},
    auth=ApiKeyAuth(ApiScope.ORDERS_WRITE),
    summary="注文をまとめて登録・更新する",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def upsert_orders_batch(request: HttpRequest, payload: OrderBatchIn) -> dict[str, Any]:
    """注文を最大500件まとめて、1件ずつの `PUT /orders/{number}` と同じ規則で
    登録・更新します(カートの一括同期向け。1件ずつより大幅に速く書き込めます)。

    結果は注文ごとに送られた順で返します。内容の誤り(合計がマイナスなど)はその注文だけを
    取り込まず(`ok: false` と理由)、ほかの注文は取り込みます。項目の形式の誤り(必須項目の
    欠落など)はリクエスト全体を 422 で断り、何も書き込みません。登録済みの注文を別の顧客の
    識別子で送った注文は、その注文だけを `conflict` で断ります。`Idempotency-Key` は
    バッチ全体に対して働きます。注文番号 `batch` は1件ずつの PUT では使えません(この
    バッチで送ってください)。
    """
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    items = [(order.number, order) for order in payload.orders]
    conflicts = customer_conflicts(items)
    accepted = [item for item, conflict in zip(items, conflicts, strict=True) if conflict is None]
    ingested = iter(ingest_orders(accepted, actor=key_actor(api_key), source="api"))
    out: list[dict[str, Any]] = []
    counts = dict.fromkeys(("created", "updated", "unchanged", "stale", "failed"), 0)
    for (number, _), conflict in zip(items, conflicts, strict=True):
        if conflict is not None:
            error = {"code": conflict.code, "message": conflict.message, "fields": {}}
            out.append({"number": number, "ok": False, "order": None, "error": error})
            counts["failed"] += 1
            continue
        result = next(ingested)
        if result.error is not None:
            message, fields = error_fields(result)
            error = {"code": "invalid_data", "message": message, "fields": fields}
            out.append({"number": number, "ok": False, "order": None, "error": error})
            counts["failed"] += 1
        else:
            assert result.order is not None  # noqa: S101 - set whenever there is no error
            assert result.outcome is not None  # noqa: S101 - likewise
            order = order_out(
                result.order, result.outcome, customer_created=result.customer_created
            )
            out.append({"number": number, "ok": True, "order": order, "error": None})
            counts[result.outcome.value] += 1
    return {"results": out, **counts}


@router.put(
    "/orders/{number}",
    response={200: OrderOut, 201: OrderOut, **write_errors()},
    auth=ApiKeyAuth(ApiScope.ORDERS_WRITE),
    summary="注文を登録・更新する",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def upsert_order(
    request: HttpRequest, number: Path[OrderNumber], payload: OrderBody
) -> Status[dict[str, Any]]:
    """注文番号で注文を登録し、既にあれば最新の内容に更新します(新規は 201、それ以外は 200)。

    顧客は識別子(カート会員ID → メール → 電話の順)で照合し、見つからなければ
    `customer.profile` から作ります。同じ内容を何度送っても結果は同じで、状態が前に
    戻ることはありません。`updated_at` が保存済みより古い更新は無視されます(outcome: stale)。
    `updated_at` 付きの内容が保存済みの注文への `updated_at` のない更新は、状態を進めることと
    未入力の出荷日・お届け日だけを反映します(金額・明細は変えず、何も進まなければ stale)。
    登録済みの注文の顧客は変えられません。識別子が別の登録済み顧客のものなら 409
    (`conflict`)で断り、何も変えません(統合済みの顧客は統合先と同じ顧客とみなします)。
    """
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    (conflict,) = customer_conflicts([(number, payload)])
    if conflict is not None:
        raise conflict
    order, outcome, customer_created = ingest_order(
        number=number, body=payload, actor=key_actor(api_key), source="api"
    )
    status = 201 if outcome == UpsertOutcome.CREATED else 200
    return Status(status, order_out(order, outcome, customer_created=customer_created))
