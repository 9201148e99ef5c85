"""The outbox contract scenario code relies on: one row per dedupe key, inside the caller's
transaction, refused when the content cannot be rendered."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import timezone

from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import OutboxMessage, OutboxStatus
from kizuna.campaigns.outbox import OutboxRow, Purpose, outbox_enqueue, outbox_enqueue_many
from kizuna.core.bulk import COPY_MIN_ROWS
from kizuna.customers.models import TimelineKind
from tests.factories import make_customer

pytestmark = pytest.mark.django_db
MAIL = {"subject": "ご購入ありがとうございます", "text": "本文", "html": "<p>本文</p>"}


def _enqueue(customer, key: str = "k1", **overrides):  # type: ignore[no-untyped-def]
    values = {
        "customer": customer,
        "channel": "email",
        "purpose": Purpose.MARKETING,
        "dedupe_key": key,
        "content": MAIL,
        "send_after": timezone.now(),
    }
    values.update(overrides)
    return outbox_enqueue(**values)


def test_the_same_dedupe_key_twice_stores_one_message() -> None:
    customer = make_customer()
    with transaction.atomic():
        first = _enqueue(customer)
        second = _enqueue(customer)
        # the caller's transaction is still usable after the duplicate
        third = _enqueue(customer, key="k2")
    assert first is not None
    assert second is None
    assert third is not None
    assert OutboxMessage.objects.count() == 2


def test_a_rolled_back_decision_leaves_nothing_to_send() -> None:
    customer = make_customer()

    @transaction.atomic
    def decide() -> None:
        _enqueue(customer)
        raise RuntimeError("scenario step failed after enqueue")

    with pytest.raises(RuntimeError):
        decide()
    assert not OutboxMessage.objects.exists()


def test_enqueue_writes_no_timeline_row_until_sent() -> None:
    customer = make_customer()
    message = _enqueue(customer, scenario_id=7, step_key="day30", enrollment_id=99)
    assert message is not None
    assert message.status == OutboxStatus.PENDING
    assert message.next_attempt_at == message.send_after
    assert (message.scenario_id, message.step_key, message.enrollment_id) == (7, "day30", 99)
    assert not customer.timeline.filter(kind=TimelineKind.MESSAGE).exists()


@pytest.mark.parametrize(
    ("channel", "content", "fragment"),
    [
        ("email", {"text": "本文"}, "subject"),
        ("line", {"subject": "件名"}, "text"),
        ("postal", {"text": "本文"}, "title"),
        ("call", {"reason": "定期のご案内"}, "script"),
        ("best", {"text": "本文"}, "subject または title"),
        ("fax", {"text": "本文"}, "不明なチャネル"),
        ("email", {"subject": "件名", "text": "本文", "coupon": "X"}, "不明な項目"),
        ("sms", {"text": 123}, "文字列"),
    ],
)
def test_content_a_channel_cannot_render_is_refused(channel, content, fragment) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    with pytest.raises(ValidationError, match=fragment):
        _enqueue(customer, channel=channel, content=content)
    assert not OutboxMessage.objects.exists()


def test_naive_send_time_and_transactional_best_channel_are_refused() -> None:
    customer = make_customer()
    with pytest.raises(ValidationError, match="タイムゾーン"):
        _enqueue(customer, send_after=dt.datetime(2026, 5, 1, 9, 0))
    with pytest.raises(ValidationError, match="最適チャネル"):
        _enqueue(customer, channel="best", purpose=Purpose.TRANSACTIONAL)


def test_bulk_enqueue_skips_keys_that_exist_and_keeps_the_rest() -> None:
    customer = make_customer()
    _enqueue(customer, key="bulk-0")
    now = timezone.now()
    rows = [
        OutboxRow(
            customer_id=customer.pk,
            channel="line",
            purpose=Purpose.MARKETING,
            dedupe_key=f"bulk-{n}",
            content={"text": f"メッセージ{n}"},
            send_after=now,
        )
        for n in range(5)
    ]
    outbox_enqueue_many(rows)
    outbox_enqueue_many(rows)
    assert OutboxMessage.objects.count() == 5
    assert sorted(OutboxMessage.objects.values_list("dedupe_key", flat=True)) == [
        f"bulk-{n}" for n in range(5)
    ]
    assert OutboxMessage.objects.get(dedupe_key="bulk-0").channel == "email"


def test_a_large_bulk_enqueue_skips_existing_and_repeated_keys_and_stores_the_rest() -> None:
    # COPY_MIN_ROWS rows or more take PostgreSQL's bulk path (copied into a temporary table,
    # then moved with ON CONFLICT DO NOTHING): the same contract as a few rows, twice in one
    # transaction as a tick does for two steps.
    customer = make_customer()
    _enqueue(customer, key="big-0")
    now = timezone.now()
    count = COPY_MIN_ROWS + 50

    def rows(prefix: str) -> list[OutboxRow]:
        made = [
            OutboxRow(
                customer.pk, "sms", Purpose.MARKETING, f"{prefix}-{n}", {"text": f"本文{n}"}, now
            )
            for n in range(count)
        ]
        return [*made, made[7]]  # a key repeated within the call

    with transaction.atomic():
        outbox_enqueue_many(rows("big"))
        outbox_enqueue_many(rows("more"))
    outbox_enqueue_many(rows("more"))
    assert OutboxMessage.objects.filter(dedupe_key__startswith="big-").count() == count
    assert OutboxMessage.objects.filter(dedupe_key__startswith="more-").count() == count
    assert OutboxMessage.objects.get(dedupe_key="big-0").channel == "email"
    stored = OutboxMessage.objects.get(dedupe_key="more-42")
    assert (stored.channel, stored.content, stored.status) == ("sms", {"text": "本文42"}, "pending")
    assert stored.send_after == now
    assert stored.next_attempt_at == now


def test_bulk_enqueue_with_one_bad_row_writes_nothing() -> None:
    customer = make_customer()
    now = timezone.now()
    rows = [
        OutboxRow(customer.pk, "sms", Purpose.MARKETING, "ok", {"text": "x"}, now),
        OutboxRow(customer.pk, "sms", Purpose.MARKETING, "bad", {}, now),
    ]
    with pytest.raises(ValidationError):
        outbox_enqueue_many(rows)
    assert not OutboxMessage.objects.exists()


def test_bulk_enqueue_of_checked_content_stores_defaults_and_still_checks_the_rest() -> None:
    # The scheduler passes content_checked=True (it checked each message while rendering):
    # the row must still get every default right and its kind, key and time checked.
    customer = make_customer()
    now = timezone.now()
    content = {"subject": "件名", "text": "本文"}
    outbox_enqueue_many(
        [OutboxRow(customer.pk, "email", Purpose.MARKETING, "checked-1", content, now)],
        content_checked=True,
    )
    stored = OutboxMessage.objects.get(dedupe_key="checked-1")
    assert stored.content == content
    assert (stored.status, stored.attempts, stored.sent_channel) == (OutboxStatus.PENDING, 0, "")
    assert stored.next_attempt_at == now
    assert stored.lease_until is None
    assert stored.delivery_list_id is None
    with pytest.raises(ValidationError, match="最適チャネル"):
        outbox_enqueue_many(
            [OutboxRow(customer.pk, "best", Purpose.TRANSACTIONAL, "checked-2", content, now)],
            content_checked=True,
        )
    naive = dt.datetime(2026, 11, 1, 10)
    with pytest.raises(ValidationError, match="タイムゾーン"):
        outbox_enqueue_many(
            [OutboxRow(customer.pk, "email", Purpose.MARKETING, "checked-3", content, naive)],
            content_checked=True,
        )
    assert OutboxMessage.objects.count() == 1


def test_claiming_finds_expired_leases_through_an_index() -> None:
    # outbox_lease holds claimed rows only (a tick's new messages skip it); the worker's claim
    # must still find a killed worker's expired leases through an index, not by reading the
    # whole outbox (millions of finished rows)
    now = timezone.now()
    query = OutboxMessage.objects.filter(DeliveryWorker()._due(now)).order_by("next_attempt_at")
    sql, params = query.values_list("pk", flat=True)[:100].query.sql_with_params()
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            # The test table is tiny: a scan would win, so see whether an index can serve both
            # branches. (Which one PostgreSQL picks for the claimed rows depends on its
            # statistics; both lead with the status.)
            cursor.execute("SET LOCAL enable_seqscan = off")
            cursor.execute(f"EXPLAIN {sql}", params)
            plan = " ".join(row[0] for row in cursor.fetchall())
            assert "Seq Scan" not in plan
            assert "(status)::text = 'claimed'::text" in plan
            return
        cursor.execute(f"EXPLAIN QUERY PLAN {sql}", params)
        plan = " ".join(str(row) for row in cursor.fetchall())
    # SQLite (no statistics) takes each branch through the index made for it
    assert "outbox_lease" in plan
    assert "outbox_due" in plan
