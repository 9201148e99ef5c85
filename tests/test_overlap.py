"""Reading and writing on other threads while a tick renders (core.overlap), and the
scheduler's big steps that use it: the same messages as in line, each chunk's dispatches with
their messages, and a conflict stopping the step without doubling anything.

These tests commit (transaction=True): a second connection sees only what is committed, so
the overlapping path runs only outside a transaction, as a tick does."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from typing import Any

import pytest
from django.db import IntegrityError, connection, connections, transaction

from kizuna.campaigns.automation import scheduler
from kizuna.campaigns.automation.models import (
    DispatchStatus,
    Enrollment,
    ScenarioStep,
    StepDispatch,
)
from kizuna.campaigns.models import OutboxMessage
from kizuna.core.overlap import can_overlap, read_ahead, writes_behind
from kizuna.customers.models import Customer
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import jst, scenario, step

START = jst(2026, 5, 1)
NOW = jst(2026, 5, 2, 10)
NAMES = ["青木", "石田", "上野", "江口", "大西", "加藤", "木村"]


@pytest.fixture(autouse=True)
def _daily_ticks_are_normal_running(settings):  # type: ignore[no-untyped-def]
    settings.KIZUNA_SCHEDULER_BACKLOG_MINUTES = 3 * 24 * 60


# --- core.overlap -----------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_reads_ahead_in_order_on_a_thread_with_its_own_connection() -> None:
    # given: customers committed by this connection
    made = [make_customer(family_name=name).pk for name in NAMES[:5]]
    seen: list[tuple[str, int]] = []

    def read(ids: list[int]) -> list[str]:
        seen.append((threading.current_thread().name, id(connections["default"])))
        return list(
            Customer.objects.filter(pk__in=ids).order_by("pk").values_list("family_name", flat=True)
        )

    # when: two chunks are read ahead
    assert can_overlap()
    got = list(read_ahead(read, [made[:3], made[3:]], overlap=True))
    # then: in order, on the reader thread, not on this connection; its connection is closed
    assert got == [NAMES[:3], NAMES[3:5]]
    assert {name for name, _ in seen} == {"kizuna-read-ahead"}
    assert id(connections["default"]) not in {conn for _, conn in seen}


@pytest.mark.django_db(transaction=True)
def test_a_failing_read_ahead_raises_its_own_error_and_reads_no_further() -> None:
    read_chunks: list[int] = []

    def read(chunk: int) -> int:
        read_chunks.append(chunk)
        if chunk == 2:
            raise KeyError("chunk 2")
        return chunk

    got: list[int] = []
    with pytest.raises(KeyError, match="chunk 2"):
        got.extend(read_ahead(read, [1, 2, 3, 4], overlap=True))
    assert got == [1]
    assert read_chunks == [1, 2]


@pytest.mark.django_db
def test_in_a_transaction_nothing_is_read_on_another_connection() -> None:
    # A second connection would not see this transaction's rows.
    with transaction.atomic():
        assert not can_overlap()


@pytest.mark.django_db(transaction=True)
def test_writes_behind_share_the_callers_transaction() -> None:
    # given: a transaction on this thread
    threads: list[str] = []

    def write(name: str) -> None:
        threads.append(threading.current_thread().name)
        make_customer(family_name=name)

    with pytest.raises(RuntimeError), transaction.atomic():
        with writes_behind(overlap=True) as writer:
            writer.submit(write, "青木")
            writer.submit(write, "石田")
        # when: the writes are in, the caller sees them, then the transaction rolls back
        assert Customer.objects.count() == 2
        raise RuntimeError("roll back")
    # then: they ran on the writer thread, in the caller's transaction: rolled back with it
    assert threads == ["kizuna-writes-behind", "kizuna-writes-behind"]
    assert Customer.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_failing_write_is_raised_at_the_end_and_nothing_after_it_runs() -> None:
    ran: list[str] = []

    def write(name: str) -> None:
        if name == "bad":
            raise IntegrityError("duplicate")
        ran.append(name)

    with pytest.raises(IntegrityError, match="duplicate"), writes_behind(overlap=True) as writer:
        for name in ("first", "bad", "after"):
            writer.submit(write, name)
    assert ran == ["first"]
    # the caller's connection is its own again
    assert Customer.objects.count() == 0


# --- the scheduler's big steps ----------------------------------------------------------------


def _buyers() -> dict[int, str]:
    """A first-purchase scenario with one immediate step and a buyer per name: {id: name}."""
    scenario(trigger={"kind": "first_purchase"}, steps=[step("now")], activated_at=START)
    buyers = {}
    for name in NAMES:
        customer = make_customer(family_name=name)
        make_order(customer, ordered_at=jst(2026, 5, 2, 9))
        buyers[customer.pk] = name
    return buyers


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Chunks of two customers, so seven buyers make a big step; returns the names of the
    threads that read the contexts."""
    monkeypatch.setattr(scheduler, "CONTEXT_CHUNK", 2)
    readers: list[str] = []
    real = scheduler.customer_contexts

    def spy(*args: Any, **kwargs: Any) -> dict[int, dict[str, Any]]:
        readers.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(scheduler, "customer_contexts", spy)
    return readers


@pytest.mark.django_db(transaction=True)
def test_a_big_step_renders_while_reading_and_writing_on_other_threads(
    small_chunks: list[str],
) -> None:
    # given: seven buyers, chunks of two
    buyers = _buyers()
    # when
    report = scheduler.tick(NOW)
    # then: every buyer has one queued dispatch and one message in their own name
    assert report.total("queued") == len(NAMES)
    assert set(small_chunks) == {"kizuna-read-ahead"}
    assert len(small_chunks) == 4
    messages = OutboxMessage.objects.all()
    assert sorted(m.customer_id for m in messages) == sorted(buyers)
    for message in messages:
        assert message.content["subject"] == f"{buyers[message.customer_id]} 花子 様へ"
    dispatches = StepDispatch.objects.all()
    assert dispatches.count() == len(NAMES)
    assert {d.status for d in dispatches} == {DispatchStatus.QUEUED}
    assert {m.enrollment_id for m in messages} == {d.enrollment_id for d in dispatches}


@pytest.mark.django_db(transaction=True)
def test_a_small_step_stays_on_the_ticks_own_thread(
    small_chunks: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scheduler, "CONTEXT_CHUNK", 10)
    _buyers()
    scheduler.tick(NOW)
    assert small_chunks == [threading.main_thread().name]
    assert OutboxMessage.objects.count() == len(NAMES)


@pytest.mark.django_db(transaction=True)
def test_a_conflict_in_a_later_chunk_keeps_the_earlier_chunks_and_doubles_nothing(
    small_chunks: list[str], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # given: seven buyers; while this tick renders, another scheduler (a lease that ran out)
    # records the step for the buyer in the third chunk (customers in id order, two a chunk)
    buyers = _buyers()
    third_chunk_buyer = sorted(buyers)[4]
    real_due_rows = scheduler.due_rows

    def due_rows_then_another_scheduler(query: Any) -> list[tuple[Any, ...]]:
        rows = real_due_rows(query)
        enrollment = Enrollment.objects.get(customer_id=third_chunk_buyer)
        StepDispatch.objects.create(
            enrollment=enrollment,
            step=ScenarioStep.objects.get(),
            repeat=0,
            due_at=NOW,
            status=DispatchStatus.QUEUED,
            decided_at=NOW,
        )
        return rows

    monkeypatch.setattr(scheduler, "due_rows", due_rows_then_another_scheduler)
    # when
    with caplog.at_level(logging.WARNING, logger=scheduler.logger.name):
        scheduler.tick(NOW)
    # then: the first two chunks went out with their dispatches; the rest waits for the next
    # tick; nobody has two dispatches or two messages
    assert "dispatch conflict" in caplog.text
    first_two_chunks = sorted(buyers)[:4]
    assert sorted(OutboxMessage.objects.values_list("customer_id", flat=True)) == first_two_chunks
    per_enrollment = StepDispatch.objects.values_list("enrollment__customer_id", flat=True)
    assert sorted(per_enrollment) == sorted([*first_two_chunks, third_chunk_buyer])
    assert connection.in_atomic_block is False
    # and the next tick sends the rest, once each
    monkeypatch.setattr(scheduler, "due_rows", real_due_rows)
    scheduler.tick(NOW + dt.timedelta(minutes=1))
    sent = sorted(OutboxMessage.objects.values_list("customer_id", flat=True))
    assert sent == sorted(c for c in buyers if c != third_chunk_buyer)
