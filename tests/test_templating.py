"""Message templates render in a sandbox: only the plain values they are given, no model
objects, no tags that reach outside (include, load, debug…)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kizuna.campaigns.automation.models import CoPurchase, Offer, OfferKind
from kizuna.campaigns.automation.recommendations import copurchase_refresh, copurchase_table
from kizuna.campaigns.automation.services import ScenarioError, template_save
from kizuna.campaigns.automation.templating import (
    SAMPLE_CONTEXT,
    UNSUBSCRIBE_PLACEHOLDER,
    TemplateRenderError,
    compile_template,
    content_for,
    customer_contexts,
    offer_context,
)
from kizuna.commerce.models import ProductKind
from kizuna.loyalty.services import points_earn
from tests.factories import make_customer, make_order, make_product, make_subscription
from tests.test_scenarios_kit import STAFF, jst

TODAY = dt.date(2026, 5, 10)


def render(text: str, context: dict[str, Any]) -> str:
    return compile_template(subject="件名", text=text).render(context)["text"]


def test_only_given_values_render() -> None:
    context = {"name": "山田 花子", "points_balance": 1200}
    text = "{{ name }} 様 {{ points_balance|comma }}pt {{ customer.password }}{{ password }}"
    assert render(text, context) == "山田 花子 様 1,200pt "


@pytest.mark.django_db
def test_contexts_hold_plain_values_never_model_objects() -> None:
    customer = make_customer(family_name="佐藤", given_name="一郎")
    make_order(customer, ordered_at=jst(2026, 5, 1))
    contexts = customer_contexts([customer.pk], today=TODAY)

    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, str | int | float | dt.date)

    context = contexts[customer.pk]
    assert plain(context)
    assert context["name"] == "佐藤 一郎"
    # Even a template that knows the model's field names finds nothing behind them.
    text = "{{ name.customer }}{{ name.__class__ }}{{ family_name.identities }}"
    with pytest.raises(TemplateRenderError):  # "_" names are refused outright
        render(text, context)
    assert render("{{ family_name.identities.all }}{{ last_product.order }}", context) == ""


@pytest.mark.parametrize(
    ("source", "named"),
    [
        ("{% load static %}", "load"),
        ('{% include "web/base.html" %}', "include"),
        ('{% extends "web/base.html" %}', "extends"),
        ("{% debug %}", "debug"),
        ("{% url 'web:home' %}", "url"),
        ("{% csrf_token %}", "csrf_token"),
    ],
)
def test_tags_that_reach_outside_are_refused(source: str, named: str) -> None:
    with pytest.raises(TemplateRenderError) as excinfo:
        compile_template(subject="件名", text=source)
    assert named in excinfo.value.messages[0]
    assert "使えません" in excinfo.value.messages[0]


def test_unknown_filters_and_broken_syntax_are_refused_with_the_part_named() -> None:
    with pytest.raises(TemplateRenderError) as excinfo:
        compile_template(subject="{{ name|pprint }}", text="{% if name %}閉じていない")
    messages = " ".join(excinfo.value.messages)
    assert "件名" in messages
    assert "pprint" in messages
    assert "本文" in messages


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{% if %}壊れた", "{% if %} の条件の書き方に誤りがあります"),
        ("{% if a b %}x{% endif %}", "{% if %} の条件の書き方に誤りがあります"),
        ("{{ }}", "{{ }} の中が空です"),
        ("{% for x %}{% endfor %}", "{% for r in recommendations %} の形"),
        ("{{ name|default: }}", "フィルタ「default」には「:」のあとに値が必要です"),
        ("{{ name!! }}", "「!!」の部分を読み取れません"),
        ("{% if a %}{% endfor %}", "「{% endfor %}」の位置が正しくありません"),
        ("{% with %}{% endwith %}", "書き方を読み取れません"),
    ],
)
def test_syntax_errors_are_explained_in_japanese(text: str, said: str) -> None:
    # A marketer reads these on the template page: no English from the template engine.
    with pytest.raises(TemplateRenderError) as excinfo:
        compile_template(subject="件名", text=text)
    [message] = excinfo.value.messages
    assert message.startswith("本文: テンプレートに誤りがあります(")
    assert said in message
    assert str(excinfo.value.__cause__) not in message


def test_allowed_tags_and_filters_work() -> None:
    context = {
        "name": "山田",
        "recommendations": [{"name": "保湿クリーム", "price": 3280}],
        "next_delivery_date": dt.date(2026, 5, 15),
        "offer": {"label": "1,000円OFF", "code": "WELCOME"},
    }
    text = (
        "{% for r in recommendations %}{{ r.name }} {{ r.price|yen }}{% endfor %}/"
        "{{ next_delivery_date|jdate }}/{% if offer %}{{ offer.label }} {{ offer.code }}{% endif %}"
        "/{{ missing|default:'なし' }}"
    )
    assert render(text, context) == "保湿クリーム ¥3,280/2026年5月15日/1,000円OFF WELCOME/なし"


def test_text_is_not_html_escaped_but_html_is() -> None:
    compiled = compile_template(subject="{{ name }}", text="{{ name }}", html="<p>{{ name }}</p>")
    rendered = compiled.render({"name": "<b>A&B</b>"})
    assert rendered["text"] == "<b>A&B</b>"
    assert rendered["html"] == "<p>&lt;b&gt;A&amp;B&lt;/b&gt;</p>"


def test_content_has_each_channels_keys() -> None:
    rendered = {"subject": "件名", "text": "本文", "html": "<p>本文</p>"}
    assert content_for("email", rendered) == rendered
    assert content_for("line", rendered) == {"text": "本文"}
    assert content_for("postal", rendered) == {"title": "件名", "text": "本文"}
    assert content_for("call", rendered) == {"reason": "件名", "script": "本文"}
    assert content_for("best", rendered) == rendered


@pytest.mark.django_db
def test_a_template_that_does_not_compile_is_not_saved() -> None:
    with pytest.raises(ScenarioError) as excinfo:
        template_save(
            template=None, key="bad", name="悪い例", subject="件名", text="{% debug %}", acting_user=STAFF
        )  # fmt: skip
    assert "debug" in excinfo.value.messages[0]


@pytest.mark.django_db
def test_the_context_carries_points_delivery_last_product_and_recommendations() -> None:
    # given: a customer who bought the trial; others who bought the trial then the cream
    trial = make_product(ProductKind.TRIAL, 980)
    cream = make_product(ProductKind.MAIN, 3280)
    serum = make_product(ProductKind.MAIN, 4980)
    customer = make_customer()
    make_order(customer, product=trial, ordered_at=jst(2026, 4, 1))
    for i in range(3):
        other = make_customer()
        make_order(other, product=trial, ordered_at=jst(2026, 1, 1))
        make_order(other, product=cream if i < 2 else serum, ordered_at=jst(2026, 2, 1))
    points_earn(
        customer=customer, amount=120, acting_user=STAFF, reason="購入", at=jst(2025, 6, 1, 12)
    )
    make_subscription(
        customer, product=serum, unit_price=4480,
        started_on=dt.date(2026, 4, 15), next_delivery_on=dt.date(2026, 5, 15),
    )  # fmt: skip
    copurchase_refresh(now=jst(2026, 5, 10))
    # when
    context = customer_contexts([customer.pk], today=TODAY, recommendations=copurchase_table())[
        customer.pk
    ]
    # then
    assert context["last_product"] == trial.name
    assert context["points_balance"] == 120
    assert (context["points_expiring"], context["points_expiry_date"]) == (120, dt.date(2026, 6, 1))
    assert context["next_delivery_date"] == dt.date(2026, 5, 15)
    assert [r["name"] for r in context["recommendations"]] == [cream.name, serum.name]
    assert context["unsubscribe_url"] == UNSUBSCRIBE_PLACEHOLDER


@pytest.mark.django_db
def test_copurchase_counts_next_orders_per_customer_in_one_statement() -> None:
    a, b = make_product(), make_product()
    for _ in range(2):
        customer = make_customer()
        make_order(customer, product=a, ordered_at=jst(2026, 1, 1))
        make_order(customer, product=b, ordered_at=jst(2026, 2, 1))
        make_order(customer, product=b, ordered_at=jst(2026, 3, 1))  # b→b is not a pair
    reverse = make_customer()
    make_order(reverse, product=b, ordered_at=jst(2026, 1, 1))
    make_order(reverse, product=a, ordered_at=jst(2026, 2, 1))
    copurchase_refresh(now=jst(2026, 5, 1))
    pairs = set(CoPurchase.objects.values_list("product_id", "next_product_id", "customers"))
    assert pairs == {(a.pk, b.pk, 2), (b.pk, a.pk, 1)}


def test_the_made_up_customer_has_every_offer_field_a_real_offer_has() -> None:
    # The preview without a real customer must not show 「(まで)」 for a template that prints
    # the offer's expiry: the sample offer carries what offer_context gives a real one.
    real = offer_context(
        Offer(name="初回", kind=OfferKind.YEN_OFF, value=500, code="HELLO"),
        today=dt.date(2026, 5, 1),
    )
    assert real is not None
    assert set(SAMPLE_CONTEXT["offer"]) == set(real)
    rendered = compile_template(subject="件名", text="{{ offer.expires_on|jdate }}まで").render(
        SAMPLE_CONTEXT
    )
    assert rendered["text"] != "まで"
