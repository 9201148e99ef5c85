"""Who a trigger may enroll, checked customer by customer: merged-away records, withdrawn
members and customers outside the scenario's audience never enter; a "segment entered"
customer who leaves and comes back enters again, once per stay."""

from __future__ import annotations

import pytest

from kizuna.campaigns.automation.models import Enrollment, Scenario, SegmentMember
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.models import OutboxMessage
from kizuna.commerce.models import OrderStatus
from kizuna.customers.models import Customer, MemberStatus
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import jst, one, scenario, segment

pytestmark = pytest.mark.django_db
START = jst(2026, 5, 1)


def _enrolled(s: Scenario) -> set[int]:
    return set(Enrollment.objects.filter(scenario=s).values_list("customer_id", flat=True))


def test_merged_withdrawn_and_outside_the_audience_never_enter() -> None:
    # given: a first-purchase scenario for Tokyo customers, and five first buyers
    tokyo = segment("tokyo", one("prefecture", "in", [13]))
    s = scenario(trigger={"kind": "first_purchase"}, activated_at=START, audience=tokyo.key)
    member = make_customer(prefecture=13)
    withdrawn = make_customer(prefecture=13, member_status=MemberStatus.WITHDRAWN)
    merged_away = make_customer(prefecture=13)
    osaka = make_customer(prefecture=27)
    for customer in (member, withdrawn, merged_away, osaka):
        make_order(customer, ordered_at=jst(2026, 5, 2, 9))
    Customer.objects.filter(pk=merged_away.pk).update(merged_into=member)
    # when
    tick(jst(2026, 5, 2, 10))
    # then: only the live Tokyo member is enrolled and written to
    assert _enrolled(s) == {member.pk}
    assert set(OutboxMessage.objects.values_list("customer_id", flat=True)) == {member.pk}


def test_a_customer_who_leaves_the_segment_and_returns_enters_again() -> None:
    # given: "two orders or more" entered by one customer
    loyal = segment("two-orders", one("order_count", "gte", 2))
    s = scenario(trigger={"kind": "segment_entered", "segment": loyal.key}, activated_at=START)
    insider, climber = make_customer(), make_customer()
    for at in (jst(2026, 3, 1), jst(2026, 4, 1)):
        make_order(insider, ordered_at=at)
    tick(jst(2026, 5, 1, 9))  # the first look: the insider was already there
    first = make_order(climber, ordered_at=jst(2026, 5, 2, 9))
    make_order(climber, ordered_at=jst(2026, 5, 2, 10))
    tick(jst(2026, 5, 2, 11))
    assert Enrollment.objects.filter(scenario=s, customer=climber).count() == 1
    # when: an order is cancelled (out of the segment), then a new one brings them back
    first.status = OrderStatus.CANCELLED
    first.save(update_fields=["status"])
    tick(jst(2026, 5, 3, 11))
    stays = SegmentMember.objects.filter(scenario=s, customer=climber)
    assert stays.filter(left_at__isnull=True).count() == 0
    make_order(climber, ordered_at=jst(2026, 5, 4, 9))
    tick(jst(2026, 5, 4, 11))
    # then: two stays, each its own enrollment; a further tick adds nothing
    assert stays.count() == 2
    assert not Enrollment.objects.filter(scenario=s, customer=insider).exists()
    assert Enrollment.objects.filter(scenario=s, customer=climber).count() == 2
    tick(jst(2026, 5, 4, 12, 1))
    assert Enrollment.objects.filter(scenario=s, customer=climber).count() == 2
