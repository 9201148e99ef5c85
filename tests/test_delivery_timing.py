"""When marketing goes out: quiet hours on the Tokyo clock (S9), the customer's usual hour and
the frequency cap across scenarios. The worker runs with a fixed clock and a recording
transport, so each rule is seen on its own."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from zoneinfo import ZoneInfo

import pytest

from kizuna.campaigns.channels import Envelope, Receipt
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import DeliverySettings, OutboxMessage, OutboxStatus
from kizuna.campaigns.outbox import Purpose
from kizuna.campaigns.timing import after_quiet_hours, at_usual_hour
from tests.delivery_support import consenting_customer, mail
from tests.factories import make_order

pytestmark = pytest.mark.django_db
JST = ZoneInfo("Asia/Tokyo")
UTC = dt.UTC


def jst(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=JST)


class Recorder:
    def __init__(self, on_send: Callable[[Envelope], object] | None = None) -> None:
        self.sent: list[Envelope] = []
        self.on_send = on_send

    def open(self) -> None:
        return None

    def send(self, envelope: Envelope) -> Receipt:
        if self.on_send is not None:
            self.on_send(envelope)
        self.sent.append(envelope)
        return Receipt(provider_id=f"rec-{envelope.message.pk}")

    def close(self) -> None:
        return None


def worker_at(moment: dt.datetime, recorder: Recorder, **kwargs: object) -> DeliveryWorker:
    return DeliveryWorker(clock=lambda: moment, transports=lambda kind: recorder, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def _sender(settings) -> None:  # type: ignore[no-untyped-def]
    settings.KIZUNA_SENDER_NAME = "きずな化粧品"
    settings.KIZUNA_SENDER_ADDRESS = "東京都渋谷区"
    settings.KIZUNA_SENDER_CONTACT = "0120-000-000"


@pytest.mark.parametrize(
    ("queued", "expected"),
    [
        # 00:30 JST on 2 May is 15:30 UTC on 1 May: it waits for 08:00 JST on 2 May,
        # which is 23:00 UTC on 1 May — not 08:00 of the UTC date (already past).
        (jst(2026, 5, 2, 0, 30), jst(2026, 5, 2, 8, 0)),
        (jst(2026, 5, 2, 8, 59), jst(2026, 5, 2, 8, 59)),
        (jst(2026, 5, 2, 7, 59), jst(2026, 5, 2, 8, 0)),
        (jst(2026, 5, 1, 21, 0), jst(2026, 5, 2, 8, 0)),
        (jst(2026, 12, 31, 23, 30), jst(2027, 1, 1, 8, 0)),
        (jst(2026, 5, 1, 20, 59), jst(2026, 5, 1, 20, 59)),
    ],
)
def test_quiet_hours_are_on_the_tokyo_calendar(queued: dt.datetime, expected: dt.datetime) -> None:
    # given the default quiet hours 21:00–08:00 and a message queued at `queued` (stored UTC)
    customer = consenting_customer()
    message = mail(customer, "q", send_after=queued.astimezone(UTC))
    recorder = Recorder()
    # when the worker looks at it at that moment
    worker_at(queued.astimezone(UTC), recorder).drain()
    message.refresh_from_db()
    if expected == queued:
        assert message.status == OutboxStatus.SENT
    else:
        # then it waits for the next allowed Tokyo time, and is sent then
        assert recorder.sent == []
        assert message.status == OutboxStatus.PENDING
        assert message.next_attempt_at == expected
        worker_at(expected.astimezone(UTC), recorder).drain()
        message.refresh_from_db()
        assert message.status == OutboxStatus.SENT
        assert message.sent_at == expected


def test_an_overdue_message_found_at_night_waits_for_the_morning() -> None:
    # given a marketing mail due yesterday at 10:00 that no worker sent then (one was
    # stopped, or delivery was paused) and a worker that runs at 01:24 Tokyo time
    customer = consenting_customer()
    message = mail(customer, "late", send_after=jst(2026, 5, 1, 10, 0).astimezone(UTC))
    night = jst(2026, 5, 2, 1, 24).astimezone(UTC)
    recorder = Recorder()
    # when it drains the outbox
    worker_at(night, recorder).drain()
    # then nothing goes out in quiet hours: the mail waits for 08:00
    message.refresh_from_db()
    assert recorder.sent == []
    assert (message.status, message.next_attempt_at) == (
        OutboxStatus.PENDING,
        jst(2026, 5, 2, 8, 0),
    )
    worker_at(jst(2026, 5, 2, 8, 0).astimezone(UTC), recorder).drain()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT


def test_transactional_mail_ignores_quiet_hours() -> None:
    customer = consenting_customer()
    night = jst(2026, 5, 2, 2, 0).astimezone(UTC)
    message = mail(customer, "shipping-notice", purpose=Purpose.TRANSACTIONAL, send_after=night)
    worker_at(night, Recorder()).drain()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT


def test_configured_quiet_hours_apply() -> None:
    DeliverySettings.objects.update_or_create(
        pk=1, defaults={"quiet_start": dt.time(12, 0), "quiet_end": dt.time(13, 30)}
    )
    customer = consenting_customer()
    noon = jst(2026, 5, 1, 12, 10).astimezone(UTC)
    message = mail(customer, "lunch", send_after=noon)
    worker_at(noon, Recorder()).drain()
    message.refresh_from_db()
    assert message.next_attempt_at == jst(2026, 5, 1, 13, 30)


def test_quiet_hours_helpers_agree_with_the_worker() -> None:
    start, end = dt.time(21), dt.time(8)
    assert after_quiet_hours(jst(2026, 1, 1, 23), start=start, end=end) == jst(2026, 1, 2, 8)
    assert at_usual_hour(jst(2026, 1, 1, 10), 9) == jst(2026, 1, 2, 9)
    assert at_usual_hour(jst(2026, 1, 1, 9, 40), 9) == jst(2026, 1, 1, 9, 40)


def test_a_message_that_allows_it_waits_for_the_hour_the_customer_usually_buys() -> None:
    # given a customer who mostly orders around 20:00 JST (once in the morning)
    customer = consenting_customer()
    for day, hour in ((3, 20), (10, 20), (17, 20), (20, 9)):
        make_order(customer, ordered_at=jst(2026, 4, day, hour, 15))
    morning = jst(2026, 5, 1, 10, 0).astimezone(UTC)
    flexible = mail(customer, "flexible", send_after=morning, prefer_customer_hour=True)
    fixed = mail(customer, "fixed", send_after=morning)
    recorder = Recorder()
    worker_at(morning, recorder).drain()
    flexible.refresh_from_db()
    fixed.refresh_from_db()
    # then only the flexible one waits, until 20:00 JST that day
    assert fixed.status == OutboxStatus.SENT
    assert flexible.status == OutboxStatus.PENDING
    assert flexible.next_attempt_at == jst(2026, 5, 1, 20, 0)
    worker_at(jst(2026, 5, 1, 20, 0).astimezone(UTC), recorder).drain()
    flexible.refresh_from_db()
    assert flexible.status == OutboxStatus.SENT


def test_a_usual_hour_inside_quiet_hours_moves_to_the_morning() -> None:
    customer = consenting_customer()
    for day in (3, 10, 17):
        make_order(customer, ordered_at=jst(2026, 4, day, 23, 40))
    morning = jst(2026, 5, 1, 10, 0).astimezone(UTC)
    message = mail(customer, "night-owl", send_after=morning, prefer_customer_hour=True)
    worker_at(morning, Recorder()).drain()
    message.refresh_from_db()
    assert message.next_attempt_at == jst(2026, 5, 2, 8, 0)


def test_the_frequency_cap_counts_marketing_across_scenarios_and_spares_transactional() -> None:
    # given the default cap (2 marketing messages per 7 days) and three scenarios' messages
    customer = consenting_customer()
    now = jst(2026, 5, 1, 10, 0).astimezone(UTC)
    first = mail(customer, "scenario-a", send_after=now, scenario_id=1)
    second = mail(customer, "scenario-b", send_after=now, scenario_id=2)
    third = mail(customer, "scenario-c", send_after=now, scenario_id=3)
    receipt = mail(customer, "order", purpose=Purpose.TRANSACTIONAL, send_after=now)
    worker_at(now, Recorder()).drain()
    statuses = {
        m.dedupe_key: (m.status, m.reason)
        for m in OutboxMessage.objects.filter(pk__in=[first.pk, second.pk, third.pk, receipt.pk])
    }
    # then the third is dropped with the reason, and the order mail is not counted
    assert statuses["scenario-a"][0] == statuses["scenario-b"][0] == OutboxStatus.SENT
    assert statuses["scenario-c"] == (
        OutboxStatus.SKIPPED,
        "送信上限(7日で2通)に達したため見送り",
    )
    assert statuses["order"][0] == OutboxStatus.SENT
    # and eight days later there is room again
    later = now + dt.timedelta(days=8)
    fourth = mail(customer, "scenario-d", send_after=later)
    worker_at(later, Recorder()).drain()
    fourth.refresh_from_db()
    assert fourth.status == OutboxStatus.SENT


def test_two_workers_cannot_both_use_the_last_free_slot() -> None:
    # given a cap of one message and two messages for the same customer
    DeliverySettings.objects.update_or_create(pk=1, defaults={"cap_messages": 1})
    customer = consenting_customer()
    now = jst(2026, 5, 1, 10, 0).astimezone(UTC)
    first = mail(customer, "w1", send_after=now)
    second = mail(customer, "w2", send_after=now)
    other_recorder = Recorder()
    other = worker_at(now, other_recorder, batch_size=1, worker_id="other")

    # when worker B runs its whole batch while worker A is in the middle of sending the first
    recorder = Recorder(on_send=lambda envelope: other.drain())
    worker_at(now, recorder, batch_size=1, worker_id="first").drain()
    first.refresh_from_db()
    second.refresh_from_db()
    # then A's reservation counted: B skipped the second message
    assert first.status == OutboxStatus.SENT
    assert second.status == OutboxStatus.SKIPPED
    assert other_recorder.sent == []
