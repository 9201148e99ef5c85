"""Points through the API: balance and ledger pages; earn, redeem and adjust by the rules."""

from __future__ import annotations

import datetime as dt

import pytest
from django.utils import timezone

from kizuna.core.audit import Actor
from kizuna.customers.models import Customer
from kizuna.loyalty.models import PointEntry
from kizuna.loyalty.services import points_earn, points_expiry
from tests.factories import make_customer, make_order
from tests.test_api_common import ApiClient, assert_error, full_access_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


SYSTEM = Actor.system("test")


@pytest.fixture
def customer() -> Customer:
    return make_customer()


def url(customer: Customer) -> str:
    return f"/api/v1/customers/{customer.pk}/points"


def test_balance_and_ledger_newest_first(api: ApiClient, customer: Customer) -> None:
    points_earn(customer=customer, amount=300, acting_user=SYSTEM, reason="初回")
    points_earn(customer=customer, amount=200, acting_user=SYSTEM, reason="レビュー")
    body = api.get(url(customer)).json()
    assert body["balance"] == 500
    assert [(e["seq"], e["amount"], e["balance_after"]) for e in body["entries"]] == [
        (2, 200, 500),
        (1, 300, 300),
    ]
    assert body["has_next"] is False


def test_ledger_pages(api: ApiClient, customer: Customer) -> None:
    for _ in range(51):
        points_earn(customer=customer, amount=1, acting_user=SYSTEM, reason="")
    first = api.get(url(customer)).json()
    second = api.get(url(customer), {"page": 2}).json()
    assert (len(first["entries"]), first["has_next"]) == (50, True)
    assert [e["seq"] for e in second["entries"]] == [1]
    assert second["has_next"] is False


def test_earn_redeem_adjust(api: ApiClient, customer: Customer) -> None:
    earned = api.post(url(customer), {"kind": "earn", "amount": 500, "reason": "キャンペーン"})
    assert earned.status_code == 201, earned.content
    redeemed = api.post(url(customer), {"kind": "redeem", "amount": 200})
    adjusted = api.post(url(customer), {"kind": "adjust", "amount": -50, "reason": "付与ミス"})
    assert [r.json()["balance"] for r in (earned, redeemed, adjusted)] == [500, 300, 250]
    assert adjusted.json()["entry"]["kind"] == "adjust"


def test_redeeming_more_than_the_balance_is_refused(api: ApiClient, customer: Customer) -> None:
    points_earn(customer=customer, amount=100, acting_user=SYSTEM, reason="")
    error = assert_error(api.post(url(customer), {"kind": "redeem", "amount": 101}), 422)
    assert "残高が足りません" in error["message"]
    assert PointEntry.objects.filter(customer=customer).count() == 1


def test_an_order_earns_once(api: ApiClient, customer: Customer) -> None:
    order = make_order(customer, number="5001")
    body = {"kind": "earn", "amount": 49, "order_number": "5001"}
    first = api.post(url(customer), body).json()
    second = api.post(url(customer), body).json()
    assert first["entry"]["seq"] == second["entry"]["seq"] == 1
    assert first["entry"]["order_number"] == order.number
    assert second["balance"] == 49


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"kind": "earn", "amount": 0}, None),
        ({"kind": "redeem", "amount": -5}, None),
        ({"kind": "gift", "amount": 5}, "kind"),
        ({"kind": "adjust", "amount": 5}, None),
        ({"kind": "earn", "amount": 5, "order_number": "no-such-order"}, "order_number"),
        ({"kind": "earn", "amount": 10**9}, "amount"),
    ],
)
def test_bad_point_requests(
    api: ApiClient, customer: Customer, body: dict[str, object], field: str | None
) -> None:
    error = assert_error(api.post(url(customer), body), 422)
    if field is not None:
        assert field in error["fields"]
    assert not PointEntry.objects.exists()


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        (
            {"kind": "earn", "amount": 0},
            {"amount": "付与・利用のポイント数は1以上で指定してください"},
        ),
        (
            {"kind": "redeem", "amount": -5},
            {"amount": "付与・利用のポイント数は1以上で指定してください"},
        ),
        (
            {"kind": "adjust", "amount": 0, "reason": "付与ミス"},
            {"amount": "調整のポイント数は0以外で指定してください(減らすときはマイナス)"},
        ),
        ({"kind": "adjust", "amount": 5}, {"reason": "調整するときは理由を指定してください"}),
    ],
)
def test_a_wrong_amount_or_missing_reason_is_named_on_its_field_in_japanese(
    api: ApiClient, customer: Customer, body: dict[str, object], fields: dict[str, str]
) -> None:
    error = assert_error(api.post(url(customer), body), 422, "invalid_request")
    assert error["fields"] == fields
    assert not PointEntry.objects.exists()


def test_an_adjust_that_adds_expires_on_the_given_date_or_like_earned_points(
    api: ApiClient, customer: Customer
) -> None:
    day = timezone.localdate() + dt.timedelta(days=60)
    chosen = api.post(
        url(customer),
        {"kind": "adjust", "amount": 30, "reason": "お詫び", "expires_on": day.isoformat()},
    )
    usual = api.post(url(customer), {"kind": "adjust", "amount": 20, "reason": "お詫び"})
    assert chosen.status_code == usual.status_code == 201, (chosen.content, usual.content)
    assert chosen.json()["entry"]["expires_on"] == day.isoformat()
    assert usual.json()["entry"]["expires_on"] == points_expiry().isoformat()


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (
            {"kind": "adjust", "amount": 30, "reason": "お詫び", "expires_on": "TODAY"},
            "invalid_data",
            "有効期限は明日以降の日付を指定してください",
        ),
        (
            {"kind": "adjust", "amount": -30, "reason": "訂正", "expires_on": "TOMORROW"},
            "invalid_data",
            "減算の調整には有効期限を指定できません",
        ),
        (
            {"kind": "earn", "amount": 30, "expires_on": "TOMORROW"},
            "invalid_request",
            "有効期限は調整(adjust)でだけ指定できます",
        ),
    ],
)
def test_an_expiry_that_cannot_apply_is_refused_on_its_field(
    api: ApiClient, customer: Customer, body: dict[str, object], status: str, message: str
) -> None:
    points_earn(customer=customer, amount=100, acting_user=SYSTEM, reason="購入")
    today = timezone.localdate()
    dates = {"TODAY": today, "TOMORROW": today + dt.timedelta(days=1)}
    body = {**body, "expires_on": dates[str(body["expires_on"])].isoformat()}
    error = assert_error(api.post(url(customer), body), 422, status)
    assert error["fields"] == {"expires_on": message}
    assert PointEntry.objects.filter(customer=customer).count() == 1


def test_unknown_customer_is_404(api: ApiClient) -> None:
    assert_error(api.get("/api/v1/customers/999999/points"), 404)
    assert_error(api.post("/api/v1/customers/999999/points", {"kind": "earn", "amount": 1}), 404)
