"""定期 through the API: start, change terms, pause, resume, cancel, read."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.utils import timezone

from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer, TimelineKind
from kizuna.subscriptions.models import Subscription, SubscriptionStatus
from tests.factories import make_customer
from tests.test_api_common import ApiClient, assert_error, full_access_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


@pytest.fixture
def customer() -> Customer:
    return make_customer()


def new_subscription(customer: Customer, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_id": customer.pk,
        "product_code": "SK-SUB-01",
        "product_name": "美容液 定期便",
        "unit_price": 3980,
        "cycle_kind": "days",
        "cycle_days": 30,
        "started_on": "2026-05-01",
        "commitment_count": 3,
    }
    body.update(overrides)
    return body


def _create(api: ApiClient, customer: Customer, **overrides: Any) -> dict[str, Any]:
    response = api.post("/api/v1/subscriptions", new_subscription(customer, **overrides))
    assert response.status_code == 201, response.content
    body: dict[str, Any] = response.json()
    return body


def test_start_a_subscription(api: ApiClient, customer: Customer) -> None:
    body = _create(api, customer)
    assert body["status"] == "active"
    assert body["next_delivery_on"] == "2026-05-01"
    assert (body["product_code"], body["cycle_days"]) == ("SK-SUB-01", 30)
    sub = Subscription.objects.get(pk=body["id"])
    assert AuditLog.objects.filter(action="subscription.create", entity_id=str(sub.pk)).exists()
    assert customer.timeline.filter(kind=TimelineKind.SUBSCRIPTION).exists()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cycle_days": None}, "cycle_days"),
        ({"cycle_kind": "monthly_day", "cycle_days": None}, "monthly_day"),
        ({"cycle_days": 3}, "cycle_days"),
        ({"customer_id": 999_999}, "customer_id"),
        ({"unit_price": -1}, "unit_price"),
    ],
)
def test_bad_subscriptions_are_refused(
    api: ApiClient, customer: Customer, change: dict[str, Any], field: str
) -> None:
    response = api.post("/api/v1/subscriptions", new_subscription(customer, **change))
    error = assert_error(response, 422)
    assert field in error["fields"]
    assert not Subscription.objects.exists()


def _days(n: int) -> str:
    return (timezone.localdate() + dt.timedelta(days=n)).isoformat()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"started_on": "2199-01-01"}, "started_on", "開始日は今日から1年以内の日付にしてください"),
        ({"next_delivery_on": "2020-12-01"}, "next_delivery_on", "今日以降"),
        (
            {"started_on": "2026-05-01", "next_delivery_on": "2026-04-01"},
            "next_delivery_on",
            "今日以降",
        ),
        (
            {"cycle_kind": "monthly_day", "monthly_day": 10, "cycle_days": 30},
            "cycle_days",
            "周期の種類が「毎月指定日」の定期には指定できません(monthly_day を指定してください)",
        ),
        (
            {"cycle_kind": "monthly_day", "cycle_days": 30},
            "monthly_day",
            "毎月のお届け日は1〜28日で指定してください",
        ),
        ({"cycle_kind": "days", "cycle_days": 30, "monthly_day": 10}, "monthly_day", "cycle_days"),
    ],
)
def test_dates_and_cycles_a_cart_would_not_send_are_refused(
    api: ApiClient, customer: Customer, change: dict[str, Any], field: str, message: str
) -> None:
    response = api.post("/api/v1/subscriptions", new_subscription(customer, **change))
    error = assert_error(response, 422)
    assert message in error["fields"][field]
    assert not Subscription.objects.exists()


def test_a_start_within_a_year_and_a_next_delivery_from_today_are_taken(
    api: ApiClient, customer: Customer
) -> None:
    body = _create(api, customer, started_on=_days(365), next_delivery_on=_days(365))
    assert (body["started_on"], body["next_delivery_on"]) == (_days(365), _days(365))
    today = _create(api, customer, started_on="2026-05-01", next_delivery_on=_days(0))
    assert today["next_delivery_on"] == _days(0)
    # moved over from another system: started in the past, next box due on the start day
    assert _create(api, customer)["next_delivery_on"] == "2026-05-01"


def test_a_next_delivery_before_the_start_is_refused(api: ApiClient, customer: Customer) -> None:
    body = new_subscription(customer, started_on=_days(30), next_delivery_on=_days(10))
    error = assert_error(api.post("/api/v1/subscriptions", body), 422, "invalid_data")
    assert error["fields"] == {"next_delivery_on": "次回お届け予定日は開始日以降にしてください"}


def test_a_next_delivery_in_the_past_is_refused_on_change_and_resume(
    api: ApiClient, customer: Customer
) -> None:
    sub = _create(api, customer, next_delivery_on=_days(3))
    url = f"/api/v1/subscriptions/{sub['id']}"
    error = assert_error(api.patch(url, {"next_delivery_on": "2020-12-01"}), 422, "invalid_data")
    assert error["fields"] == {"next_delivery_on": "次回お届け予定日は今日以降の日付にしてください"}
    assert api.patch(url, {"next_delivery_on": _days(0)}).status_code == 200
    api.patch(url, {"status": "paused", "paused_until": _days(30)})
    error = assert_error(api.patch(url, {"status": "active", "next_delivery_on": _days(-1)}), 422)
    assert set(error["fields"]) == {"next_delivery_on"}
    assert Subscription.objects.get(pk=sub["id"]).status == SubscriptionStatus.PAUSED


def test_a_stored_past_date_does_not_block_other_changes(
    api: ApiClient, customer: Customer
) -> None:
    # started 2026-05-01 without a next date: due that day, now past; a price change still works
    sub = _create(api, customer)
    response = api.patch(f"/api/v1/subscriptions/{sub['id']}", {"unit_price": 3500})
    assert response.status_code == 200, response.content


def test_changing_the_cycle_kind_drops_the_old_kinds_field(
    api: ApiClient, customer: Customer
) -> None:
    sub = _create(api, customer)
    url = f"/api/v1/subscriptions/{sub['id']}"
    body = api.patch(url, {"cycle_kind": "monthly_day", "monthly_day": 15}).json()
    assert (body["cycle_kind"], body["monthly_day"], body["cycle_days"]) == (
        "monthly_day",
        15,
        None,
    )
    audit = AuditLog.objects.get(action="subscription.update")
    assert audit.changes["cycle_days"] == [30, None]
    error = assert_error(api.patch(url, {"cycle_days": 30}), 422, "invalid_data")
    assert set(error["fields"]) == {"cycle_days"}
    body = api.patch(url, {"cycle_kind": "days", "cycle_days": 45}).json()
    assert (body["cycle_kind"], body["monthly_day"], body["cycle_days"]) == ("days", None, 45)


def test_change_terms_only_touches_what_was_sent(api: ApiClient, customer: Customer) -> None:
    sub = _create(api, customer)
    response = api.patch(f"/api/v1/subscriptions/{sub['id']}", {"quantity": 2, "cycle_days": 45})
    assert response.status_code == 200, response.content
    body = response.json()
    assert (body["quantity"], body["cycle_days"], body["unit_price"]) == (2, 45, 3980)
    audit = AuditLog.objects.get(action="subscription.update")
    assert audit.changes == {"quantity": [1, 2], "cycle_days": [30, 45]}


def test_pause_resume_and_cancel(api: ApiClient, customer: Customer) -> None:
    sub = _create(api, customer)
    url = f"/api/v1/subscriptions/{sub['id']}"
    until = (timezone.localdate() + dt.timedelta(days=30)).isoformat()
    paused = api.patch(url, {"status": "paused", "paused_until": until}).json()
    assert (paused["status"], paused["paused_until"]) == ("paused", until)
    again = (timezone.localdate() + dt.timedelta(days=10)).isoformat()
    resumed = api.patch(url, {"status": "active", "next_delivery_on": again}).json()
    assert (resumed["status"], resumed["next_delivery_on"]) == ("active", again)
    cancelled = api.patch(url, {"status": "cancelled", "cancel_reason": "surplus"}).json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["cancel_reason"] == "surplus"


def test_status_changes_need_their_fields(api: ApiClient, customer: Customer) -> None:
    sub = _create(api, customer)
    url = f"/api/v1/subscriptions/{sub['id']}"
    error = assert_error(api.patch(url, {"status": "paused"}), 422)
    assert set(error["fields"]) == {"paused_until"}
    error = assert_error(api.patch(url, {"status": "cancelled"}), 422)
    assert set(error["fields"]) == {"cancel_reason"}
    assert Subscription.objects.get(pk=sub["id"]).status == SubscriptionStatus.ACTIVE


def test_service_rules_hold_through_the_api(api: ApiClient, customer: Customer) -> None:
    sub = _create(api, customer)
    url = f"/api/v1/subscriptions/{sub['id']}"
    api.patch(url, {"status": "cancelled", "cancel_reason": "price"})
    error = assert_error(api.patch(url, {"quantity": 3}), 422, "invalid_data")
    assert "解約済み" in error["message"]


def test_a_failed_status_change_keeps_the_other_changes_out(
    api: ApiClient, customer: Customer
) -> None:
    sub = _create(api, customer)
    yesterday = (timezone.localdate() - dt.timedelta(days=1)).isoformat()
    response = api.patch(
        f"/api/v1/subscriptions/{sub['id']}",
        {"quantity": 5, "status": "paused", "paused_until": yesterday},
    )
    assert_error(response, 422)
    assert Subscription.objects.get(pk=sub["id"]).quantity == 1


def test_get_and_404(api: ApiClient, customer: Customer) -> None:
    sub = _create(api, customer)
    assert api.get(f"/api/v1/subscriptions/{sub['id']}").json() == sub
    assert_error(api.get("/api/v1/subscriptions/999999"), 404)


def _paused(api: ApiClient, customer: Customer, until: dt.date) -> str:
    sub = _create(api, customer)
    url = f"/api/v1/subscriptions/{sub['id']}"
    response = api.patch(url, {"status": "paused", "paused_until": until.isoformat()})
    assert response.status_code == 200, response.content
    return url


def test_a_paused_subscription_takes_a_new_resume_date(api: ApiClient, customer: Customer) -> None:
    first = timezone.localdate() + dt.timedelta(days=40)
    later = first + dt.timedelta(days=31)
    url = _paused(api, customer, first)
    moved = api.patch(url, {"status": "paused", "paused_until": later.isoformat()})
    assert moved.status_code == 200, moved.content
    body = moved.json()
    assert (body["status"], body["paused_until"]) == ("paused", later.isoformat())
    assert body["next_delivery_on"] == later.isoformat()
    audit = AuditLog.objects.filter(action="subscription.pause").order_by("pk").last()
    assert audit is not None
    assert audit.changes == {"paused_until": [first.isoformat(), later.isoformat()]}
    assert customer.timeline.filter(
        title__contains=f"{later.year}年{later.month}月{later.day}日まで"
    ).exists()
    # the same date again changes nothing and records nothing
    again = api.patch(url, {"status": "paused", "paused_until": later.isoformat()})
    assert again.json() == body
    assert AuditLog.objects.filter(action="subscription.pause").count() == 2
    # a new date must still be tomorrow or later, named on its field
    today = timezone.localdate().isoformat()
    error = assert_error(api.patch(url, {"status": "paused", "paused_until": today}), 422)
    assert set(error["fields"]) == {"paused_until"}
    assert Subscription.objects.get(pk=body["id"]).paused_until == later


def test_cancelling_again_with_another_reason_is_refused_not_ignored(
    api: ApiClient, customer: Customer
) -> None:
    sub = _create(api, customer)
    url = f"/api/v1/subscriptions/{sub['id']}"
    first = api.patch(url, {"status": "cancelled", "cancel_reason": "price"}).json()
    error = assert_error(
        api.patch(url, {"status": "cancelled", "cancel_reason": "skin"}), 422, "invalid_data"
    )
    today = timezone.localdate()
    assert set(error["fields"]) == {"cancel_reason"}
    assert f"{today.year}年{today.month}月{today.day}日に" in error["fields"]["cancel_reason"]
    assert "価格・経済的な理由" in error["fields"]["cancel_reason"]
    assert Subscription.objects.get(pk=sub["id"]).cancel_reason == "price"
    # the same cancellation again is answered as it stands (a retry), writing nothing
    same = api.patch(url, {"status": "cancelled", "cancel_reason": "price"})
    assert same.status_code == 200
    assert same.json() == first
    assert AuditLog.objects.filter(action="subscription.cancel").count() == 1


@pytest.mark.parametrize(
    "body",
    [
        {"paused_until": "2027-02-01"},
        {"status": "active", "next_delivery_on": "2027-02-01", "paused_until": "2027-02-01"},
        {"cancel_reason": "skin"},
        {"quantity": 2, "cancel_note": "電話で受付"},
    ],
)
def test_status_fields_without_their_status_are_refused_not_ignored(
    api: ApiClient, customer: Customer, body: dict[str, Any]
) -> None:
    sub = _create(api, customer)
    error = assert_error(api.patch(f"/api/v1/subscriptions/{sub['id']}", body), 422)
    sent = set(body) & {"paused_until", "cancel_reason", "cancel_note"}
    assert set(error["fields"]) == sent
    assert api.get(f"/api/v1/subscriptions/{sub['id']}").json() == sub


def test_pausing_with_today_names_paused_until(api: ApiClient, customer: Customer) -> None:
    sub = _create(api, customer)
    today = timezone.localdate().isoformat()
    response = api.patch(
        f"/api/v1/subscriptions/{sub['id']}", {"status": "paused", "paused_until": today}
    )
    error = assert_error(response, 422, "invalid_data")
    assert error["fields"] == {"paused_until": "休止期限は明日以降の日付にしてください"}
    assert Subscription.objects.get(pk=sub["id"]).status == SubscriptionStatus.ACTIVE
