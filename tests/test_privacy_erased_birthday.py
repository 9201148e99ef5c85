"""Erasure and personal dates (APPI 35条, docs/privacy.md): after an erasure, nothing the
scenarios kept (enrollments, step dispatches, outbox rows) may still tell the birthday — not
the customer page, not the export, not the tables."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.automation import scheduler
from kizuna.campaigns.automation.clock import jst_at, jst_date
from kizuna.campaigns.automation.lift import _units
from kizuna.campaigns.automation.models import Enrollment, SegmentMember, StepDispatch
from kizuna.campaigns.models import OutboxMessage, OutboxStatus
from kizuna.core.audit import Actor
from kizuna.customers import privacy
from kizuna.customers.models import Customer, IdentityKind
from tests.factories import add_identity, grant_consent, make_customer
from tests.test_scenarios_kit import one, scenario, segment, step

pytestmark = pytest.mark.django_db

DPO = Actor(user_id=None, label="dpo-admin")


def _past_birthday() -> dt.date:
    """A birthday about 200 days ago: never the month-day of today (the erasure's moment)."""
    day = jst_date(timezone.now()) - dt.timedelta(days=200)
    return day if (day.month, day.day) != (2, 29) else day - dt.timedelta(days=1)


def _forms(day: dt.date) -> list[str]:
    """Every way a page or a file could spell the month-day of `day`."""
    return [
        f"{day:%Y-%m-%d}",
        f"{day:%m-%d}",
        f"{day:%m/%d}",
        f"{day.month}月{day.day}日",
        f"{day:%m}月{day:%d}日",
    ]


def _birthday_person(day: dt.date, settings: Any) -> tuple[Customer, Customer]:
    """A customer enrolled in a birthday scenario on `day` (two years running), with the
    birthday mail sent; and another customer enrolled the same day who is not erased."""
    birthday = scenario(
        "birthday",
        trigger={"kind": "birthday"},
        steps=[step("greet")],
        activated_at=jst_at(day.replace(year=day.year - 1)) - dt.timedelta(days=1),
    )
    people = []
    for family in ("鈴木", "佐藤"):
        customer = make_customer(family_name=family, birthday=day.replace(year=1985))
        add_identity(customer, IdentityKind.EMAIL, f"{customer.pk}-bday@example.jp")
        grant_consent(customer)
        people.append(customer)
    # The year between the two birthdays is not a stopped scheduler's backlog here.
    settings.KIZUNA_SCHEDULER_BACKLOG_MINUTES = 60 * 24 * 400
    for year in (day.year - 1, day.year):
        scheduler.tick(now=jst_at(day.replace(year=year), dt.time(9, 0)))
    sent = OutboxMessage.objects.filter(scenario_id=birthday.pk)
    assert sent.count() == 4
    for message in sent:
        OutboxMessage.objects.filter(pk=message.pk).update(
            status=OutboxStatus.SENT,
            sent_at=message.send_after + dt.timedelta(minutes=5),
            cap_counted_at=message.send_after,
        )
    return people[0], people[1]


def _table_dates(customer: Customer) -> list[str]:
    enrollments = Enrollment.objects.filter(customer=customer)
    values: list[object] = []
    for row in enrollments.values():
        values.extend(row.values())
    for row in StepDispatch.objects.filter(enrollment__in=enrollments).values():
        values.extend(row.values())
    for row in OutboxMessage.objects.filter(customer=customer).values():
        values.extend(row.values())
    texts = []
    for value in values:
        if isinstance(value, dt.datetime):
            texts.append(f"{jst_date(value):%Y-%m-%d}")
        texts.append(str(value))
    return texts


def test_erasure_leaves_the_birthday_nowhere_in_scenario_history(
    client_for: Callable[[Role], Client], settings: Any
) -> None:
    day = _past_birthday()
    customer, other = _birthday_person(day, settings)
    operator = client_for(Role.OPERATOR)
    page = operator.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert f"{day:%Y-%m-%d}" in page  # the scenario section shows it while the data is held

    privacy.customer_erase(customer=customer, acting_user=DPO, reason="受付番号 7")

    page = operator.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    exported = operator.post(reverse("web:customer_export", args=[customer.pk])).content.decode()
    tables = " ".join(_table_dates(customer))
    for text in _forms(day) + _forms(day.replace(year=day.year - 1)):
        assert text not in page, text
        assert text not in exported, text
        assert text not in tables, text
    # The history stays: both enrollments, their steps and both sent mails, still counted.
    export = json.loads(exported)
    assert len(export["scenario_enrollments"]) == 2
    assert all(len(row["dispatches"]) == 1 for row in export["scenario_enrollments"])
    assert [m["status"] for m in export["messages"]] == [OutboxStatus.SENT] * 2
    # Lift still sees one unit (the first enrollment) per customer, treated as before.
    assert _units(customer.enrollments.first().scenario).filter(customer=customer).count() == 1
    # The other customer's history is untouched.
    kept = Enrollment.objects.filter(customer=other).order_by("anchor_date")
    assert [e.anchor_date for e in kept] == [day.replace(year=day.year - 1), day]
    assert [e.occurrence for e in kept] == [f"birthday:{day.year - 1}", f"birthday:{day.year}"]


def test_erased_birthday_enrollments_keep_unique_keys_and_stay_unsent(settings: Any) -> None:
    day = _past_birthday()
    customer, _ = _birthday_person(day, settings)
    privacy.customer_erase(customer=customer, acting_user=DPO, reason="受付番号 8")
    enrollments = list(Enrollment.objects.filter(customer=customer))
    assert len({e.occurrence for e in enrollments}) == 2
    assert not any("birthday:" in e.occurrence for e in enrollments)
    keys = list(
        OutboxMessage.objects.filter(customer=customer).values_list("dedupe_key", flat=True)
    )
    assert len(set(keys)) == 2
    assert not any("birthday:" in key for key in keys)
    # A tick on the next birthday enrolls nobody again and sends nothing.
    scheduler.tick(now=jst_at(day.replace(year=day.year + 1), dt.time(9, 0)))
    assert Enrollment.objects.filter(customer=customer).count() == 2
    assert OutboxMessage.objects.filter(customer=customer).count() == 2


def test_erasure_detaches_an_age_segment_entry_from_the_birthday(settings: Any) -> None:
    # given: "segment entered" on 40歳以上 — the person enters it on their 40th birthday
    day = _past_birthday()
    settings.KIZUNA_SCHEDULER_BACKLOG_MINUTES = 60 * 24 * 400
    forty = segment("forty", one("age", "gte", 40))
    scenario(
        "forty",
        trigger={"kind": "segment_entered", "segment": forty.key},
        activated_at=jst_at(day) - dt.timedelta(days=3),
    )
    customer = make_customer(family_name="鈴木", birthday=day.replace(year=day.year - 40))
    add_identity(customer, IdentityKind.EMAIL, "forty@example.jp")
    grant_consent(customer)
    scheduler.tick(now=jst_at(day - dt.timedelta(days=1), dt.time(9, 0)))
    scheduler.tick(now=jst_at(day, dt.time(9, 0)))
    assert Enrollment.objects.get(customer=customer).anchor_date == day

    privacy.customer_erase(customer=customer, acting_user=DPO, reason="受付番号 9")

    member = SegmentMember.objects.get(customer=customer)
    enrollment = Enrollment.objects.get(customer=customer)
    texts = " ".join(_table_dates(customer)) + f" {member.entered_at} {member.left_at}"
    texts += f" {jst_date(member.entered_at)}"
    for text in _forms(day):
        assert text not in texts, text
    assert enrollment.occurrence.startswith("erased:")
