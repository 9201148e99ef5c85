"""Customers: create, change, read and find (by e-mail, phone, cart member ID, LINE ID, kana).

A customer merged into another (customers.merge: `merged_into` set) is no longer written
through the API: every write that names one by id answers 409 `customer_merged` with the id
of the record it now lives in (`writable_customer`), so the caller updates the id it stored
instead of writing, unseen, to a record staff no longer see. Reads still answer, with
`merged_into`, and search leaves merged records out. Undoing the merge makes the record
writable again.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from ninja import Path, Query, Router, Schema
from ninja.decorators import decorate_view
from ninja.responses import Status
from pydantic import Field

from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.api.auth import ApiKeyAuth, key_actor
from kizuna.api.errors import ApiError, ErrorOut, django_fields, not_found
from kizuna.api.idempotency import OPENAPI_MARK, idempotent
from kizuna.api.query import known_query
from kizuna.api.schemas import (
    IDENTITY_FIELDS,
    IdentitiesIn,
    Input,
    ObjectId,
    ProfileFields,
    ProfileIn,
    chars,
)
from kizuna.api.v1.responses import customer_write_errors, read_errors, write_errors
from kizuna.core import jp
from kizuna.customers.merge import final_survivor_id
from kizuna.customers.models import (
    SENT_TO_NEWEST_KINDS,
    Customer,
    Identity,
    IdentityKind,
    newest_first,
)
from kizuna.customers.selectors import record_version
from kizuna.customers.services import (
    customer_create,
    customer_update,
    identity_add,
    normalize_identity,
)

router = Router(tags=["顧客"])

SEARCH_LIMIT_MAX = 100
_PHONE_KINDS = (IdentityKind.PHONE, IdentityKind.PBX_CALLER)


class IdentityOut(Schema):
    kind: str = Field(
        description="種類: email / phone / cart_member / line_user / pbx_caller / chat"
    )
    value: str = Field(description="値(入力どおりの表記)")
    send_to: bool = Field(
        description=(
            f"メッセージの送信先か。{' / '.join(k.value for k in SENT_TO_NEWEST_KINDS)} では、"
            "その種類のうち最後に確認された1件(メッセージはそこに送られます)が true、"
            "ほかは false。ほかの種類は常に false"
        )
    )


class CustomerOut(Schema):
    id: int
    family_name: str
    given_name: str
    family_kana: str
    given_kana: str
    company: str
    postal_code: str = Field(description="郵便番号(7桁の数字)")
    prefecture: int | None = Field(description="都道府県のJISコード(1〜47)")
    prefecture_name: str
    address1: str
    address2: str
    birthday: dt.date | None
    gender: str
    acquisition_channel: str
    member_status: str
    registered_at: dt.datetime
    identities: list[IdentityOut] = Field(
        description="識別子。種類ごとに、最後に確認されたものから並びます"
    )
    merged_into: int | None = Field(
        description=(
            "この顧客が統合された先の顧客ID(統合が重なっているときは最終的な統合先)。"
            "統合されていなければ null。統合された顧客への書き込みは 409 になります"
        )
    )
    created_at: dt.datetime
    updated_at: dt.datetime


class CustomerCreateIn(Input):
    identities: IdentitiesIn = Field(
        default_factory=IdentitiesIn, description="登録する識別子(他の顧客のものは登録できません)"
    )
    profile: ProfileIn


class CustomerSearchOut(Schema):
    results: list[CustomerOut]
    has_more: bool = Field(description="limit件より多く見つかったか")


def customer_out(customer: Customer) -> dict[str, Any]:
    # Grouped by kind, each kind newest first (a stable sort keeps newest_first's order), so
    # the first of a kind in SENT_TO_NEWEST_KINDS is the one messages go to.
    identities = sorted(newest_first(customer.identities.all()), key=lambda i: i.kind)
    first_of_kind: dict[str, Identity] = {}
    for identity in identities:
        first_of_kind.setdefault(identity.kind, identity)
    return {
        "id": customer.pk,
        "family_name": customer.family_name,
        "given_name": customer.given_name,
        "family_kana": customer.family_kana,
        "given_kana": customer.given_kana,
        "company": customer.company,
        "postal_code": customer.postal_code,
        "prefecture": customer.prefecture,
        "prefecture_name": customer.get_prefecture_display() if customer.prefecture else "",
        "address1": customer.address1,
        "address2": customer.address2,
        "birthday": customer.birthday,
        "gender": customer.gender,
        "acquisition_channel": customer.acquisition_channel,
        "member_status": customer.member_status,
        "registered_at": customer.registered_at,
        "identities": [
            {
                "kind": i.kind,
                "value": i.display_value or i.value,
                "send_to": i.kind in SENT_TO_NEWEST_KINDS and first_of_kind[i.kind] is i,
            }
            for i in identities
        ],
        "merged_into": final_survivor_id(customer),
        "created_at": customer.created_at,
        "updated_at": customer.updated_at,
    }


def customer_or_404(customer_id: int) -> Customer:
    customer = Customer.objects.prefetch_related("identities").filter(pk=customer_id).first()
    if customer is None:
        raise not_found("顧客")
    return customer


def customer_merged(
    customer: Customer, *, field: str | None = None, hint: str = "統合先の ID を使ってください"
) -> ApiError:
    """409 customer_merged for a customer merged away, naming the final survivor in the
    message and, for machines, in `merged_into`; `field` names where the id was sent in the
    body (not for an id in the URL)."""
    survivor = final_survivor_id(customer)
    message = f"この顧客は顧客 {survivor} に統合されています。{hint}"
    fields = {field: f"統合先の顧客 {survivor} を指定してください"} if field else None
    return ApiError(409, "customer_merged", message, fields, extra={"merged_into": survivor})


def writable_customer(customer_id: int, *, field: str | None = None) -> Customer | None:
    """The customer a write names, locked until the caller's transaction ends (so a merge
    running at the same time either waits for the write, and then takes what it wrote to
    the survivor, or has finished and is seen here); None when there is no such customer.
    Raises 409 customer_merged for a customer merged away. Call inside transaction.atomic."""
    customer = Customer.objects.select_for_update().filter(pk=customer_id).first()
    if customer is not None and customer.merged_into_id is not None:
        raise customer_merged(customer, field=field)
    return customer


def _api_key(request: HttpRequest) -> ApiKey:
    api_key: ApiKey = request.auth  # type: ignore[attr-defined]
    return api_key


@router.post(
    "/customers",
    response={201: CustomerOut, **write_errors()},
    auth=ApiKeyAuth(ApiScope.CUSTOMERS_WRITE),
    summary="顧客を登録する",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def create_customer(request: HttpRequest, payload: CustomerCreateIn) -> Status[dict[str, Any]]:
    """新しい顧客を登録します。識別子が他の顧客に登録済みのときは 422 になります
    (重複の統合はスタッフが画面で行います)。"""
    actor = key_actor(_api_key(request))
    with transaction.atomic():
        try:
            customer = customer_create(acting_user=actor, profile=payload.profile.changes())
        except ValidationError as exc:
            # Named where the field is in this request's body: profile.birthday, not birthday.
            message, fields = django_fields(exc, prefix="profile.")
            raise ValidationError(fields or message) from None
        for kind, value in payload.identities.as_kinds().items():
            try:
                identity_add(
                    customer=customer, kind=kind, value=value, acting_user=actor, source="api"
                )
            except ValidationError as exc:
                _, fields = django_fields(exc)
                raise ValidationError({_identity_field(kind): " ".join(fields.values())}) from None
    return Status(201, customer_out(customer_or_404(customer.pk)))


def _identity_field(kind: IdentityKind) -> str:
    name = next(field for field, k in IDENTITY_FIELDS.items() if k == kind)
    return f"identities.{name}"


def customer_etag(customer: Customer) -> str:
    """The customer's record version (customers.selectors.record_version) as an HTTP entity
    tag, so a PATCH sent with it in If-Match is refused when someone else changed the customer
    in between."""
    return f'"{record_version(customer)}"'


def _check_if_match(request: HttpRequest, customer: Customer) -> None:
    """412 precondition_failed when the request's If-Match names none of the customer's
    current version (`*` matches any). Without If-Match the PATCH applies as before."""
    header = request.headers.get("If-Match")
    if header is None:
        return
    sent = {tag.strip().removeprefix("W/") for tag in header.split(",")}
    if "*" in sent or customer_etag(customer) in sent:
        return
    raise ApiError(
        412,
        "precondition_failed",
        "この顧客は、取得した後に変更されています。取得し直して、変更を確かめてから送ってください",
    )


@router.patch(
    "/customers/{customer_id}",
    response={200: CustomerOut, **customer_write_errors(), 412: ErrorOut},
    auth=ApiKeyAuth(ApiScope.CUSTOMERS_WRITE),
    summary="顧客情報を変更する",
    openapi_extra={OPENAPI_MARK: True},
)
@decorate_view(idempotent)
def update_customer(
    request: HttpRequest,
    response: HttpResponse,
    customer_id: Path[ObjectId],
    payload: ProfileFields,
) -> dict[str, Any]:
    """送った項目だけを変更します。文字の項目に null を送ると空にします。変更は監査ログと
    顧客のタイムラインに記録されます。他の顧客に統合された顧客は変更できず 409
    (customer_merged、統合先の ID は merged_into)になります。

    取得(GET)の応答の `ETag` ヘッダーを `If-Match` ヘッダーに付けて送ると、その後に
    ほかの誰か(画面・取込・別の連携)がこの顧客を変更していたときは変更せず 412
    (precondition_failed)になります。`If-Match` がなければ、そのまま変更します。"""
    with transaction.atomic():
        customer = writable_customer(customer_id)
        if customer is None:
            raise not_found("顧客")
        _check_if_match(request, customer)
        changes = payload.changes()
        if "family_name" in changes and not changes["family_name"]:
            raise ValidationError({"family_name": "姓は空にできません"})
        customer_update(
            customer=customer, changes=changes, acting_user=key_actor(_api_key(request))
        )
    updated = customer_or_404(customer_id)
    response["ETag"] = customer_etag(updated)
    return customer_out(updated)


@router.get(
    "/customers/{customer_id}",
    response={200: CustomerOut, **read_errors()},
    auth=ApiKeyAuth(ApiScope.CUSTOMERS_READ),
    summary="顧客を1件取得する",
)
def get_customer(
    request: HttpRequest, response: HttpResponse, customer_id: Path[ObjectId]
) -> dict[str, Any]:
    """他の顧客に統合された顧客も返します。そのときは merged_into に統合先の顧客IDが
    入るので、保存している顧客IDをそちらに置き換えてください。応答の `ETag` ヘッダーは
    この顧客の版で、変更(PATCH)の `If-Match` に使えます。"""
    customer = customer_or_404(customer_id)
    response["ETag"] = customer_etag(customer)
    return customer_out(customer)


class CustomerSearch(Schema):
    email: Annotated[str, chars(254)] | None = Field(
        default=None, description="メールアドレス(完全一致)"
    )
    phone: Annotated[str, chars(30)] | None = Field(
        default=None, description="電話番号(完全一致・表記ゆれ可)"
    )
    cart_member_id: Annotated[str, chars(100)] | None = Field(
        default=None, description="カート会員ID(完全一致)"
    )
    line_user_id: Annotated[str, chars(100)] | None = Field(
        default=None, description="LINEユーザーID(完全一致)"
    )
    kana: Annotated[str, chars(50)] | None = Field(
        default=None, description="氏名カナの前方一致(ひらがな・半角カナも可)"
    )
    limit: int = Field(default=20, ge=1, le=SEARCH_LIMIT_MAX, description="最大件数")


@router.get(
    "/customers",
    response={200: CustomerSearchOut, **read_errors()},
    auth=ApiKeyAuth(ApiScope.CUSTOMERS_READ),
    summary="顧客を探す",
)
@decorate_view(known_query(CustomerSearch))
def search_customers(request: HttpRequest, filters: Query[CustomerSearch]) -> dict[str, Any]:
    """条件をすべて満たす顧客を返します(複数指定はAND)。メール・電話・IDは正規化して
    完全一致、カナは前方一致です。条件を1つ以上指定してください。他の顧客に統合された
    顧客は含みません(統合先が見つかります)。"""
    customers = _search(filters)
    found = list(customers[: filters.limit + 1])
    return {
        "results": [customer_out(c) for c in found[: filters.limit]],
        "has_more": len(found) > filters.limit,
    }


def _search(filters: CustomerSearch) -> QuerySet[Customer]:
    criteria: dict[str, tuple[IdentityKind, ...]] = {
        "email": (IdentityKind.EMAIL,),
        "phone": _PHONE_KINDS,
        "cart_member_id": (IdentityKind.CART_MEMBER,),
        "line_user_id": (IdentityKind.LINE_USER,),
    }
    # A record merged into another is found through the survivor, not on its own (as on the
    # customer search page): its identities moved there, but its name and kana stayed.
    customers = Customer.objects.filter(merged_into__isnull=True).prefetch_related("identities")
    used = False
    errors: dict[str, str] = {}
    for name, kinds in criteria.items():
        value = getattr(filters, name)
        if value is None or not value.strip():
            continue
        used = True
        try:
            key = normalize_identity(kinds[0], value)
        except ValidationError as exc:
            errors[name] = " ".join(exc.messages)
            continue
        matching = Identity.objects.filter(kind__in=kinds, value=key).values("customer_id")
        customers = customers.filter(pk__in=matching)
    if filters.kana is not None and filters.kana.strip():
        used = True
        key = jp.normalize_kana(filters.kana)
        # A prefix range, not LIKE: it walks the kana index (see customers.selectors).
        customers = customers.filter(kana_key__gte=key, kana_key__lt=key + "\U0010ffff")
    if errors:
        raise ValidationError(errors)
    if not used:
        raise ApiError(
            422,
            "invalid_request",
            "検索条件を1つ以上指定してください",
            {"query": "email、phone、cart_member_id、line_user_id、kana のいずれかが必要です"},
        )
    return customers.order_by("kana_key", "id")
