"""An erased (anonymised) customer takes no new activity: no 定期 and no points earned or spent,
through the API or any other caller of the services; refused as a profile update is (422
invalid_data, the same Japanese message), with nothing written."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from kizuna.accounts.models import ApiScope
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers import privacy
from kizuna.customers.models import Customer, TimelineEvent
from kizuna.loyalty.models import PointEntry
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import points_adjust, points_earn, points_expire_due, points_redeem
from kizuna.subscriptions.models import CycleKind, Subscription
from kizuna.subscriptions.services import subscription_create
from tests.factories import make_customer, make_order, make_product
from tests.test_api_common import ApiClient, assert_error, full_access_client, make_key
from tests.test_api_subscriptions import new_subscription

pytestmark = pytest.mark.django_db

STAFF = Actor.system("test-staff")
ERASED = "削除(匿名化)済み"


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


@pytest.fixture
def erased(api: ApiClient) -> Customer:
    """A customer with 300 points and an order, erased through the API by the DPO's key."""
    customer = make_customer()
    make_order(customer, number="E-1")
    points_earn(customer=customer, amount=300, acting_user=STAFF, reason="購入ポイント")
    dpo = ApiClient(make_key(ApiScope.PRIVACY, name="DPO")[1])
    done = dpo.post(
        f"/api/v1/customers/{customer.pk}/erase",
        {"reason": "受付 1", "confirm_customer_id": customer.pk},
    )
    assert done.status_code == 200, done.content
    return Customer.objects.get(pk=customer.pk)


def _written(customer: Customer) -> tuple[int, int, int, int]:
    return (
        Subscription.objects.filter(customer=customer).count(),
        PointEntry.objects.filter(customer=customer).count(),
        AuditLog.objects.filter(customer_id=customer.pk).count(),
        TimelineEvent.objects.filter(customer_id=customer.pk).count(),
    )


def test_api_refuses_a_subscription_and_points_for_an_erased_customer_as_a_profile_update(
    api: ApiClient, erased: Customer
) -> None:
    before = _written(erased)
    profile = assert_error(
        api.patch(f"/api/v1/customers/{erased.pk}", {"family_name": "鈴木"}), 422, "invalid_data"
    )
    assert ERASED in profile["message"]
    points = f"/api/v1/customers/{erased.pk}/points"
    refusals = [
        api.post("/api/v1/subscriptions", new_subscription(erased)),
        api.post(points, {"kind": "earn", "amount": 100, "reason": "購入ポイント"}),
        api.post(points, {"kind": "redeem", "amount": 100}),
        api.post(points, {"kind": "adjust", "amount": 50, "reason": "お詫び"}),
    ]
    for response in refusals:
        assert assert_error(response, 422, "invalid_data") == profile
    assert _written(erased) == before
    assert points_balance(erased) == 300


def test_points_left_on_an_erased_record_can_still_be_written_off(
    api: ApiClient, erased: Customer
) -> None:
    # Accounting: the shop may clear the points liability of an anonymous record.
    response = api.post(
        f"/api/v1/customers/{erased.pk}/points",
        {"kind": "adjust", "amount": -300, "reason": "削除(匿名化)による失効"},
    )
    assert response.status_code == 201, response.content
    assert response.json()["balance"] == 0


def test_the_services_refuse_every_caller(erased: Customer) -> None:
    before = _written(erased)
    product = make_product()
    terms = {"unit_price": 3980, "cycle_kind": CycleKind.DAYS, "cycle_days": 30}
    calls = [
        lambda c: subscription_create(
            customer=c,
            product=product,
            terms=terms,
            started_on=timezone.localdate(),
            acting_user=STAFF,
        ),
        lambda c: points_earn(customer=c, amount=10, acting_user=STAFF, reason=""),
        lambda c: points_redeem(customer=c, amount=10, acting_user=STAFF, reason=""),
        lambda c: points_adjust(customer=c, amount=10, acting_user=STAFF, reason="お詫び"),
    ]
    for call in calls:
        # an instance read before the erasure still names the person: the check reads the row
        stale = Customer.objects.get(pk=erased.pk)
        stale.family_name = "鈴木"
        with pytest.raises(ValidationError, match=r"削除\(匿名化\)済み"):
            call(stale)
    assert _written(erased) == before


def test_points_of_an_erased_record_still_expire(erased: Customer) -> None:
    entry = PointEntry.objects.get(customer=erased)
    assert entry.expires_on is not None
    written = points_expire_due(
        customer=erased, on=entry.expires_on + dt.timedelta(days=1), acting_user=STAFF
    )
    assert written is not None
    assert points_balance(erased) == 0
    assert privacy.is_erased(erased)
