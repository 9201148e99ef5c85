"""APPI requests through the API (customers.privacy): a full export of one customer and an
irreversible erasure, both only with the dedicated `privacy` scope, which no other scope implies.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.http import HttpRequest
from ninja import Path, Router, Schema
from ninja.decorators import decorate_view
from pydantic import Field

from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.api.auth import ApiKeyAuth, key_actor
from kizuna.api.errors import ApiError, CustomerConflictOut
from kizuna.api.idempotency import OPENAPI_MARK, idempotent
from kizuna.api.schemas import Input, ObjectId
from kizuna.api.v1.customers import customer_merged, customer_or_404
from kizuna.api.v1.responses import customer_write_errors, errors_for
from kizuna.customers import privacy

router = Router(tags=["個人データ(APPI)"])


class ExportOut(Schema):
    """The export document; docs/privacy.md lists every key and what it holds."""

    format: str = Field(description=f"常に {privacy.EXPORT_FORMAT}")
    version: int = Field(description="形式のバージョン")
    exported_at: str = Field(description="書き出した日時(ISO 8601)")
    customer_id: int
    customer: dict[str, Any] = Field(description="顧客情報(列名をキーとする)")
    merged_records: list[dict[str, Any]] = Field(description="この顧客に統合された記録")
    identities: list[dict[str, Any]]
    consents: list[dict[str, Any]]
    consent_events: list[dict[str, Any]]
    orders: list[dict[str, Any]] = Field(description="注文(lines・shipments・reversals を含む)")
    subscriptions: list[dict[str, Any]] = Field(description="定期購入(deliveries を含む)")
    points: list[dict[str, Any]]
    contacts: list[dict[str, Any]]
    behaviour_events: list[dict[str, Any]]
    messages: list[dict[str, Any]]
    timeline: list[dict[str, Any]]
    scores: list[dict[str, Any]]
    scenario_enrollments: list[dict[str, Any]]
    segment_memberships: list[dict[str, Any]]
    duplicate_candidates: list[dict[str, Any]]
    merges: list[dict[str, Any]]
    suppressions: list[dict[str, Any]]
    audit_log: list[dict[str, Any]]


class EraseIn(Input):
    reason: str = Field(
        min_length=1,
        max_length=privacy.REASON_MAX,
        description="削除の理由(請求の受付番号など)。監査ログに残るため個人情報は書かない",
    )
    confirm_customer_id: int = Field(
        description="取り違え防止のため、URLと同じ顧客IDをもう一度指定します"
    )


class EraseOut(Schema):
    customer_id: int
    erased_customer_ids: list[int] = Field(description="匿名化した記録(統合元を含む)")
    counts: dict[str, int] = Field(description="変更・削除した行数(種類ごと)")


def _api_key(request: HttpRequest) -> ApiKey:
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    return api_key


def _refused(exc: ValidationError) -> Exception:
    """An erasure or export the rules refuse: 409 when the record's state forbids it; a field
    error (the reason) goes to the usual 422 handler."""
    if hasattr(exc, "error_dict"):
        return exc
    return ApiError(409, "conflict", " ".join(exc.messages))


@router.get(
    "/customers/{customer_id}/export",
    response={200: ExportOut, **errors_for(400, 401, 403, 404, 422), 409: CustomerConflictOut},
    auth=ApiKeyAuth(ApiScope.PRIVACY),
    summary="顧客の個人データをすべて書き出す(APPI 開示請求)",
)
def export_customer(request: HttpRequest, customer_id: Path[ObjectId]) -> dict[str, Any]:
    """この顧客について保有するすべての記録を返します(統合された記録を含む)。書き出しは
    監査ログに記録されます。統合元の顧客IDを指定すると 409 です(統合先を指定してください)。"""
    customer = customer_or_404(customer_id)
    if customer.merged_into_id is not None:
        raise customer_merged(customer, hint="統合先を書き出してください(統合元の記録も含まれます)")
    try:
        return privacy.customer_export(customer, key_actor(_api_key(request)))
    except privacy.PrivacyError as exc:
        raise _refused(exc) from None


@router.post(
    "/customers/{customer_id}/erase",
    response={200: EraseOut, **customer_write_errors()},
    auth=ApiKeyAuth(ApiScope.PRIVACY),
    summary="顧客の個人データを削除(匿名化)する(APPI 削除請求)",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def erase_customer(
    request: HttpRequest, customer_id: Path[ObjectId], payload: EraseIn
) -> dict[str, Any]:
    """元に戻せません。氏名・住所・識別子・問い合わせ内容などを匿名化し、注文と金額・
    ポイント履歴・同意の証跡は残します。メール・電話はハッシュ値で配信停止リストに残ります。
    既に削除済み・継続中の定期購入がある・統合元の顧客 のときは 409 です。"""
    customer = customer_or_404(customer_id)
    if payload.confirm_customer_id != customer.pk:
        raise ApiError(
            422,
            "invalid_request",
            "入力内容に誤りがあります",
            {"confirm_customer_id": "URLの顧客IDと一致しません"},
        )
    if customer.merged_into_id is not None:
        # The service refuses it too (under its lock); checked here to name the final survivor.
        raise customer_merged(
            customer, hint="統合先を削除してください(統合元の記録もまとめて匿名化されます)"
        )
    try:
        report = privacy.customer_erase(
            customer=customer, acting_user=key_actor(_api_key(request)), reason=payload.reason
        )
    except privacy.PrivacyError as exc:
        raise _refused(exc) from None
    return {
        "customer_id": customer.pk,
        "erased_customer_ids": report.customer_ids,
        "counts": report.counts,
    }
