"""Points ledger (RELIABILITY D1): never negative, always the ledger sum, one accrual per order."""

from __future__ import annotations

import datetime as dt
import threading

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer, TimelineKind
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.loyalty.selectors import expiring_on, points_balance, remaining_lots
from kizuna.loyalty.services import (
    POINTS_VALID_DAYS,
    InsufficientPointsError,
    points_adjust,
    points_earn,
    points_expire_due,
    points_expiring,
    points_lots,
    points_redeem,
    points_transfer,
)
from kizuna.loyalty.tasks import expire_points
from tests.factories import make_customer, make_order

SYSTEM = Actor.system("test")


def _ledger_sum(customer: Customer) -> int:
    return sum(PointEntry.objects.filter(customer=customer).values_list("amount", flat=True))


@pytest.mark.django_db
def test_balance_is_the_ledger_sum_after_every_kind_of_movement() -> None:
    customer = make_customer()
    points_earn(customer=customer, amount=500, acting_user=SYSTEM, reason="購入")
    points_redeem(customer=customer, amount=200, acting_user=SYSTEM, reason="利用")
    points_adjust(customer=customer, amount=-50, acting_user=SYSTEM, reason="誤付与の訂正")
    points_adjust(customer=customer, amount=30, acting_user=SYSTEM, reason="お詫び")
    assert points_balance(customer) == _ledger_sum(customer) == 280
    seqs = list(PointEntry.objects.filter(customer=customer).values_list("seq", flat=True))
    assert sorted(seqs) == [1, 2, 3, 4]
    # each movement is audited and on the timeline
    assert (
        AuditLog.objects.filter(customer_id=customer.pk, action__startswith="points.").count() == 4
    )
    assert customer.timeline.filter(kind=TimelineKind.POINTS).count() == 4


@pytest.mark.django_db
def test_redeeming_more_than_the_balance_is_refused_and_changes_nothing() -> None:
    customer = make_customer()
    points_earn(customer=customer, amount=100, acting_user=SYSTEM, reason="購入")
    with pytest.raises(InsufficientPointsError, match="残高"):
        points_redeem(customer=customer, amount=101, acting_user=SYSTEM, reason="利用")
    with pytest.raises(InsufficientPointsError):
        points_adjust(customer=customer, amount=-101, acting_user=SYSTEM, reason="訂正")
    assert points_balance(customer) == 100
    assert PointEntry.objects.filter(customer=customer).count() == 1


@pytest.mark.django_db
def test_database_refuses_a_negative_balance_even_past_the_service() -> None:
    customer = make_customer()
    with pytest.raises(IntegrityError), transaction.atomic():
        PointEntry.objects.create(
            customer=customer,
            seq=1,
            kind=PointKind.REDEEM,
            amount=-10,
            balance_after=-10,
            occurred_at=timezone.now(),
            recorded_by="raw",
        )


@pytest.mark.django_db
def test_an_order_earns_points_once() -> None:
    customer = make_customer()
    order = make_order(customer)
    first = points_earn(
        customer=customer, amount=49, order=order, acting_user=SYSTEM, reason="購入"
    )
    again = points_earn(
        customer=customer, amount=49, order=order, acting_user=SYSTEM, reason="購入"
    )
    assert first.pk == again.pk
    assert points_balance(customer) == 49
    # and the database enforces it for any other writer
    with pytest.raises(IntegrityError), transaction.atomic():
        PointEntry.objects.create(
            customer=customer,
            seq=2,
            kind=PointKind.EARN,
            amount=49,
            balance_after=98,
            occurred_at=timezone.now(),
            expires_on=dt.date(2030, 1, 1),
            order=order,
            recorded_by="raw",
        )


@pytest.mark.django_db
def test_invalid_amounts_are_refused() -> None:
    customer = make_customer()
    with pytest.raises(ValidationError):
        points_earn(customer=customer, amount=0, acting_user=SYSTEM, reason="x")
    with pytest.raises(ValidationError):
        points_redeem(customer=customer, amount=-5, acting_user=SYSTEM, reason="x")
    with pytest.raises(ValidationError, match="理由"):
        points_adjust(customer=customer, amount=5, acting_user=SYSTEM, reason=" ")


@pytest.mark.django_db
def test_granted_goodwill_points_expire_like_earned_ones_by_default() -> None:
    customer = make_customer()
    earned = points_earn(customer=customer, amount=100, acting_user=SYSTEM, reason="購入")
    granted = points_adjust(customer=customer, amount=50, acting_user=SYSTEM, reason="お詫び")
    valid_until = timezone.localdate() + dt.timedelta(days=POINTS_VALID_DAYS)
    assert granted.expires_on == earned.expires_on == valid_until


@pytest.mark.django_db
def test_staff_may_choose_when_granted_points_expire() -> None:
    customer = make_customer()
    day = timezone.localdate() + dt.timedelta(days=30)
    granted = points_adjust(customer=customer, amount=50, acting_user=SYSTEM, reason="お詫び",
                            expires_on=day)  # fmt: skip
    assert granted.expires_on == day
    assert points_lots(customer) == [(50, day)]


@pytest.mark.django_db
def test_an_expiry_of_today_or_earlier_or_on_a_deduction_is_refused() -> None:
    customer = make_customer()
    points_earn(customer=customer, amount=100, acting_user=SYSTEM, reason="購入")
    today = timezone.localdate()
    for day in (today, today - dt.timedelta(days=1)):
        with pytest.raises(ValidationError) as refused:
            points_adjust(customer=customer, amount=50, acting_user=SYSTEM, reason="お詫び",
                          expires_on=day)  # fmt: skip
        assert refused.value.message_dict == {
            "expires_on": ["有効期限は明日以降の日付を指定してください"]
        }
    with pytest.raises(ValidationError) as refused:
        points_adjust(customer=customer, amount=-50, acting_user=SYSTEM, reason="訂正",
                      expires_on=today + dt.timedelta(days=30))  # fmt: skip
    assert refused.value.message_dict == {"expires_on": ["減算の調整には有効期限を指定できません"]}
    assert points_balance(customer) == 100
    assert PointEntry.objects.filter(customer=customer).count() == 1


@pytest.mark.django_db
def test_granted_points_with_an_expiry_are_written_off_on_that_date() -> None:
    customer = make_customer()
    day = timezone.localdate() + dt.timedelta(days=10)
    points_adjust(customer=customer, amount=40, acting_user=SYSTEM, reason="お詫び",
                  expires_on=day)  # fmt: skip
    # the "points expiring on D" messages and the expiry run both see the lot
    assert remaining_lots([customer.pk]) == {customer.pk: [(day, 40)]}
    assert expiring_on([(customer.pk, day, None)]) == {(customer.pk, day): 40}
    assert points_expiring(customer=customer, on=day) == 0
    after = day + dt.timedelta(days=1)
    assert points_expiring(customer=customer, on=after) == 40
    assert expire_points.call(on=after.isoformat()) == 1
    assert points_balance(customer) == 0


@pytest.mark.django_db
def test_expiry_writes_off_only_unspent_expired_points_oldest_first() -> None:
    customer = make_customer()
    now = timezone.now()
    points_earn(customer=customer, amount=300, acting_user=SYSTEM, reason="古い購入",
                at=now - dt.timedelta(days=400))  # fmt: skip
    points_earn(customer=customer, amount=200, acting_user=SYSTEM, reason="最近の購入",
                at=now - dt.timedelta(days=10))  # fmt: skip
    # 120 spent: taken from the oldest 300, so 180 of them are left to expire
    points_redeem(customer=customer, amount=120, acting_user=SYSTEM, reason="利用")
    today = timezone.localdate()
    assert points_expiring(customer=customer, on=today) == 180
    entry = points_expire_due(customer=customer, on=today, acting_user=SYSTEM)
    assert entry is not None
    assert entry.amount == -180
    assert points_balance(customer) == 200
    # running it again finds nothing more to expire
    assert points_expire_due(customer=customer, on=today, acting_user=SYSTEM) is None


@pytest.mark.django_db
def test_unspent_lots_are_charged_soonest_expiry_first() -> None:
    customer = make_customer()
    now = timezone.now()
    points_earn(customer=customer, amount=200, acting_user=SYSTEM, reason="最近の購入",
                at=now - dt.timedelta(days=10))  # fmt: skip
    points_earn(customer=customer, amount=300, acting_user=SYSTEM, reason="古い購入",
                at=now - dt.timedelta(days=100))  # fmt: skip
    points_adjust(customer=customer, amount=50, acting_user=SYSTEM, reason="お詫び",
                  never_expires=True)  # fmt: skip
    points_redeem(customer=customer, amount=320, acting_user=SYSTEM, reason="利用")
    today = timezone.localdate()
    # 320 spent: all 300 of the soonest-expiring lot, then 20 of the next; the undated
    # adjustment never expires and is spent last
    assert points_lots(customer) == [(180, today + dt.timedelta(days=355)), (50, None)]


@pytest.mark.django_db
def test_points_that_arrive_after_spending_keep_their_own_expiry() -> None:
    # given 100 points spent in full, then 60 carried over (a merge) that expire sooner than
    # the spent ones did
    customer, other = make_customer(), make_customer()
    points_earn(customer=customer, amount=100, acting_user=SYSTEM, reason="購入")
    points_redeem(customer=customer, amount=100, acting_user=SYSTEM, reason="利用")
    soon = timezone.localdate() + dt.timedelta(days=30)
    earned = timezone.now() - dt.timedelta(days=335)
    points_earn(customer=other, amount=60, acting_user=SYSTEM, reason="購入", at=earned)
    points_transfer(source=other, target=customer, lots=points_lots(other), acting_user=SYSTEM,
                    reason="名寄せによる移行", at=timezone.now())  # fmt: skip
    # then the earlier spending did not use them: they expire on their own date
    assert points_lots(customer) == [(60, soon)]
    assert points_expiring(customer=customer, on=soon + dt.timedelta(days=1)) == 60


@pytest.mark.django_db
def test_a_transfer_of_some_lots_takes_those_lots_and_leaves_the_rest() -> None:
    # given lots expiring in 100 and 200 days, and points that never expire
    customer, other = make_customer(), make_customer()
    today, now = timezone.localdate(), timezone.now()
    for days_left, points in ((100, 30), (200, 40)):
        points_earn(customer=customer, amount=points, acting_user=SYSTEM, reason="購入",
                    at=now - dt.timedelta(days=365 - days_left))  # fmt: skip
    points_adjust(customer=customer, amount=25, acting_user=SYSTEM, reason="お詫び",
                  never_expires=True)  # fmt: skip
    later = today + dt.timedelta(days=200)
    # when the later lot and the never-expiring points move
    moved = points_transfer(source=customer, target=other, lots=[(40, later), (25, None)],
                            acting_user=SYSTEM, reason="移行", at=now)  # fmt: skip
    # then exactly those left, each named by its own entry, and arrived with their dates
    assert moved == 65
    assert points_lots(customer) == [(30, today + dt.timedelta(days=100))]
    assert points_lots(other) == [(40, later), (25, None)]
    given = PointEntry.objects.filter(customer=customer, amount__lt=0).order_by("seq")
    assert [(e.amount, e.lot.expires_on if e.lot else "-") for e in given] == [
        (-40, later),
        (-25, None),
    ]


@pytest.mark.django_db
def test_a_named_lot_already_spent_gives_what_it_has_and_the_rest_soonest_first() -> None:
    customer, other = make_customer(), make_customer()
    now, today = timezone.now(), timezone.localdate()
    points_earn(customer=customer, amount=50, acting_user=SYSTEM, reason="購入",
                at=now - dt.timedelta(days=300))  # fmt: skip
    points_earn(customer=customer, amount=50, acting_user=SYSTEM, reason="購入")
    points_adjust(customer=customer, amount=10, acting_user=SYSTEM, reason="お詫び",
                  never_expires=True)  # fmt: skip
    points_redeem(customer=customer, amount=45, acting_user=SYSTEM, reason="利用")  # the 50 soon
    soon = today + dt.timedelta(days=65)
    points_transfer(source=customer, target=other, lots=[(10, soon)], acting_user=SYSTEM,
                    reason="移行", at=now)  # fmt: skip
    # 5 were left of the soon lot; the other 5 come from the next soonest
    assert points_lots(customer) == [(45, today + dt.timedelta(days=365)), (10, None)]
    assert points_balance(customer) == _ledger_sum(customer) == 55


@pytest.mark.django_db
def test_expiry_task_processes_recently_expired_customers() -> None:
    customer = make_customer()
    points_earn(customer=customer, amount=100, acting_user=SYSTEM, reason="購入",
                at=timezone.now() - dt.timedelta(days=367))  # fmt: skip
    untouched = make_customer()
    points_earn(customer=untouched, amount=70, acting_user=SYSTEM, reason="購入")
    result = expire_points.call()
    assert result == 1
    assert points_balance(customer) == 0
    assert points_balance(untouched) == 70


@pytest.mark.django_db(transaction=True)
def test_fifty_concurrent_redemptions_cannot_overspend() -> None:
    # given 1,000 points and 50 clerks each trying to spend 30 at the same moment
    customer = make_customer()
    points_earn(customer=customer, amount=1000, acting_user=SYSTEM, reason="購入")
    start = threading.Barrier(50)
    outcomes: list[str] = []
    lock = threading.Lock()

    def redeem() -> None:
        start.wait()
        try:
            points_redeem(customer=customer, amount=30, acting_user=SYSTEM, reason="同時利用")
            result = "ok"
        except InsufficientPointsError:
            result = "refused"
        finally:
            connection.close()
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=redeem) for _ in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # then exactly 33 succeed (990 points), the rest are refused, nothing is lost or doubled
    assert outcomes.count("ok") == 33
    assert outcomes.count("refused") == 17
    assert points_balance(customer) == _ledger_sum(customer) == 10
    assert PointEntry.objects.filter(customer=customer).count() == 34
