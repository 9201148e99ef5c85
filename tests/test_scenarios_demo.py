"""The demo's running scenarios: history written as the scheduler would have written it,
messages only where the rules allow, responses only from treated customers, deterministic."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest
from django.db import connection, transaction
from django.db.models import Count, F

from kizuna.campaigns.automation.clock import jst_at, jst_date
from kizuna.campaigns.automation.lift import scenario_lift
from kizuna.campaigns.automation.models import (
    DispatchStatus,
    Enrollment,
    Scenario,
    ScenarioStatus,
    StepDispatch,
)
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.delivery import CAPPED_CHANNELS
from kizuna.campaigns.models import DeliveryList, DeliverySettings, OutboxMessage, OutboxStatus
from kizuna.campaigns.sender import current_sender
from kizuna.commerce.models import Order
from kizuna.customers.models import TimelineEvent, TimelineKind
from kizuna.demo.build import build_demo
from kizuna.demo.management.commands.demo import FILE_BACKEND, worker_environment
from kizuna.demo.scenarios import (
    HISTORY_TABLES,
    RESPONSE,
    DemoScenariosExistError,
    seed_demo_scenarios,
    seed_demo_sender,
)

pytestmark = [pytest.mark.django_db, pytest.mark.slow]
AS_OF = dt.date(2025, 6, 30)


def _demo(seed: int = 7) -> None:
    build_demo(customers=500, seed=seed, as_of=AS_OF)
    seed_demo_scenarios(as_of=AS_OF, seed=seed)


def _digest() -> str:
    """What the history holds, without database ids that sequences hand out."""
    rows = sorted(
        f"{e.scenario.key}|{e.customer_id}|{e.occurrence}|{e.holdout}|{e.status}|{e.anchor_at}"
        for e in Enrollment.objects.select_related("scenario")
    )
    messages = sorted(
        f"{m.customer_id}|{m.step_key}|{m.status}|{m.sent_at}|{m.content}"
        for m in OutboxMessage.objects.all()
    )
    orders = sorted(
        f"{o.customer_id}|{o.ordered_at}|{o.total}"
        for o in Order.objects.filter(number__startswith="KZS-")
    )
    return hashlib.sha256("\n".join(rows + messages + orders).encode()).hexdigest()


def test_the_demo_ships_running_scenarios_with_history_lift_and_responses() -> None:
    # given: the demo (built once: it takes a while)
    _demo()
    # then
    _history_is_what_the_scheduler_would_have_written()
    _responses_come_only_from_customers_who_were_sent_a_message()
    _lift_is_measured_from_the_history_on_day_one()
    _seeding_twice_is_refused_and_the_scheduler_takes_over()
    _the_demo_shop_has_a_sender_block()
    _paper_and_call_messages_are_on_the_weeks_lists()
    _the_planner_knows_the_history_on_postgresql()


def _history_is_what_the_scheduler_would_have_written() -> None:
    end = jst_at(AS_OF)
    # and one past campaign, archived (no history: it ended before the demo's history)
    archived = Scenario.objects.filter(status=ScenarioStatus.ARCHIVED)
    assert list(archived.values_list("key", flat=True)) == ["limited-campaign-ended"]
    assert not Enrollment.objects.filter(scenario__in=archived).exists()
    scenarios = Scenario.objects.exclude(status=ScenarioStatus.ARCHIVED)
    assert set(scenarios.values_list("key", flat=True)) == set(RESPONSE)
    assert {s.status for s in scenarios} == {ScenarioStatus.ACTIVE}
    for scenario in scenarios:
        counts = dict(
            Enrollment.objects.filter(scenario=scenario)
            .values_list("holdout")
            .annotate(n=Count("pk"))
            .values_list("holdout", "n")
        )
        assert counts.get(False, 0) > 0, scenario.key
        assert counts.get(True, 0) > 0, scenario.key
    # messages only to the treated group, all in the past, with a timeline row when sent
    messages = OutboxMessage.objects.all()
    assert messages.exists()
    assert not messages.filter(
        enrollment_id__in=Enrollment.objects.filter(holdout=True).values("pk")
    ).exists()
    sent = messages.filter(status=OutboxStatus.SENT)
    assert not sent.filter(sent_at__gte=end).exists()
    # the frequency cap counts the demo's past sends, as it counts the worker's
    capped = sent.filter(sent_channel__in=CAPPED_CHANNELS)
    assert capped.exists()
    assert not capped.exclude(cap_counted_at=F("sent_at")).exists()
    assert not messages.exclude(status=OutboxStatus.SENT).exclude(cap_counted_at=None).exists()
    assert (
        messages.filter(status=OutboxStatus.SKIPPED).exclude(reason="").count()
        == messages.filter(status=OutboxStatus.SKIPPED).count()
    )
    timeline = TimelineEvent.objects.filter(
        kind=TimelineKind.MESSAGE, ref_entity="campaigns.OutboxMessage"
    )
    assert timeline.count() == sent.count()
    assert StepDispatch.objects.filter(status=DispatchStatus.HELD_OUT).exists()


def _the_planner_knows_the_history_on_postgresql() -> None:
    # A table never analysed has reltuples -1 and looks tiny to the planner; the first tick
    # after the build then picked plans fit for empty tables (docs/performance.md).
    if connection.vendor != "postgresql":
        return
    tables = [m._meta.db_table for m in HISTORY_TABLES]
    with connection.cursor() as cursor:
        cursor.execute("SELECT relname, reltuples FROM pg_class WHERE relname = ANY(%s)", [tables])
        estimated = dict(cursor.fetchall())
    assert set(estimated) == set(tables)
    assert estimated[Enrollment._meta.db_table] > 0
    assert estimated[OutboxMessage._meta.db_table] > 0
    assert all(rows >= 0 for rows in estimated.values()), estimated


def _responses_come_only_from_customers_who_were_sent_a_message() -> None:
    responses = Order.objects.filter(number__startswith="KZS-")
    assert responses.exists()
    for order in responses:
        first = (
            OutboxMessage.objects.filter(customer_id=order.customer_id, status=OutboxStatus.SENT)
            .order_by("sent_at")
            .first()
        )
        assert first is not None
        assert first.sent_at is not None
        assert first.sent_at < order.ordered_at
        assert not Enrollment.objects.get(pk=first.enrollment_id).holdout


def _lift_is_measured_from_the_history_on_day_one() -> None:
    ran = Scenario.objects.filter(key__in=RESPONSE)
    lifts = [scenario_lift(s, now=jst_at(AS_OF)) for s in ran]
    assert all(l.conversion.treated_n > 0 and l.conversion.holdout_n > 0 for l in lifts)  # noqa: E741


def test_the_same_seed_writes_the_same_history() -> None:
    digests = []
    for _ in range(2):
        with transaction.atomic():
            _demo(seed=11)
            digests.append(_digest())
            transaction.set_rollback(True)
    assert digests[0] == digests[1]


def _seeding_twice_is_refused_and_the_scheduler_takes_over() -> None:
    with pytest.raises(DemoScenariosExistError):
        seed_demo_scenarios(as_of=AS_OF, seed=7)
    before = Enrollment.objects.count()
    report = tick(jst_at(AS_OF, dt.time(10)))
    assert report.ran
    assert not report.backlog_mode
    assert all(not s.error for s in report.scenarios)
    assert Enrollment.objects.count() >= before


def _paper_and_call_messages_are_on_the_weeks_lists() -> None:
    # 配信状況 shows the lists a shop would have printed and called from, not "no lists yet"
    # next to thousands of sent postal DMs.
    paper = OutboxMessage.objects.filter(
        status=OutboxStatus.SENT, sent_channel__in=["postal", "insert", "call"]
    )
    assert paper.exists()
    assert not paper.filter(delivery_list__isnull=True).exists()
    for delivery_list in DeliveryList.objects.all():
        on_it = paper.filter(delivery_list=delivery_list)
        assert set(on_it.values_list("sent_channel", flat=True)) == {delivery_list.channel}
        days = {jst_date(at) for at in on_it.values_list("sent_at", flat=True) if at}
        assert max(days) - min(days) < dt.timedelta(days=7)
        if delivery_list.closed_at is not None:
            assert delivery_list.closed_by
            assert delivery_list.closed_at > max(on_it.values_list("sent_at", flat=True))
    # only the current week's list of a channel is still open
    open_lists = DeliveryList.objects.filter(closed_at__isnull=True)
    assert len(set(open_lists.values_list("channel", flat=True))) == open_lists.count()


def _the_demo_shop_has_a_sender_block() -> None:
    # Without one every marketing message the running demo queues would be held (S8).
    row = DeliverySettings.load()
    assert current_sender(row).complete
    # A sender the shop set itself is never overwritten by the demo's.
    row.sender_name = "自分のショップ"
    row.save()
    seed_demo_sender()
    assert DeliverySettings.load().sender_name == "自分のショップ"


@pytest.mark.parametrize(
    ("environ", "backend"),
    [
        ({}, FILE_BACKEND),
        ({"KIZUNA_SMTP_HOST": "mail.example.jp"}, None),
        ({"KIZUNA_EMAIL_BACKEND": "django.core.mail.backends.console.EmailBackend"}, "console"),
    ],
)
def test_the_demo_worker_writes_mail_to_files_unless_a_mail_server_is_set(
    environ: dict[str, str], backend: str | None
) -> None:
    env = worker_environment({"PATH": "/usr/bin", **environ})
    assert env["PATH"] == "/usr/bin"
    if backend is None:
        assert "KIZUNA_EMAIL_BACKEND" not in env
    else:
        assert backend in env["KIZUNA_EMAIL_BACKEND"]
