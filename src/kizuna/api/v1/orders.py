"""Orders: create or bring up to date by order number (the same upsert as CSV and webhooks)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from django.http import HttpRequest
from ninja import Path, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status
from pydantic import Field

from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.api.auth import ApiKeyAuth, key_actor
from kizuna.api.idempotency import OPENAPI_MARK, idempotent
from kizuna.api.ingest import resolve_customer, with_retries
from kizuna.api.schemas import CustomerIn, Input, Timestamp, Yen, chars
from kizuna.api.v1.responses import write_errors
from kizuna.commerce.models import Order, OrderStatus, ProductKind, SalesChannel
from kizuna.commerce.services import LineInput, OrderInput, UpsertOutcome, order_upsert
from kizuna.core.audit import Actor
from kizuna.customers.resolution import Resolution

router = Router(tags=["注文"])

OrderNumber = Annotated[str, chars(64, min_length=1)]


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
    ordered_at: Timestamp = Field(description="受注日時")
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
    shipped_on: dt.date | None = Field(default=None, description="出荷日")
    delivered_on: dt.date | None = Field(default=None, description="お届け日")
    carrier: Annotated[str, chars(50)] = Field(default="", description="配送業者")
    tracking_number: Annotated[str, chars(50)] = Field(default="", description="伝票番号")
    cancelled_at: Timestamp | None = Field(default=None, description="キャンセル・返品日時")
    cancel_reason: Annotated[str, chars(200)] = Field(default="", description="キャンセル理由")
    updated_at: Timestamp | None = Field(
        default=None,
        description="カート側でこの注文が最後に変わった日時。保存済みより古い更新は無視されます",
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
    ordered_at: dt.datetime
    subtotal: int
    discount: int
    shipping_fee: int
    points_used: int
    total: int


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


def ingest_order(
    *, number: str, body: OrderBody, actor: Actor, source: str
) -> tuple[Order, UpsertOutcome, Resolution]:
    """Resolve the customer and upsert the order in one transaction (see kizuna.api.ingest)."""
    data = order_input(number, body, source)

    def work() -> tuple[Order, UpsertOutcome, Resolution]:
        resolution = resolve_customer(
            identities=body.customer.identities.as_kinds(),
            profile=body.customer.profile.changes(),
            actor=actor,
            source=source,
            field_prefix="customer.profile.",
        )
        order, outcome = order_upsert(customer=resolution.customer, data=data, acting_user=actor)
        return order, outcome, resolution

    return with_retries(work)


def order_out(order: Order, outcome: UpsertOutcome, resolution: Resolution) -> dict[str, Any]:
    return {
        "id": order.pk,
        "number": order.number,
        "customer_id": order.customer_id,
        "customer_created": resolution.created and outcome == UpsertOutcome.CREATED,
        "outcome": outcome.value,
        "status": order.status,
        "ordered_at": order.ordered_at,
        "subtotal": order.subtotal,
        "discount": order.discount,
        "shipping_fee": order.shipping_fee,
        "points_used": order.points_used,
        "total": order.total,
    }


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
    """
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    order, outcome, resolution = ingest_order(
        number=number, body=payload, actor=key_actor(api_key), source="api"
    )
    status = 201 if outcome == UpsertOutcome.CREATED else 200
    return Status(status, order_out(order, outcome, resolution))
