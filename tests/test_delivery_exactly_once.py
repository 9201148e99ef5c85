"""Exactly-once delivery with real worker processes and a real SMTP server (RELIABILITY S1–S3).

Workers run as `kizuna worker` subprocesses against the test database (a file on SQLite, a
server on PostgreSQL), so claims really race and a SIGKILL really kills.
"""

from __future__ import annotations

import collections
import os
import signal
import time
from collections.abc import Iterator

import pytest
from django.db import transaction

from kizuna.campaigns.journal import read_marks
from kizuna.campaigns.models import DeliverySettings, OutboxMessage, OutboxStatus
from tests.delivery_support import (
    SmtpServer,
    consenting_customer,
    mail,
    open_all_day,
    run_worker,
    start_worker,
    wait_all,
    worker_env,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    with SmtpServer() as server:
        yield server


@pytest.fixture
def env(smtp: SmtpServer, tmp_path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    open_all_day()
    return worker_env(smtp.port, KIZUNA_DATA_DIR=str(tmp_path))


def queue(count: int, prefix: str = "m") -> list[OutboxMessage]:
    messages = []
    for n in range(count):
        customer = consenting_customer(email_address=f"{prefix}{n}@example.jp")
        messages.append(mail(customer, f"{prefix}-{n}"))
    return messages


def assert_each_arrived_once(smtp: SmtpServer, expected: int) -> None:
    counts = collections.Counter(smtp.handler.ids())
    assert sorted(counts.values()) == [1] * expected, "a message arrived twice or not at all"
    sent = OutboxMessage.objects.filter(status=OutboxStatus.SENT)
    assert sent.count() == expected
    assert set(sent.values_list("message_id", flat=True)) == set(counts)


def test_a_rolled_back_decision_sends_nothing(smtp, env) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer()

    @transaction.atomic
    def decide() -> None:
        mail(customer, "rolled-back")
        raise RuntimeError("the scenario step failed after queueing")

    with pytest.raises(RuntimeError):
        decide()
    run_worker(env)
    assert smtp.handler.received == []


def test_a_worker_killed_mid_batch_loses_nothing_and_doubles_nothing(smtp, env, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # given 20 committed messages and a worker that claims them all in one batch
    queue(20)
    smtp.handler.hold_at = 5
    env["KIZUNA_OUTBOX_LEASE_SECONDS"] = "2"
    worker = start_worker(env, "--batch-size", "20")
    # when the worker is killed while the server is receiving its 5th message
    assert smtp.handler.holding.wait(60), "the worker never reached the 5th message"
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    smtp.handler.release.set()
    # then the server has the four before it, and each is either marked sent or named in the
    # dead worker's sent journal (marks reach the outbox in groups, at least once a second)
    assert len(smtp.handler.received) == 4
    [dead_token] = set(OutboxMessage.objects.values_list("claimed_by", flat=True))
    [journal] = (tmp_path / "outbox-journal").glob("*.jsonl")
    journaled = {m.outbox_id for m in read_marks(journal)}
    recorded = set(
        OutboxMessage.objects.filter(status=OutboxStatus.SENT).values_list("pk", flat=True)
    )
    assert len(journaled | recorded) == 4
    assert OutboxMessage.objects.filter(status=OutboxStatus.CLAIMED).count() == 20 - len(recorded)
    # when a new worker starts after the lease ran out
    time.sleep(2.5)
    run_worker(env)
    # then the four were recorded under the dead worker's claim (from its journal), not sent
    # again, and every message arrived exactly once, by Message-ID
    assert_each_arrived_once(smtp, 20)
    assert OutboxMessage.objects.exclude(status=OutboxStatus.SENT).count() == 0
    accepted = OutboxMessage.objects.filter(pk__in=journaled | recorded)
    assert set(accepted.values_list("claimed_by", flat=True)) == {dead_token}
    assert not list((tmp_path / "outbox-journal").glob("*.jsonl"))


def test_a_killed_worker_s_journal_is_replayed_before_its_lease_runs_out(smtp, env) -> None:  # type: ignore[no-untyped-def]
    # given a worker killed while its 3rd message was on the wire, with a long lease
    queue(6, prefix="j")
    smtp.handler.hold_at = 3
    worker = start_worker(env, "--batch-size", "6")
    assert smtp.handler.holding.wait(60)
    os.kill(worker.pid, signal.SIGKILL)
    worker.wait(30)
    smtp.handler.release.set()
    # when the next worker starts at once (the other four are still leased to the dead one)
    run_worker(env)
    # then the two the server accepted are recorded as sent and nothing went out twice
    assert len(smtp.handler.received) == 2
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 2
    assert OutboxMessage.objects.filter(status=OutboxStatus.CLAIMED).count() == 4
    assert {r.message_id for r in smtp.handler.received} == set(
        OutboxMessage.objects.filter(status=OutboxStatus.SENT).values_list("message_id", flat=True)
    )


def test_pausing_mid_run_and_resuming_skips_no_one_and_mails_no_one_twice(smtp, env) -> None:  # type: ignore[no-untyped-def]
    queue(30, prefix="p")
    smtp.handler.hold_at = 5
    smtp.handler.hold_answer = "250"
    worker = start_worker(env, "--batch-size", "30", "--interval", "0.2")
    assert smtp.handler.holding.wait(60)
    # when an admin pauses sending while the 5th message is on the wire
    DeliverySettings.objects.filter(pk=1).update(paused=True)
    time.sleep(1.2)  # the worker looks at the switch at most once a second
    smtp.handler.release.set()
    deadline = time.monotonic() + 30
    while OutboxMessage.objects.filter(status=OutboxStatus.CLAIMED).exists():
        assert time.monotonic() < deadline, "the worker kept its claims while paused"
        time.sleep(0.1)
    # then the worker stopped: the rest went back to the queue, nobody was skipped
    sent_while_pausing = len(smtp.handler.received)
    assert 5 <= sent_while_pausing < 30
    time.sleep(1)
    assert len(smtp.handler.received) == sent_while_pausing
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 30 - (
        sent_while_pausing
    )
    # when sending resumes
    DeliverySettings.objects.filter(pk=1).update(paused=False)
    deadline = time.monotonic() + 60
    while OutboxMessage.objects.exclude(status=OutboxStatus.SENT).exists():
        assert time.monotonic() < deadline, "sending did not resume"
        time.sleep(0.2)
    # then the worker shuts down cleanly on SIGTERM
    worker.send_signal(signal.SIGTERM)
    assert worker.wait(30) == 0
    assert_each_arrived_once(smtp, 30)
    assert not OutboxMessage.objects.filter(status=OutboxStatus.SKIPPED).exists()


def test_sigterm_mid_batch_finishes_the_message_and_gives_the_rest_back(smtp, env) -> None:  # type: ignore[no-untyped-def]
    queue(12, prefix="t")
    smtp.handler.hold_at = 3
    smtp.handler.hold_answer = "250"
    worker = start_worker(env, "--batch-size", "12")
    assert smtp.handler.holding.wait(60)
    # when the service manager stops the worker while its 3rd message is on the wire
    worker.send_signal(signal.SIGTERM)
    time.sleep(0.5)
    smtp.handler.release.set()
    # then it finishes that message, exits cleanly and leaves nothing claimed
    assert worker.wait(30) == 0
    assert len(smtp.handler.received) == 3
    assert OutboxMessage.objects.filter(status=OutboxStatus.SENT).count() == 3
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 9
    assert not OutboxMessage.objects.filter(status=OutboxStatus.CLAIMED).exists()
    # and the next worker sends the rest, once each
    run_worker(env)
    assert_each_arrived_once(smtp, 12)


def test_parallel_workers_send_each_message_exactly_once(smtp, env) -> None:  # type: ignore[no-untyped-def]
    queue(120, prefix="par")
    workers = [start_worker(env, "--once", "--batch-size", "7") for _ in range(4)]
    list(wait_all(workers))
    assert_each_arrived_once(smtp, 120)
    # every worker process took part (the claims were really contended)
    tokens = set(OutboxMessage.objects.values_list("claimed_by", flat=True))
    assert len({token.split(":")[0] for token in tokens}) >= 2
