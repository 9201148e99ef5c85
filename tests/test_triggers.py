"""One test per trigger: who enters a scenario, for which occurrence, and who does not."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from kizuna.campaigns.automation import segments, triggers
from kizuna.campaigns.automation.models import Enrollment, Scenario
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.services import ScenarioError, scenario_save
from kizuna.campaigns.models import OutboxMessage
from kizuna.commerce.models import OrderStatus, ProductKind, Shipment
from kizuna.customers.models import BehaviourEvent, BehaviourKind, MemberStatus, TimelineEvent
from kizuna.loyalty.services import points_earn, points_redeem
from kizuna.subscriptions.models import (
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)
from tests.factories import make_customer, make_order, make_product, make_subscription
from tests.test_scenarios_kit import STAFF, jst, one, scenario, segment

pytestmark = pytest.mark.django_db
START = jst(2026, 5, 1)


def enrolled(s: Scenario) -> dict[int, str]:
    return dict(Enrollment.objects.filter(scenario=s).values_list("customer_id", "occurrence"))


def test_signup_enrolls_new_members_only() -> None:
    # given
    s = scenario(trigger={"kind": "signup"}, activated_at=START)
    member = make_customer(registered_at=jst(2026, 5, 2, 9))
    make_customer(registered_at=jst(2026, 5, 2, 9), member_status=MemberStatus.GUEST)
    make_customer(registered_at=jst(2026, 4, 30, 9))  # before the scenario started
    # when
    tick(jst(2026, 5, 2, 10))
    # then
    assert enrolled(s) == {member.pk: "signup"}
    assert OutboxMessage.objects.get().customer_id == member.pk


def test_first_purchase_enrolls_the_first_order_only() -> None:
    s = scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    newcomer, regular = make_customer(), make_customer()
    make_order(regular, ordered_at=jst(2026, 3, 1))
    first = make_order(newcomer, ordered_at=jst(2026, 5, 2, 9))
    make_order(regular, ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    assert enrolled(s) == {newcomer.pk: f"order:{first.pk}"}
    assert Enrollment.objects.get().order_id == first.pk


def test_first_purchase_can_be_narrowed_to_trial_products() -> None:
    s = scenario(trigger={"kind": "first_purchase", "product_kind": "trial"}, activated_at=START)
    trial_buyer, main_buyer = make_customer(), make_customer()
    make_order(
        trial_buyer, product=make_product(ProductKind.TRIAL, 980), ordered_at=jst(2026, 5, 2)
    )
    make_order(main_buyer, product=make_product(ProductKind.MAIN), ordered_at=jst(2026, 5, 2))
    tick(jst(2026, 5, 2, 10))
    assert list(enrolled(s)) == [trial_buyer.pk]


def test_nth_purchase_counts_only_orders_that_happened() -> None:
    s = scenario(trigger={"kind": "nth_purchase", "n": 2}, activated_at=START)
    customer = make_customer()
    make_order(customer, ordered_at=jst(2026, 4, 1))
    cancelled = make_order(customer, ordered_at=jst(2026, 4, 20))
    cancelled.status = OrderStatus.CANCELLED
    cancelled.save()
    second = make_order(customer, ordered_at=jst(2026, 5, 3))
    make_order(customer, ordered_at=jst(2026, 5, 4))  # the third: not this scenario's
    tick(jst(2026, 5, 4, 12))
    assert enrolled(s) == {customer.pk: f"order:{second.pk}"}


@pytest.mark.parametrize(("kind", "prefix"), [("shipment", "shipment"), ("delivery", "delivery")])
def test_shipment_and_delivery_enroll_on_their_jst_date(kind: str, prefix: str) -> None:
    s = scenario(trigger={"kind": kind}, activated_at=START)
    customer = make_customer()
    order = make_order(customer, ordered_at=jst(2026, 5, 1, 12))
    shipment = Shipment.objects.create(
        order=order, shipped_on=dt.date(2026, 5, 2), delivered_on=dt.date(2026, 5, 4)
    )
    tick(jst(2026, 5, 2, 23, 59))
    assert enrolled(s) == ({customer.pk: f"{prefix}:{shipment.pk}"} if kind == "shipment" else {})
    tick(jst(2026, 5, 4, 0, 1))
    assert enrolled(s) == {customer.pk: f"{prefix}:{shipment.pk}"}
    enrollment = Enrollment.objects.get()
    assert enrollment.order_id == order.pk
    expected_day = dt.date(2026, 5, 2) if kind == "shipment" else dt.date(2026, 5, 4)
    assert enrollment.anchor_date == expected_day


def test_cart_abandonment_waits_n_hours_and_skips_buyers() -> None:
    s = scenario(trigger={"kind": "cart_abandonment", "hours": 3}, activated_at=START)
    product = make_product()
    abandoner, buyer, browser = make_customer(), make_customer(), make_customer()
    for customer in (abandoner, buyer):
        BehaviourEvent.objects.create(
            customer=customer,
            kind=BehaviourKind.CART_ADD,
            occurred_at=jst(2026, 5, 2, 10),
            product=product,
        )
    last = BehaviourEvent.objects.create(
        customer=abandoner, kind=BehaviourKind.CHECKOUT_START, occurred_at=jst(2026, 5, 2, 10, 5)
    )
    BehaviourEvent.objects.create(
        customer=browser, kind=BehaviourKind.PRODUCT_VIEW, occurred_at=jst(2026, 5, 2, 10)
    )
    make_order(buyer, ordered_at=jst(2026, 5, 2, 11))
    # when: two hours later nothing has happened yet
    tick(jst(2026, 5, 2, 12))
    assert enrolled(s) == {}
    # when: three hours after the last cart action
    tick(jst(2026, 5, 2, 13, 6))
    # then: one reminder, for the latest action of the customer who did not buy
    assert enrolled(s) == {abandoner.pk: f"cart:{last.pk}"}
    assert Enrollment.objects.get().anchor_at == jst(2026, 5, 2, 13, 5)


def test_the_wait_ends_to_the_microsecond_and_is_worked_out_in_sql() -> None:
    # given: three carts left at the same moment (with a fraction of a second); one customer
    # orders exactly when the 3-hour wait ends (within it), one a microsecond later (after)
    s = scenario(trigger={"kind": "cart_abandonment", "hours": 3}, activated_at=START)
    product = make_product()
    left = jst(2026, 5, 2, 10, 0, 0) + dt.timedelta(microseconds=250_000)
    end = left + dt.timedelta(hours=3)
    on_time, late, never = make_customer(), make_customer(), make_customer()
    for customer in (on_time, late, never):
        BehaviourEvent.objects.create(
            customer=customer, kind=BehaviourKind.CART_ADD, occurred_at=left, product=product
        )
    make_order(on_time, ordered_at=end)
    make_order(late, ordered_at=end + dt.timedelta(microseconds=1))
    # when
    with CaptureQueriesContext(connection) as queries:
        tick(jst(2026, 5, 2, 13, 1))
    # then: the one who ordered within the wait is not reminded; the anchor is the wait's end
    assert set(enrolled(s)) == {late.pk, never.pk}
    assert {e.anchor_at for e in Enrollment.objects.filter(scenario=s)} == {end}
    # and no statement calls back into Python per row (Django's SQLite date functions)
    callbacks = [q["sql"] for q in queries.captured_queries if "django_" in q["sql"]]
    assert callbacks == []


def test_browse_abandonment_ignores_visitors_who_went_on_to_the_cart() -> None:
    s = scenario(trigger={"kind": "browse_abandonment", "hours": 24}, activated_at=START)
    product = make_product()
    looker, shopper = make_customer(), make_customer()
    view = BehaviourEvent.objects.create(
        customer=looker,
        kind=BehaviourKind.PRODUCT_VIEW,
        occurred_at=jst(2026, 5, 2, 20),
        product=product,
    )
    BehaviourEvent.objects.create(
        customer=shopper,
        kind=BehaviourKind.PRODUCT_VIEW,
        occurred_at=jst(2026, 5, 2, 20),
        product=product,
    )
    BehaviourEvent.objects.create(
        customer=shopper,
        kind=BehaviourKind.CART_ADD,
        occurred_at=jst(2026, 5, 2, 20, 3),
        product=product,
    )
    tick(jst(2026, 5, 3, 20, 1))
    assert enrolled(s) == {looker.pk: f"view:{view.pk}"}
    assert Enrollment.objects.get().product_id == product.pk


def test_no_purchase_for_n_days_fires_once_per_last_order() -> None:
    s = scenario(trigger={"kind": "no_purchase", "days": 120}, activated_at=START)
    dormant, active = make_customer(), make_customer()
    last = make_order(dormant, ordered_at=jst(2026, 1, 10, 15))
    make_order(active, ordered_at=jst(2026, 1, 10, 15))
    make_order(active, ordered_at=jst(2026, 4, 1))
    tick(jst(2026, 5, 10, 15, 1))  # 120 days and one minute after the dormant one's order
    assert enrolled(s) == {dormant.pk: f"dormant:{last.pk}"}
    tick(jst(2026, 5, 10, 15, 2))
    assert Enrollment.objects.count() == 1


def test_birthday_enrolls_on_the_japanese_date_once_a_year() -> None:
    s = scenario(trigger={"kind": "birthday"}, activated_at=START)
    born = make_customer(birthday=dt.date(1980, 5, 10))
    make_customer(birthday=dt.date(1980, 5, 11))
    make_customer(birthday=None)
    tick(jst(2026, 5, 10, 9))
    assert enrolled(s) == {born.pk: "birthday:2026"}


def test_a_29_february_birthday_is_celebrated_on_the_28th_in_common_years() -> None:
    s = scenario(trigger={"kind": "birthday"}, activated_at=jst(2027, 2, 27))
    leapling = make_customer(birthday=dt.date(1992, 2, 29))
    tick(jst(2027, 2, 28, 9))
    assert enrolled(s) == {leapling.pk: "birthday:2027"}


def test_first_purchase_anniversary_comes_a_year_after_the_first_order() -> None:
    s = scenario(trigger={"kind": "first_purchase_anniversary"}, activated_at=START)
    customer, recent = make_customer(), make_customer()
    first = make_order(customer, ordered_at=jst(2025, 5, 10, 23, 30))  # JST date, not UTC's
    make_order(customer, ordered_at=jst(2025, 9, 1))
    make_order(recent, ordered_at=jst(2026, 5, 10, 8))  # today: no anniversary yet
    tick(jst(2026, 5, 10, 9))
    assert enrolled(s) == {customer.pk: "anniversary:2026"}
    assert Enrollment.objects.get().order_id == first.pk


def test_points_earned_enrolls_each_grant() -> None:
    s = scenario(trigger={"kind": "points_earned", "min_points": 100}, activated_at=START)
    customer, small = make_customer(), make_customer()
    entry = points_earn(
        customer=customer, amount=300, acting_user=STAFF, reason="購入", at=jst(2026, 5, 2)
    )
    points_earn(customer=small, amount=20, acting_user=STAFF, reason="購入", at=jst(2026, 5, 2))
    tick(jst(2026, 5, 2, 10))
    assert enrolled(s) == {customer.pk: f"points:{entry.pk}"}


def test_points_expiring_reminds_n_days_ahead_while_a_balance_remains() -> None:
    s = scenario(trigger={"kind": "points_expiring", "days": 30}, activated_at=START)
    holder, spender = make_customer(), make_customer()
    for customer in (holder, spender):
        points_earn(
            customer=customer,
            amount=500,
            acting_user=STAFF,
            reason="購入",
            at=jst(2025, 6, 9, 12),
            valid_days=365,
        )
    points_redeem(customer=spender, amount=500, acting_user=STAFF, reason="利用")
    tick(jst(2026, 5, 9, 9))  # the points expire on 2026-06-09: 31 days ahead
    assert enrolled(s) == {}
    tick(jst(2026, 5, 10, 9))
    assert enrolled(s) == {holder.pk: "expiry:2026-06-09"}
    assert Enrollment.objects.get().anchor_date == dt.date(2026, 5, 10)


def _subscription(
    customer_status: SubscriptionStatus = SubscriptionStatus.ACTIVE, **fields: object
) -> Subscription:
    values: dict[str, object] = {
        "started_on": dt.date(2026, 1, 13),
        "next_delivery_on": dt.date(2026, 5, 13),
        "status": customer_status,
    }
    values.update(fields)
    return make_subscription(make_customer(), **values)


def test_subscription_before_delivery_uses_the_next_delivery_date() -> None:
    s = scenario(trigger={"kind": "subscription_before_delivery", "days": 3}, activated_at=START)
    active = _subscription()
    _subscription(SubscriptionStatus.PAUSED)
    tick(jst(2026, 5, 10, 9))
    assert enrolled(s) == {active.customer_id: f"delivery:{active.pk}:2026-05-13"}
    enrollment = Enrollment.objects.get()
    assert (enrollment.subscription_id, enrollment.delivery_date) == (
        active.pk,
        dt.date(2026, 5, 13),
    )


def test_subscription_skip_enrolls_each_skipped_delivery() -> None:
    s = scenario(trigger={"kind": "subscription_skip"}, activated_at=START)
    sub = _subscription()
    skipped = SubscriptionDelivery.objects.create(
        subscription=sub,
        sequence=5,
        scheduled_on=dt.date(2026, 5, 13),
        status=DeliveryStatus.SKIPPED,
    )
    SubscriptionDelivery.objects.create(
        subscription=sub,
        sequence=4,
        scheduled_on=dt.date(2026, 4, 13),
        status=DeliveryStatus.DELIVERED,
    )
    tick(jst(2026, 5, 5, 9))
    assert enrolled(s) == {sub.customer_id: f"skip:{skipped.pk}"}


def test_subscription_cancel_enrolls_on_the_cancellation_date() -> None:
    s = scenario(trigger={"kind": "subscription_cancel"}, activated_at=START)
    cancelled = _subscription(SubscriptionStatus.CANCELLED, cancelled_on=dt.date(2026, 5, 4))
    _subscription(SubscriptionStatus.CANCELLED, cancelled_on=dt.date(2026, 4, 20))  # before start
    tick(jst(2026, 5, 4, 18))
    assert enrolled(s) == {cancelled.customer_id: f"cancel:{cancelled.pk}"}


def test_segment_entered_fires_on_entering_not_for_those_already_inside() -> None:
    loyal = segment("two-orders", one("order_count", "gte", 2))
    insider, climber = make_customer(), make_customer()
    for at in (jst(2026, 3, 1), jst(2026, 4, 1)):
        make_order(insider, ordered_at=at)
    make_order(climber, ordered_at=jst(2026, 4, 1))
    s = scenario(trigger={"kind": "segment_entered", "segment": loyal.key}, activated_at=START)
    tick(jst(2026, 5, 1, 9))  # the first look: the insider was already there
    assert enrolled(s) == {}
    make_order(climber, ordered_at=jst(2026, 5, 2, 10))
    tick(jst(2026, 5, 2, 11))
    entries = enrolled(s)
    assert list(entries) == [climber.pk]
    assert entries[climber.pk].startswith("entered:")


def test_segment_entered_enrolls_the_first_entrants_of_a_segment_that_started_empty() -> None:
    # given: a segment nobody is in when the scenario first looks
    loyal = segment("two-orders-empty", one("order_count", "gte", 2))
    s = scenario(trigger={"kind": "segment_entered", "segment": loyal.key}, activated_at=START)
    tick(jst(2026, 5, 1, 9))
    assert enrolled(s) == {}
    # when: the first customer enters it
    climber = make_customer()
    for at in (jst(2026, 5, 2, 9), jst(2026, 5, 2, 10)):
        make_order(climber, ordered_at=at)
    tick(jst(2026, 5, 2, 11))
    # then: an entry, not a baseline
    assert list(enrolled(s)) == [climber.pk]


def test_changing_the_segment_makes_its_current_members_a_baseline_again() -> None:
    from kizuna.web.scenarios import spec_of

    # given: a running "segment entered" scenario on one segment
    two = segment("two-orders-x", one("order_count", "gte", 2))
    one_order = segment("one-order-x", one("order_count", "gte", 1))
    buyer = make_customer()
    make_order(buyer, ordered_at=jst(2026, 4, 1))
    s = scenario(trigger={"kind": "segment_entered", "segment": two.key}, activated_at=START)
    tick(jst(2026, 5, 1, 9))
    # when: staff point it at another segment, which the buyer is already in
    spec = spec_of(s)
    spec["trigger"] = {"kind": "segment_entered", "segment": one_order.key}
    scenario_save(scenario=Scenario.objects.get(pk=s.pk), spec=spec, acting_user=STAFF)
    tick(jst(2026, 5, 1, 10))
    newcomer = make_customer()
    make_order(newcomer, ordered_at=jst(2026, 5, 1, 11))
    tick(jst(2026, 5, 1, 12))
    # then: the buyer was already inside (baseline); only the newcomer entered
    assert list(enrolled(s)) == [newcomer.pk]


def test_cpm_change_is_refused_until_analytics_snapshots_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: no analytics snapshot table
    monkeypatch.setattr(segments, "analytics_snapshot", lambda: None)
    # when
    with pytest.raises(ScenarioError) as excinfo:
        scenario_save(
            scenario=None,
            spec={"key": "cpm", "name": "x", "trigger": {"kind": "cpm_change"}},
            acting_user=STAFF,
        )
    # then
    assert any("分析アプリ" in m for m in excinfo.value.messages)


def test_cpm_change_compares_the_latest_analytics_run_with_the_one_before() -> None:
    from kizuna.analytics.models import AnalyticsRun, CustomerScore, RunStatus

    s = scenario(
        trigger={"kind": "cpm_change", "to": ["first_lapsed", "steady_lapsed"]},
        activated_at=START,
    )
    lapsing, steady, promoted = make_customer(), make_customer(), make_customer()
    before = {lapsing: "first_active", steady: "first_active", promoted: "first_active"}
    after = {lapsing: "first_lapsed", steady: "first_active", promoted: "toddler_active"}
    for as_of, cpm in ((dt.date(2026, 4, 1), before), (dt.date(2026, 5, 2), after)):
        run = AnalyticsRun.objects.create(
            as_of=as_of, backend="duckdb", status=RunStatus.DONE, customer_rows_kept=True
        )
        for customer, segment_code in cpm.items():
            CustomerScore.objects.create(
                run=run, as_of=as_of, customer=customer, first_purchase_on=as_of,
                last_purchase_on=as_of, purchase_count=1, total_spend=0, avg_spend=0,
                tenure_days=0, days_since_last=0, r_score=1, f_score=1, m_score=1,
                cpm_segment=segment_code, rfm_segment="new",
            )  # fmt: skip
    tick(jst(2026, 5, 2, 10))
    assert enrolled(s) == {lapsing.pk: f"cpm:{run.pk}"}
    assert Enrollment.objects.get().anchor_date == dt.date(2026, 5, 2)


def test_nps_answer_is_refused_while_no_survey_records_exist(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    unavailable = dataclasses.replace(triggers.TRIGGERS["nps_answer"], available=lambda: False)
    monkeypatch.setitem(triggers.TRIGGERS, "nps_answer", unavailable)
    with pytest.raises(ScenarioError) as excinfo:
        scenario_save(
            scenario=None,
            spec={"key": "nps", "name": "x", "trigger": {"kind": "nps_answer"}},
            acting_user=STAFF,
        )
    assert any("コンタクトセンター" in m for m in excinfo.value.messages)


def test_nps_answer_fires_from_timeline_answers_in_the_score_range(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # given: survey answers recorded on the timeline (as the contact-center issue will do)
    available = dataclasses.replace(triggers.TRIGGERS["nps_answer"], available=lambda: True)
    monkeypatch.setitem(triggers.TRIGGERS, "nps_answer", available)
    s = scenario(trigger={"kind": "nps_answer", "score_min": 0, "score_max": 6}, activated_at=START)
    detractor, promoter = make_customer(), make_customer()
    answer = TimelineEvent.objects.create(
        customer=detractor, kind=triggers.NPS_TIMELINE_KIND, title="NPS 3",
        occurred_at=jst(2026, 5, 2), detail={"score": 3},
    )  # fmt: skip
    TimelineEvent.objects.create(
        customer=promoter, kind=triggers.NPS_TIMELINE_KIND, title="NPS 10",
        occurred_at=jst(2026, 5, 2), detail={"score": 10},
    )  # fmt: skip
    # when
    tick(jst(2026, 5, 2, 10))
    # then
    assert enrolled(s) == {detractor.pk: f"nps:{answer.pk}"}


def test_every_trigger_kind_is_registered() -> None:
    from kizuna.campaigns.automation.models import TriggerKind

    assert set(triggers.TRIGGERS) == set(TriggerKind.values)
