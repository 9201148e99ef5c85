"""Message templates render in a sandbox: only the plain values they are given, no model
objects, no tags that reach outside (include, load, debug…)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import pytest
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import CoPurchase, MessageTemplate, Offer, OfferKind
from kizuna.campaigns.automation.recommendations import copurchase_refresh, copurchase_table
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.services import ScenarioError, template_save
from kizuna.campaigns.automation.templating import (
    SAMPLE_CONTEXT,
    UNSUBSCRIBE_PLACEHOLDER,
    TemplateRenderError,
    compile_template,
    content_for,
    customer_contexts,
    offer_context,
    sample_context,
)
from kizuna.campaigns.automation.yaml_io import ScenarioFileError, load_yaml
from kizuna.campaigns.models import OutboxMessage
from kizuna.commerce.models import ProductKind
from kizuna.loyalty.services import points_earn
from tests.factories import make_customer, make_order, make_product, make_subscription
from tests.test_scenarios_kit import STAFF, jst, scenario, step, template

TODAY = dt.date(2026, 5, 10)


def render(text: str, context: dict[str, Any]) -> str:
    """`text` rendered as the scheduler renders a stored template: names it is not given are
    refused only when a template is saved (see test_saving_refuses_…), never at sending."""
    return compile_template(subject="件名", text=text, strict=False).render(context)["text"]


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
        if isinstance(value, Mapping):
            return all(isinstance(k, str) and plain(v) for k, v in value.items())
        if isinstance(value, list | tuple):
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
    # printed whole, the offer and the recommendations read as Japanese, never as Python's
    # notation for dicts and dates (which would go out in the customer's message)
    context["offer"] = offer_context(
        Offer(name="冬の再購入", kind=OfferKind.YEN_OFF, value=500, code="WINTER"), today=TODAY
    )
    text = "{{ offer }}|{{ recommendations }}|{{ recommendations.0 }}|{{ recommendations|first }}"
    assert render(text, context) == (
        f"500円OFF|{cream.name}、{serum.name}|{cream.name}|{cream.name}"
    )


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


def test_the_made_up_customer_s_dates_are_around_the_day_of_the_preview() -> None:
    # A preview on 2026-11-24 must not show an offer that expired in May.
    sample = sample_context(dt.date(2026, 11, 24))
    assert render("{{ offer.expires_on|jdate }}", sample) == "2026年12月24日"
    assert render("{{ next_delivery_date|jdate }}", sample) == "2026年12月8日"
    assert render("{{ offer }}、{{ recommendations }}", sample) == (
        "1,000円OFF、うるおい保湿クリーム 50g"
    )


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


# --- rendering errors and limits ---------------------------------------------------------------
# A template can compile and still fail when it is rendered: a date given a time format, a
# division by zero, a loop over a number… Each becomes a TemplateRenderError in Japanese,
# naming the part and the {{ }} or {% %} at fault — never an exception the preview turns into
# a 500 or the scheduler into a silent failure every minute.

WITH_TIME = '{{ name }} 様 最終購入: {{ last_order_date|date:"Y年n月j日 H:i" }}'


def refusal(text: str, context: dict[str, Any] | None = None) -> str:
    with pytest.raises(TemplateRenderError) as excinfo:
        render(text, SAMPLE_CONTEXT if context is None else context)
    [message] = excinfo.value.messages
    return message


def test_a_date_given_a_time_format_is_refused_naming_the_variable_and_the_letters() -> None:
    message = refusal(WITH_TIME)
    assert message.startswith("本文: 「{{ last_order_date|date:")
    assert "時刻の書式(H・i)は使えません" in message
    assert "format" not in message  # no English from the template engine
    # a date format is fine, and so is a time format on the `now` tag's date and time
    assert render('{{ last_order_date|date:"Y年n月j日" }}', SAMPLE_CONTEXT) == "2026年4月1日"
    assert render('{% now "H" %}', SAMPLE_CONTEXT).isdigit()


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{{ points_balance|divisibleby:0 }}", "0で割ることはできません"),
        ("{% if points_balance|divisibleby:0 %}x{% endif %}", "0で割ることはできません"),
        ("{{ 1e999|comma }}", "数が大きすぎます"),
        ("{% for x in points_balance %}{{ x }}{% endfor %}", "一覧だけです"),
        ("{% for a, b, c in recommendations %}{{ a }}{% endfor %}", "名前の数が合いません"),
        ("{{ name|wordwrap:0 }}", "wordwrap の幅は1以上"),
    ],
)
def test_every_rendering_failure_is_a_japanese_template_error(text: str, said: str) -> None:
    message = refusal(text)
    assert message.startswith("本文: 「")
    assert said in message


def test_the_part_is_named_and_every_failing_part_is_reported() -> None:
    compiled = compile_template(
        subject="{{ points_balance|divisibleby:0 }}",
        text="ok",
        html='<p>{{ offer.expires_on|date:"G" }}</p>',
    )
    with pytest.raises(TemplateRenderError) as excinfo:
        compiled.render(SAMPLE_CONTEXT)
    subject, html = excinfo.value.messages
    assert subject.startswith("件名: ")
    assert html.startswith("HTML本文: ")


def test_a_missing_name_in_a_filter_argument_empties_that_value_not_the_whole_part() -> None:
    # As any name that is not in the context renders empty (offer in a step without one);
    # it used to empty the whole body.
    text = "{{ name }} 様 {{ name|default:offer.code }}。{{ points_balance|add:bonus }}"
    assert render(text, {**SAMPLE_CONTEXT, "offer": None}) == "山田 花子 様 。"


@pytest.mark.parametrize(
    "text",
    [
        "{{ name|ljust:'2000000000' }}",
        "{{ name|center:'99999999' }}",
        "{{ name|rjust:201 }}",
    ],
)
def test_widths_over_200_are_refused_at_once(text: str) -> None:
    started = time.perf_counter()
    message = refusal(text)
    assert time.perf_counter() - started < 0.5
    assert "幅は200までです" in message
    assert len(render("{{ name|ljust:200 }}|", SAMPLE_CONTEXT)) == 201


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # digits: Decimal makes every one of them
        ("{{ points_balance|floatformat:'100000000' }}", "小数点以下の桁数は20桁までです"),
        # each join multiplies the length by the separator's
        ("{{ last_product|join:'" + "x" * 5_000 + "' }}", "長くなりすぎます"),
        ("{{ name|join:'" + "x" * 300 + "'|join:'" + "y" * 300 + "'|length }}", "長くなりすぎます"),
        # loops in loops: their product, not their sum
        (
            "{% for a in last_product %}{% for b in last_product %}{% for c in last_product %}"
            "{% for d in last_product %}{% endfor %}{% endfor %}{% endfor %}{% endfor %}",
            "繰り返しが多すぎます",
        ),
        # a message longer than any shop sends
        ("{% for r in recommendations %}" + "あ" * 100_001 + "{% endfor %}", "長くなりすぎます"),
        ("あ" * 100_001 + "{{ name }}", "長くなりすぎます"),
    ],
)
def test_what_an_argument_or_a_loop_could_blow_up_is_refused_quickly(text: str, said: str) -> None:
    started = time.perf_counter()
    context = {**SAMPLE_CONTEXT, "last_product": "薬用ホワイトニング美容液" * 10}
    assert said in refusal(text, context)
    assert time.perf_counter() - started < 1


def test_the_usual_templates_still_render() -> None:
    text = (
        "{{ name|ljust:10 }}|{{ points_balance|floatformat:2 }}|{{ name|join:'・' }}|"
        "{% for r in recommendations %}{% for s in recommendations %}{{ s.name|truncatechars:5 }}"
        "{% endfor %}{% endfor %}|{{ last_product|wordwrap:10|linebreaksbr }}"
    )
    assert render(text, SAMPLE_CONTEXT) == (
        "山田 花子     |1200.00|山・田・ ・花・子|うるおい…|薬用ホワイトニング美容液<br>トライアルセット"
    )


@pytest.mark.django_db
def test_a_template_that_fails_when_rendered_is_not_saved() -> None:
    with pytest.raises(ScenarioError) as excinfo:
        template_save(
            template=None, key="with-time", name="時刻つき", subject="件名", text=WITH_TIME, acting_user=STAFF
        )  # fmt: skip
    [message] = excinfo.value.messages
    assert "時刻の書式(H・i)は使えません" in message
    assert not MessageTemplate.objects.filter(key="with-time").exists()


@pytest.mark.django_db
def test_a_template_that_fails_only_for_a_customer_with_nothing_yet_is_not_saved() -> None:
    # The made-up customer has points expiring; a new customer has none: 0 divides nothing.
    text = "{% if points_balance|divisibleby:points_expiring %}ちょうど{% endif %}"
    assert render(text, SAMPLE_CONTEXT) == "ちょうど"
    with pytest.raises(ScenarioError) as excinfo:
        template_save(
            template=None, key="zero", name="割り算", subject="件名", text=text, acting_user=STAFF
        )
    [message] = excinfo.value.messages
    assert "0で割ることはできません" in message
    assert "購入やポイントがまだないお客様・オファーのないステップの場合" in message


def test_a_template_cannot_change_the_offer_the_next_customer_gets() -> None:
    # The scheduler gives one offer to every message of a step; the preview and the save
    # check share the made-up customer for the whole process.
    offer = offer_context(
        Offer(name="初回", kind=OfferKind.YEN_OFF, value=500, code="HELLO"), today=TODAY
    )
    for context in ({**SAMPLE_CONTEXT, "offer": offer}, SAMPLE_CONTEXT):
        render("{{ offer.clear }}{{ offer.popitem }}{{ recommendations.pop }}", dict(context))
        assert render("{{ offer.code }}", dict(context)) in ("HELLO", "WELCOME1000")
    assert len(SAMPLE_CONTEXT["recommendations"]) == 1


# --- names a template is not given, and tags left as text: refused when saved ---------------


@pytest.mark.parametrize(
    ("text", "said"),
    [
        # each of these sent 「様」 alone: a mail addressed to nobody
        ("{{ last_name }}様", "{{ last_name }} という項目はありません"),
        ("{{ customer.last_name }}様", "{{ customer.last_name }} の「customer」という項目"),
        ("{{ last_nmae }}様", "{{ last_nmae }} という項目はありません"),
        ("{% if vip %}特別{% endif %}", "{% if vip %} の「vip」という項目"),
        ("{{ name|default:nickname }}様", "の「nickname」という項目"),
        # a loop's name is known inside the loop only
        ("{% for r in recommendations %}{% endfor %}{{ r.name }}", "の「r」という項目"),
        # Django keeps these as text: customers would get the braces
        ("{{ last_name }様", "{{ の閉じ忘れがあります(「{{ last_name }様」の近く)"),
        ("{{ family_name 様", "{{ の閉じ忘れがあります(「{{ family_name 様」の近く)"),
        ("family_name }}様", "}} の前の {{ が抜けています"),
        ("{% if name 様", "{% の閉じ忘れがあります"),
    ],
)
@pytest.mark.django_db
def test_saving_refuses_an_unknown_name_or_a_tag_left_open(text: str, said: str) -> None:
    with pytest.raises(ScenarioError) as excinfo:
        template_save(
            template=None, key="typo", name="誤字", subject="ご案内", text=text, acting_user=STAFF
        )  # fmt: skip
    messages = excinfo.value.messages
    assert any(m.startswith("本文: ") and said in m for m in messages), messages
    if "項目" in said:  # the message lists what can be used, in words staff know
        assert "使える項目: name(氏名)、family_name(姓)、given_name(名)" in " ".join(messages)
    assert not MessageTemplate.objects.filter(key="typo").exists()


@pytest.mark.django_db
def test_a_scenario_file_with_an_unknown_name_is_refused() -> None:
    text = (
        "version: 1\n"
        "templates:\n"
        "- {key: typo, name: 誤字, subject: '{{ last_name }}様', text: 本文}\n"
    )
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(text, acting_user=STAFF)
    assert any("{{ last_name }} という項目はありません" in m for m in excinfo.value.messages)
    assert not MessageTemplate.objects.filter(key="typo").exists()


@pytest.mark.django_db
def test_names_the_template_binds_itself_and_every_given_name_still_save() -> None:
    text = (
        "{{ family_name }}様 {{ offer.code }} {{ offer.expires_on|jdate }}\n"
        "{% for r in recommendations %}{{ forloop.counter }}. {{ r.name }} {{ r.price|yen }}"
        "{% empty %}なし{% endfor %}\n"
        "{% with total=points_balance|add:points_expiring %}{{ total|comma }}pt{% endwith %}\n"
        "{% firstof last_product product as item %}{{ item }}{% now 'Y' as year %}{{ year }}\n"
        "{% if offer and points_balance > 0 or next_delivery_date == None %}x{% endif %}\n"
        "{{ name }} {{ given_name }} {{ last_order_date|jdate }} {{ points_expiry_date|jdate }}\n"
        "{{ name|default:offer.code }} {% verbatim %}{{ そのまま }}{% endverbatim %}\n"
        "{{ unsubscribe_url }}"
    )
    saved = template_save(
        template=None, key="ok", name="正しい例", subject="{{ name }} 様", text=text,
        html="<style>@media (max-width:600px){p{width:100%}}</style><p>{{ name }}</p>",
        acting_user=STAFF,
    )  # fmt: skip
    assert MessageTemplate.objects.get(key="ok") == saved


@pytest.mark.django_db
def test_a_stored_template_with_an_unknown_name_is_still_sent_as_before() -> None:
    # given: a running scenario whose template was saved before names were checked
    saved = template("old", text="{{ name }} 様")
    scenario(trigger={"kind": "first_purchase"}, steps=[step(template="old")], activated_at=jst(2026, 5, 1))  # fmt: skip
    MessageTemplate.objects.filter(pk=saved.pk).update(text="{{ last_name }}様 {{ name }} {{ x")
    make_order(make_customer(family_name="佐藤", given_name="一郎"), ordered_at=jst(2026, 5, 2, 9))
    # when: the scheduler runs
    report = tick(jst(2026, 5, 2, 10))
    # then: the message goes out as it did (only saving and the preview refuse)
    assert report.total("queued") == 1
    assert OutboxMessage.objects.get().content["text"] == "様 佐藤 一郎 {{ x"


def test_the_preview_refuses_an_unknown_name(client_for: Any) -> None:
    response = client_for(Role.MARKETER).post(
        reverse("scenarios:template_preview"),
        {"subject": "ご案内", "text": "{{ last_nmae }}様", "html": ""},
        headers={"HX-Request": "true"},
    )
    html = response.content.decode()
    assert "このままでは保存できません" in html
    assert "{{ last_nmae }} という項目はありません" in html
