"""S10: two schedulers never double-fire; a stale backlog is not sent without confirmation.
Also: ticks are idempotent, and each message's outbox key names what it is for."""

from __future__ import annotations

import datetime as dt
import threading
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone

from kizuna.campaigns.automation.models import (
    Backlog,
    DispatchStatus,
    Enrollment,
    MessageTemplate,
    SchedulerLease,
    StepDispatch,
    TickLog,
)
from kizuna.campaigns.automation.scheduler import lease_acquire, prune_tick_logs, tick
from kizuna.campaigns.automation.services import ScenarioError, backlog_confirm, backlog_discard
from kizuna.campaigns.models import OutboxMessage
from kizuna.commerce.models import Shipment
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import STAFF, jst, scenario, step, template

START = jst(2026, 5, 1)


def _buyers(count: int, at: dt.datetime) -> list[int]:
    ids = []
    for _ in range(count):
        customer = make_customer()
        make_order(customer, ordered_at=at)
        ids.append(customer.pk)
    return ids


@pytest.mark.django_db
def test_a_second_tick_at_the_same_moment_changes_nothing() -> None:
    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    _buyers(5, jst(2026, 5, 2, 9))
    first = tick(jst(2026, 5, 2, 10))
    second = tick(jst(2026, 5, 2, 10))
    assert (first.total("queued"), second.total("queued")) == (5, 0)
    assert (Enrollment.objects.count(), OutboxMessage.objects.count()) == (5, 5)


@pytest.mark.django_db
def test_the_outbox_key_is_scenario_step_customer_and_occurrence() -> None:
    s = scenario(trigger={"kind": "first_purchase"}, steps=[step("hello")], activated_at=START)
    customer = make_customer()
    order = make_order(customer, ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    message = OutboxMessage.objects.get()
    assert message.dedupe_key == f"scn:{s.pk}:hello:{customer.pk}:order:{order.pk}"
    assert (message.scenario_id, message.step_key) == (s.pk, "hello")
    assert message.enrollment_id == Enrollment.objects.get().pk


@pytest.mark.django_db
def test_a_scheduler_holding_the_lease_keeps_the_other_out() -> None:
    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    _buyers(2, jst(2026, 5, 2, 9))
    assert lease_acquire("another-machine")
    report = tick(jst(2026, 5, 2, 10))
    assert not report.ran
    assert "別のスケジューラ" in report.note
    assert not Enrollment.objects.exists()
    assert not OutboxMessage.objects.exists()


@pytest.mark.django_db
def test_a_crashed_schedulers_lease_runs_out() -> None:
    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    _buyers(1, jst(2026, 5, 2, 9))
    assert lease_acquire("crashed-machine", ttl=dt.timedelta(seconds=-1))
    assert tick(jst(2026, 5, 2, 10)).ran
    assert OutboxMessage.objects.count() == 1
    assert SchedulerLease.objects.get().holder == ""


@pytest.mark.django_db(transaction=True)
def test_two_schedulers_in_parallel_never_double_enroll_or_enqueue() -> None:
    # given: 40 first purchases and two schedulers started at the same moment, repeatedly
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[step("a"), step("b", anchor="purchase")],
        holdout_percent=10,
        activated_at=START,
    )
    buyers = _buyers(40, jst(2026, 5, 2, 9))
    now = jst(2026, 5, 2, 10)
    barrier = threading.Barrier(2)
    ran: list[bool] = []
    errors: list[BaseException] = []

    def scheduler() -> None:
        try:
            for _ in range(5):
                barrier.wait(timeout=30)
                ran.append(tick(now).ran)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=scheduler) for _ in range(2)]
    # when
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    # then: every buyer once, every treated buyer's two messages once
    assert errors == []
    assert any(ran)
    enrolled = list(Enrollment.objects.values_list("customer_id", flat=True))
    assert sorted(enrolled) == sorted(buyers)
    treated = Enrollment.objects.filter(holdout=False).count()
    keys = list(OutboxMessage.objects.values_list("dedupe_key", flat=True))
    assert len(keys) == len(set(keys)) == 2 * treated
    assert StepDispatch.objects.count() == 2 * len(buyers)


@pytest.mark.django_db(transaction=True)
def test_two_scheduler_processes_never_double_fire(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    from django.conf import settings

    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    buyers = _buyers(30, jst(2026, 5, 2, 9))
    db = settings.DATABASES["default"]
    env = dict(os.environ)
    if db["ENGINE"].endswith("sqlite3"):
        env["DATABASE_URL"] = f"sqlite:///{db['NAME']}"
    else:
        env["DATABASE_URL"] = (
            f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
        )
    command = [sys.executable, "-m", "kizuna", "scenarios", "run", "--now", "2026-05-02T10:00"]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # noqa: S603
        for _ in range(3)
    ]
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0, 0, 0], outputs
    assert sorted(Enrollment.objects.values_list("customer_id", flat=True)) == sorted(buyers)
    keys = list(OutboxMessage.objects.values_list("dedupe_key", flat=True))
    assert len(keys) == len(set(keys)) == 30


@pytest.mark.django_db
def test_after_a_long_stop_due_messages_wait_for_confirmation() -> None:
    # given: the scheduler last ran three days ago (stopped, or the database was restored)
    s = scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    tick(jst(2026, 5, 2, 10))
    buyers = _buyers(3, jst(2026, 5, 3, 9))
    # when: it starts again
    report = tick(jst(2026, 5, 5, 10))
    # then: the customers are enrolled, but nothing goes out on its own
    assert report.backlog_mode
    assert "確認待ち" in report.note
    assert Enrollment.objects.count() == 3
    assert not OutboxMessage.objects.exists()
    backlog = Backlog.objects.get()
    assert (backlog.scenario_id, backlog.size, backlog.status) == (s.pk, 3, Backlog.Status.PENDING)
    assert backlog.oldest_due_at == jst(2026, 5, 3, 9)
    # when: the next minute's tick — still nothing without a person's decision
    tick(jst(2026, 5, 5, 10, 1))
    assert not OutboxMessage.objects.exists()
    # when: someone confirms, and the scheduler ticks
    backlog_confirm(backlog=backlog, acting_user=STAFF)
    tick(jst(2026, 5, 5, 10, 2))
    # then: the held messages are queued, for now
    messages = OutboxMessage.objects.all()
    assert sorted(m.customer_id for m in messages) == sorted(buyers)
    assert {m.send_after for m in messages} == {jst(2026, 5, 5, 10, 2)}
    assert not StepDispatch.objects.exclude(status=DispatchStatus.QUEUED).exists()


@pytest.mark.django_db
def test_a_discarded_backlog_is_never_sent() -> None:
    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    tick(jst(2026, 5, 2, 10))
    _buyers(2, jst(2026, 5, 3, 9))
    tick(jst(2026, 5, 6, 10))
    backlog = Backlog.objects.get()
    backlog_discard(backlog=backlog, acting_user=STAFF)
    tick(jst(2026, 5, 6, 10, 1))
    tick(jst(2026, 5, 6, 10, 2))
    assert not OutboxMessage.objects.exists()
    assert StepDispatch.objects.filter(status=DispatchStatus.DISCARDED).count() == 2
    with pytest.raises(ScenarioError):
        backlog_confirm(backlog=backlog, acting_user=STAFF)


@pytest.mark.django_db
def test_new_events_after_the_stop_are_sent_normally() -> None:
    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    tick(jst(2026, 5, 2, 10))
    _buyers(1, jst(2026, 5, 3, 9))
    tick(jst(2026, 5, 5, 10))  # backlog: held
    fresh = _buyers(1, jst(2026, 5, 5, 10, 0, 30))
    tick(jst(2026, 5, 5, 10, 1))
    assert list(OutboxMessage.objects.values_list("customer_id", flat=True)) == fresh


@pytest.mark.django_db
def test_a_message_far_past_its_time_is_held_even_in_normal_running() -> None:
    # given: a delivery recorded three days late, for an "on delivery day" message
    scenario(
        trigger={"kind": "first_purchase"},
        steps=[step("arrived", anchor="delivery", send_time="10:00")],
        activated_at=START,
    )
    customer = make_customer()
    order = make_order(customer, ordered_at=jst(2026, 5, 1, 9))
    for minute in range(3):
        tick(jst(2026, 5, 5, 10, minute))
    Shipment.objects.create(
        order=order, shipped_on=dt.date(2026, 5, 1), delivered_on=dt.date(2026, 5, 2)
    )
    # when
    report = tick(jst(2026, 5, 5, 10, 3))
    # then
    assert not report.backlog_mode
    assert report.total("pending_confirmation") == 1
    assert not OutboxMessage.objects.exists()
    assert "遅れて" in Backlog.objects.get().reason


@pytest.mark.django_db
def test_each_tick_is_logged_with_what_it_did() -> None:
    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    _buyers(2, jst(2026, 5, 2, 9))
    out = StringIO()
    call_command("scenarios", "run", "--now", "2026-05-02T10:00", stdout=out)
    log = TickLog.objects.get()
    assert log.status == TickLog.Status.DONE
    assert log.now == jst(2026, 5, 2, 10)
    assert log.report["scenarios"][0]["queued"] == 2
    assert "送信キュー 2" in out.getvalue()


def _tick_log(started: dt.datetime, status: str = TickLog.Status.DONE) -> TickLog:
    return TickLog.objects.create(started_at=started, now=started, holder="h", status=status)


@pytest.mark.django_db
def test_tick_logs_older_than_30_days_are_pruned_but_the_latest_finished_one_is_kept() -> None:
    # given a month-old finished tick, a failed tick after it, and one from yesterday
    wall = jst(2026, 6, 1, 10)
    old_done = _tick_log(wall - dt.timedelta(days=40))
    older = _tick_log(wall - dt.timedelta(days=45))
    old_failed = _tick_log(wall - dt.timedelta(days=35), TickLog.Status.FAILED)
    recent = _tick_log(wall - dt.timedelta(days=1), TickLog.Status.FAILED)
    # when pruned
    deleted = prune_tick_logs(wall)
    # then what is older than 30 days goes, except the latest finished tick, which the next
    # tick needs to notice the scheduler was stopped (S10)
    assert deleted == 2
    assert set(TickLog.objects.values_list("pk", flat=True)) == {old_done.pk, recent.pk}
    assert not TickLog.objects.filter(pk__in=[older.pk, old_failed.pk]).exists()


@pytest.mark.django_db
def test_a_tick_prunes_old_logs_after_it_has_read_the_gap() -> None:
    # given a scheduler that last ran 40 days ago (by the clock and by its logs)
    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    long_ago = timezone.now() - dt.timedelta(days=40)
    _tick_log(long_ago)
    # when it runs again
    report = tick(timezone.now())
    # then it knew it had been stopped, and only its own log is left
    assert report.backlog_mode
    assert list(TickLog.objects.values_list("status", flat=True)) == [TickLog.Status.DONE]
    assert TickLog.objects.get().started_at > long_ago


@pytest.mark.django_db
def test_date_based_triggers_run_hourly_and_at_each_new_jst_day() -> None:
    # given: a birthday scenario that has just looked at today's birthdays
    scenario(trigger={"kind": "birthday"}, activated_at=START)
    tick(jst(2026, 5, 10, 10))
    late = make_customer(birthday=dt.date(1990, 5, 10))  # registered at 10:30 the same day
    # when: the next minutes' ticks
    tick(jst(2026, 5, 10, 10, 31))
    # then: the birthday query waits for its hour…
    assert not Enrollment.objects.filter(customer=late).exists()
    # …and then finds the customer, with the message due at the day's start
    tick(jst(2026, 5, 10, 11, 0))
    assert Enrollment.objects.filter(customer=late).exists()
    assert OutboxMessage.objects.get(customer=late).send_after == jst(2026, 5, 10)


@pytest.mark.django_db
def test_purchase_triggers_run_every_tick() -> None:
    scenario(trigger={"kind": "first_purchase"}, activated_at=START)
    tick(jst(2026, 5, 10, 10))
    buyer = _buyers(1, jst(2026, 5, 10, 10, 0, 30))
    tick(jst(2026, 5, 10, 10, 1))
    assert list(Enrollment.objects.values_list("customer_id", flat=True)) == buyer


# Three loops over the family name: 8 rounds for a two-letter name, 27,000 for a 30-letter
# one — over the 10,000 a template may loop (templating.MAX_LOOPS), for that customer only.
NAME_LOOPS = (
    "{% for a in family_name %}{% for b in family_name %}{% for c in family_name %}・"
    "{% endfor %}{% endfor %}{% endfor %}"
)


@pytest.mark.django_db
def test_a_template_failing_for_one_customer_skips_only_their_message() -> None:
    # given: a step whose template cannot be rendered for one customer's (long) name
    template("loops", text=NAME_LOOPS)
    scenario(trigger={"kind": "first_purchase"}, steps=[step(template="loops")], activated_at=START)
    ordinary = _buyers(2, jst(2026, 5, 2, 9))
    long_named = make_customer(family_name="長" * 30)
    make_order(long_named, ordered_at=jst(2026, 5, 2, 9))
    # when
    report = tick(jst(2026, 5, 2, 10))
    # then: the others' messages are queued, theirs is skipped, and the scenario goes on
    [scn] = report.scenarios
    assert (scn.error, scn.queued, scn.skipped) == ("", 2, 1)
    assert set(OutboxMessage.objects.values_list("customer_id", flat=True)) == set(ordinary)


@pytest.mark.django_db
def test_a_template_failing_for_everyone_holds_the_messages_until_it_is_fixed() -> None:
    # given: a template broken for every customer (stored before templates were checked)
    broken = template("broken")
    MessageTemplate.objects.filter(pk=broken.pk).update(text='{{ last_order_date|date:"H:i" }}')
    scenario(
        trigger={"kind": "first_purchase"}, steps=[step(template="broken")], activated_at=START
    )
    _buyers(2, jst(2026, 5, 2, 9))
    # when
    report = tick(jst(2026, 5, 2, 10))
    # then: the scenario reports the template's error and nothing is decided or sent
    assert report.scenarios[0].error.startswith("TemplateRenderError")
    assert not StepDispatch.objects.exists()
    assert not OutboxMessage.objects.exists()
    # when: the template is fixed, the next tick sends the messages that waited
    MessageTemplate.objects.filter(pk=broken.pk).update(text="{{ name }} 様")
    again = tick(jst(2026, 5, 2, 10, 1))
    assert (again.scenarios[0].error, again.total("queued")) == ("", 2)
