"""The set-wise outbox fill: enrolments by INSERT … SELECT, the hash holdout drawn after the
insert, and the template fast path rendering exactly what Django renders."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.template import Context

from kizuna.campaigns.automation import triggers
from kizuna.campaigns.automation.models import Enrollment, StepDispatch
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.templating import compile_template
from kizuna.campaigns.models import OutboxMessage
from kizuna.core.bulk import insert_select
from kizuna.customers.models import BehaviourEvent, BehaviourKind, Customer
from tests.factories import make_customer, make_order, make_product
from tests.test_scenarios_kit import jst, scenario

START = jst(2026, 5, 1)


def _django(template: Any, context: dict[str, Any]) -> str:
    return str(template.render(Context(context, autoescape=template.engine.autoescape)))


@pytest.mark.parametrize(
    "context",
    [
        {"name": "山田 花子", "last_product": "美容液 <30日分> & 詰替"},
        {"name": "", "last_product": "クリーム"},
        {"name": "佐藤 太郎"},  # last_product missing: rendered empty
        {"name": None, "last_product": 1200},  # not text: Django's own rendering
    ],
)
def test_the_fast_path_renders_exactly_what_django_renders(context: dict[str, Any]) -> None:
    # given: plain-variable parts (fast path) and parts with filters and tags (Django)
    compiled = compile_template(
        subject="{{ name }} 様へ",
        text="{{ name }} 様\n{{ last_product }}のご案内 {{ last_product|default:'-' }}",
        html="<p>{{ name }} 様</p><p>{{ last_product }}</p>{% if name %}!{% endif %}",
    )
    assert compiled.plans[0] is not None
    assert compiled.plans[2] is None  # a tag: Django renders it
    # when
    rendered = compiled.render(context)
    # then
    assert rendered["subject"] == _django(compiled.subject, context).strip()
    assert rendered["text"] == _django(compiled.text, context)
    assert compiled.html is not None
    assert rendered["html"] == _django(compiled.html, context)


def test_the_fast_path_escapes_html_as_django_does() -> None:
    compiled = compile_template(subject="件名", text="本文", html="<b>{{ name }}</b>")
    assert compiled.plans[2] is not None
    rendered = compiled.render({"name": "<script>&'\""})
    assert rendered["html"] == "<b>&lt;script&gt;&amp;&#x27;&quot;</b>"


@pytest.mark.django_db
def test_enrolment_by_insert_select_draws_the_holdout_by_hash() -> None:
    # given: 60 first purchases and a 30 % control group
    s = scenario(trigger={"kind": "first_purchase"}, holdout_percent=30, activated_at=START)
    product = make_product()
    buyers = [make_customer() for _ in range(60)]
    for customer in buyers:
        make_order(customer, product=product, ordered_at=jst(2026, 5, 2, 9))
    now = jst(2026, 5, 2, 10)
    # when
    enrolled = triggers.enroll(s, triggers.Window(now=now, since=START))
    # then: each buyer's group is the hash draw, the counts say what was written
    rows = Enrollment.objects.filter(scenario=s).values_list("customer_id", "holdout")
    drawn = {cid: triggers.holdout_draw(s.key, cid, 30) for cid, _ in rows}
    assert dict(rows) == drawn
    assert 0 < enrolled.holdout < 60
    assert enrolled.holdout == sum(drawn.values())
    assert enrolled.treated == 60 - enrolled.holdout
    # and a second run enrolls nobody again
    again = triggers.enroll(s, triggers.Window(now=now, since=START))
    assert (again.treated, again.holdout) == (0, 0)
    assert Enrollment.objects.filter(scenario=s).count() == 60


@pytest.mark.django_db
def test_the_anchor_computed_in_the_database_waits_the_trigger_hours() -> None:
    # given: a cart left at 23:30 JST, a 3-hour cart abandonment trigger
    s = scenario(trigger={"kind": "cart_abandonment", "hours": 3}, activated_at=START)
    customer = make_customer()
    BehaviourEvent.objects.create(
        customer=customer, kind=BehaviourKind.CART_ADD, occurred_at=jst(2026, 5, 2, 23, 30)
    )
    # when
    tick(jst(2026, 5, 3, 3))
    # then: anchored when the wait was over, on that JST date (the next day)
    enrollment = Enrollment.objects.get(scenario=s)
    assert enrollment.anchor_at == jst(2026, 5, 3, 2, 30)
    assert enrollment.anchor_date == dt.date(2026, 5, 3)
    assert enrollment.enrolled_at == jst(2026, 5, 3, 3)
    assert OutboxMessage.objects.filter(enrollment_id=enrollment.pk).count() == 1
    assert StepDispatch.objects.filter(enrollment=enrollment).count() == 1


@pytest.mark.django_db
def test_insert_select_refuses_a_query_that_does_not_fit_the_columns() -> None:
    query = Customer.objects.values_list("pk")
    with pytest.raises(ValueError, match="annotations"):
        insert_select(Enrollment, ("customer_id", "scenario_id"), query)
