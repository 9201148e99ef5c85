"""Points: the balance with the ledger a page at a time, and earning, spending, adjusting."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import HttpRequest
from ninja import Path, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status
from pydantic import Field, ValidationInfo, field_validator

from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.api.auth import ApiKeyAuth, key_actor
from kizuna.api.errors import not_found
from kizuna.api.idempotency import OPENAPI_MARK, idempotent
from kizuna.api.query import known_query
from kizuna.api.schemas import Date, Input, ObjectId, chars
from kizuna.api.v1.customers import writable_customer
from kizuna.api.v1.responses import customer_write_errors, read_errors
from kizuna.commerce.models import Order
from kizuna.customers.models import Customer
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import points_adjust, points_earn, points_redeem

router = Router(tags=["ポイント"])

ENTRIES_PER_PAGE = 50
MAX_POINTS = 10_000_000


class PointEntryOut(Schema):
    seq: int = Field(description="顧客ごとの連番")
    kind: str = Field(description="earn: 付与 / redeem: 利用 / expire: 失効 / adjust: 調整")
    amount: int = Field(description="増減(利用・失効はマイナス)")
    balance_after: int = Field(description="この履歴のあとの残高")
    occurred_at: dt.datetime
    expires_on: dt.date | None
    order_number: str | None
    reason: str


class PointsOut(Schema):
    customer_id: int
    balance: int = Field(description="現在の残高")
    page: int
    has_next: bool
    entries: list[PointEntryOut] = Field(description="新しい順")


class PointsPage(Schema):
    page: int = Field(default=1, ge=1, le=100_000, description="ページ番号(1ページ50件)")


class PointsIn(Input):
    kind: Literal["earn", "redeem", "adjust"] = Field(
        description="earn: 付与 / redeem: 利用 / adjust: 調整(理由必須・マイナス可)"
    )
    amount: int = Field(
        ge=-MAX_POINTS,
        le=MAX_POINTS,
        description="ポイント数。付与(earn)・利用(redeem)は1以上、調整(adjust)は0以外(マイナスで減算)",
        examples=[500],
    )
    reason: Annotated[str, chars(200)] = Field(
        default="",
        description="理由(adjust は必須)",
        examples=["初回購入特典"],
        validate_default=True,  # an adjust without a reason is named on this field
    )
    order_number: Annotated[str, chars(64)] | None = Field(
        default=None, description="関係する注文の番号(同じ注文への付与は1回だけ)"
    )
    expires_on: Date | None = Field(
        default=None,
        description=(
            "有効期限(YYYY-MM-DD、明日以降)。加算の調整(adjust でプラス)だけが指定でき、"
            "省略すると付与(earn)と同じ有効期限になります。この日まで使えます"
        ),
        examples=["2027-03-31"],
    )

    # Field validators, so each message is reported on its own field (fields.amount,
    # fields.reason); `kind` is declared before both, so it is in info.data once valid.
    @field_validator("amount")
    @classmethod
    def amount_fits_kind(cls, amount: int, info: ValidationInfo) -> int:
        kind = info.data.get("kind")
        if kind in ("earn", "redeem") and amount < 1:
            raise ValueError("付与・利用のポイント数は1以上で指定してください")
        if kind == "adjust" and amount == 0:
            raise ValueError("調整のポイント数は0以外で指定してください(減らすときはマイナス)")
        return amount

    @field_validator("reason")
    @classmethod
    def adjust_has_reason(cls, reason: str, info: ValidationInfo) -> str:
        if info.data.get("kind") == "adjust" and not reason.strip():
            raise ValueError("調整するときは理由を指定してください")
        return reason

    @field_validator("expires_on")
    @classmethod
    def only_an_adjust_takes_a_date(
        cls, expires_on: dt.date | None, info: ValidationInfo
    ) -> dt.date | None:
        # earn has the shop's fixed validity period; redeem takes no date
        if expires_on is not None and info.data.get("kind") in ("earn", "redeem"):
            raise ValueError("有効期限は調整(adjust)でだけ指定できます")
        return expires_on


class PointsResultOut(Schema):
    entry: PointEntryOut
    balance: int


def _customer_or_404(customer_id: int) -> Customer:
    customer = Customer.objects.filter(pk=customer_id).first()
    if customer is None:
        raise not_found("顧客")
    return customer


def entry_out(entry: PointEntry, order_number: str | None) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "kind": entry.kind,
        "amount": entry.amount,
        "balance_after": entry.balance_after,
        "occurred_at": entry.occurred_at,
        "expires_on": entry.expires_on,
        "order_number": order_number,
        "reason": entry.reason,
    }


@router.get(
    "/customers/{customer_id}/points",
    response={200: PointsOut, **read_errors()},
    auth=ApiKeyAuth(ApiScope.POINTS_READ),
    summary="ポイント残高と履歴を取得する",
)
@decorate_view(known_query(PointsPage))
def get_points(
    request: HttpRequest, customer_id: Path[ObjectId], query: Query[PointsPage]
) -> dict[str, Any]:
    customer = _customer_or_404(customer_id)
    offset = (query.page - 1) * ENTRIES_PER_PAGE
    entries = list(
        PointEntry.objects.filter(customer=customer)
        .select_related("order")
        .order_by("-seq")[offset : offset + ENTRIES_PER_PAGE + 1]
    )
    return {
        "customer_id": customer.pk,
        "balance": points_balance(customer),
        "page": query.page,
        "has_next": len(entries) > ENTRIES_PER_PAGE,
        "entries": [
            entry_out(e, e.order.number if e.order else None) for e in entries[:ENTRIES_PER_PAGE]
        ],
    }


@router.post(
    "/customers/{customer_id}/points",
    response={201: PointsResultOut, **customer_write_errors()},
    auth=ApiKeyAuth(ApiScope.POINTS_WRITE),
    summary="ポイントを付与・利用・調整する",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def change_points(
    request: HttpRequest, customer_id: Path[ObjectId], payload: PointsIn
) -> Status[dict[str, Any]]:
    """残高が足りない利用や調整は 422 になり、残高がマイナスになることはありません。
    同じ注文への付与は1回だけです(2回目は最初の付与を返します)。他の顧客に統合された
    顧客には書き込めず 409(customer_merged、統合先の ID は merged_into)になります。
    個人データを削除(匿名化)済みの顧客への付与・利用(と加算の調整)は 422(invalid_data)
    です。加算の調整は expires_on(明日以降)の日まで、省略すれば付与と同じ期間有効です。
    過去の日付や減算への expires_on は 422(invalid_data、fields.expires_on)です。"""
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    with transaction.atomic():
        customer = writable_customer(customer_id)
        if customer is None:
            raise not_found("顧客")
        return _change_points(customer, payload, key_actor(api_key))


def _change_points(customer: Customer, payload: PointsIn, actor: Any) -> Status[dict[str, Any]]:
    order = None
    if payload.order_number:
        order = Order.objects.filter(number=payload.order_number, customer=customer).first()
        if order is None:
            raise ValidationError({"order_number": "この顧客の注文が見つかりません"})
    kind = PointKind(payload.kind)
    if kind == PointKind.EARN:
        entry = points_earn(
            customer=customer,
            amount=payload.amount,
            acting_user=actor,
            reason=payload.reason,
            order=order,
        )
    elif kind == PointKind.REDEEM:
        entry = points_redeem(
            customer=customer,
            amount=payload.amount,
            acting_user=actor,
            reason=payload.reason,
            order=order,
        )
    else:
        entry = points_adjust(
            customer=customer,
            amount=payload.amount,
            acting_user=actor,
            reason=payload.reason,
            expires_on=payload.expires_on,
        )
    return Status(
        201,
        {
            "entry": entry_out(entry, order.number if order else None),
            "balance": points_balance(customer),
        },
    )
