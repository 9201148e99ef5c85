"""Segments, templates and offers cannot share a name with another of their kind (the scenario
editor's dropdowns list them by name) — compared as scenario names are — in the web forms and
in a scenario file; a number in the file is not read from `true`; a template's record fields
are checked when it is saved."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import MessageTemplate, Offer, Scenario, Segment
from kizuna.campaigns.automation.segments import SegmentError, segment_save
from kizuna.campaigns.automation.services import (
    ScenarioError,
    offer_save,
    template_save,
    validate_scenario,
)
from kizuna.campaigns.automation.templating import (
    SAMPLE_CONTEXT,
    TemplateRenderError,
    compile_stored,
    compile_template,
    offer_context,
)
from kizuna.campaigns.automation.yaml_io import ScenarioFileError, export_yaml, load_yaml
from kizuna.demo.scenarios import DEMO_SCENARIOS
from tests.test_scenarios_kit import STAFF, one, scenario_form, step

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]
RULES = one("prefecture", "in", ["13"])


def _taken(name: str, kind: str, other: str, key: str) -> str:
    return (
        f"名前「{name}」は既に{kind}「{other}」(識別名 {key})で使われています。"
        "一覧や絞り込みで区別できるよう、別の名前にしてください"
    )


def _segment(key: str, name: str, segment: Segment | None = None) -> Segment:
    return segment_save(
        segment=segment, key=key, name=name, description="", rules=RULES, acting_user=STAFF
    )


def _template(key: str, name: str, template: MessageTemplate | None = None) -> MessageTemplate:
    return template_save(
        template=template,
        key=key,
        name=name,
        subject="{{ name }} 様へ",
        text="{{ name }} 様\nいつもありがとうございます。",
        acting_user=STAFF,
    )


def _offer(key: str, name: str, offer: Offer | None = None) -> Offer:
    return offer_save(offer=offer, key=key, name=name, kind="yen_off", value=500, acting_user=STAFF)


# --- duplicate names --------------------------------------------------------------------------


def test_a_new_segment_cannot_take_a_name_in_use_in_any_width_or_case() -> None:
    _segment("tokyo", "東京 VIP")
    with pytest.raises(SegmentError) as refused:
        _segment("tokyo-2", "東京　ｖｉｐ")
    assert refused.value.messages == [_taken("東京　ｖｉｐ", "セグメント", "東京 VIP", "tokyo")]
    assert list(Segment.objects.values_list("key", flat=True)) == ["tokyo"]


def test_a_new_template_cannot_take_a_name_in_use() -> None:
    _template("thanks", "お礼メール")
    with pytest.raises(ScenarioError) as refused:
        _template("thanks-2", "お礼 メール")
    assert refused.value.messages == [_taken("お礼 メール", "テンプレート", "お礼メール", "thanks")]
    assert not MessageTemplate.objects.filter(key="thanks-2").exists()


def test_a_new_offer_cannot_take_a_name_in_use() -> None:
    _offer("welcome", "Welcome 500円OFF")
    with pytest.raises(ScenarioError) as refused:
        _offer("welcome-2", "ＷＥＬＣＯＭＥ 500円OFF")
    assert refused.value.messages == [
        _taken("ＷＥＬＣＯＭＥ 500円OFF", "オファー", "Welcome 500円OFF", "welcome")
    ]
    assert not Offer.objects.filter(key="welcome-2").exists()


def test_renaming_to_another_ones_name_is_refused_but_keeping_ones_own_is_not() -> None:
    first_segment, second_segment = _segment("a", "東京"), _segment("b", "大阪")
    first_template, second_template = _template("a", "お礼"), _template("b", "ご案内")
    first_offer, second_offer = _offer("a", "500円OFF"), _offer("b", "1000円OFF")
    with pytest.raises(SegmentError):
        _segment("b", "東京", second_segment)
    with pytest.raises(ScenarioError):
        _template("b", "お礼", second_template)
    with pytest.raises(ScenarioError):
        _offer("b", "500円OFF", second_offer)
    # saved again under its own name (or its own name in another width): not a clash
    assert _segment("a", "東京", first_segment).name == "東京"
    assert _template("a", "お礼", first_template).name == "お礼"
    assert _offer("a", "５００円OFF", first_offer).name == "５００円OFF"


def test_the_forms_refuse_a_duplicate_name_and_name_the_other(client_for: Login) -> None:
    _segment("tokyo", "東京の方")
    _template("thanks", "お礼メール")
    _offer("welcome", "初回500円OFF")
    client = client_for(Role.MARKETER)
    segment_data = {
        "node": ["0", "0.0"],
        "kind-0": "group",
        "op-0": "and",
        "kind-0.0": "condition",
        "field-0.0": "prefecture",
        "operator-0.0": "in",
        "value-0.0": ["13"],
        "key": "tokyo-2",
        "name": "東京の方",
    }
    posts = {
        "セグメント「東京の方」(識別名 tokyo)": (reverse("segments:create"), segment_data),
        "テンプレート「お礼メール」(識別名 thanks)": (
            reverse("scenarios:template_create"),
            {"key": "thanks-2", "name": "お礼メール", "subject": "件名", "text": "本文"},
        ),
        "オファー「初回500円OFF」(識別名 welcome)": (
            reverse("scenarios:offers"),
            {"key": "w2", "name": "初回500円OFF", "kind": "yen_off", "value": "500",
             "valid_days": "14"},
        ),
    }  # fmt: skip
    for said, (url, data) in posts.items():
        response = client.post(url, data)
        assert response.status_code == 400, url
        assert f"既に{said}で使われています" in response.content.decode()
    assert not Segment.objects.filter(key="tokyo-2").exists()
    assert not MessageTemplate.objects.filter(key="thanks-2").exists()
    assert not Offer.objects.filter(key="w2").exists()


def test_a_scenario_file_loads_twice_but_not_with_a_duplicate_name() -> None:
    _segment("tokyo", "東京の方")
    _template("thanks", "お礼メール")
    _offer("welcome", "初回500円OFF")
    text = export_yaml()
    # the same file again (its own names): nothing refused, nothing written
    assert "変更なし1" in load_yaml(text, acting_user=STAFF).summary()
    # and again after every name changed, then back: each keeps its own name
    renamed = text.replace("東京の方", "東京都の方").replace("お礼メール", "お礼")
    load_yaml(renamed.replace("初回500円OFF", "初回 500円OFF"), acting_user=STAFF)
    load_yaml(text, acting_user=STAFF)
    doubled = (
        "version: 1\n"
        "segments:\n"
        "- {key: tokyo-2, name: 東京の方, rules: {op: and, rules: [{field: prefecture, "
        "operator: in, value: ['13']}]}}\n"
        "templates:\n"
        "- {key: thanks-2, name: お礼メール, subject: 件名, text: 本文}\n"
        "offers:\n"
        "- {key: welcome-2, name: 初回500円OFF, kind: yen_off, value: 500}\n"
    )
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(doubled, acting_user=STAFF)
    assert refused.value.messages == [
        "segments[1](key: tokyo-2): " + _taken("東京の方", "セグメント", "東京の方", "tokyo"),
        "templates[1](key: thanks-2): "
        + _taken("お礼メール", "テンプレート", "お礼メール", "thanks"),
        "offers[1](key: welcome-2): "
        + _taken("初回500円OFF", "オファー", "初回500円OFF", "welcome"),
    ]
    assert Segment.objects.count() == MessageTemplate.objects.count() == Offer.objects.count() == 1


# --- true / false for a number ----------------------------------------------------------------


def test_an_offer_value_of_true_in_a_file_is_refused_naming_the_field() -> None:
    text = (
        "version: 1\n"
        "offers:\n"
        "- {key: yes-please, name: はい, kind: yen_off, value: true}\n"
        "- {key: days, name: 日数, kind: yen_off, value: 500, valid_days: true}\n"
    )
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(text, acting_user=STAFF)
    assert refused.value.messages == [
        "offers[1](key: yes-please): value は数字で書いてください(true・false は使えません)",
        "offers[2](key: days): valid_days は数字で書いてください(true・false は使えません)",
    ]
    assert not Offer.objects.exists()


def test_the_offer_service_refuses_a_boolean_value() -> None:
    with pytest.raises(ScenarioError) as refused:
        offer_save(offer=None, key="b", name="b", kind="points", value=True, acting_user=STAFF)
    assert refused.value.messages == [
        "オファーの値は1以上の整数で入力してください(送料無料・プレゼントは入力不要です)"
    ]


@pytest.mark.parametrize(
    ("field", "where"),
    [
        ("first_use_days: true", "first_use_days"),
        ("attribution_days: true", "attribution_days"),
        ("holdout_percent: false", "holdout_percent"),
    ],
)
def test_a_scenario_number_of_true_in_a_file_is_refused(field: str, where: str) -> None:
    _template("thanks", "お礼メール")
    text = (
        "version: 1\n"
        "scenarios:\n"
        "- key: welcome\n"
        "  name: ようこそ\n"
        "  trigger: {kind: signup}\n"
        f"  {field}\n"
        "  steps:\n"
        "  - {key: s1, anchor: trigger, offset_days: 0, channel: email, template: thanks}\n"
    )
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(text, acting_user=STAFF)
    assert refused.value.messages == [
        f"scenarios[1](key: welcome): {where} は数字で書いてください(true・false は使えません)"
    ]


def test_a_step_repeat_of_true_in_a_file_is_refused_naming_the_step() -> None:
    _template("thanks", "お礼メール")
    text = (
        "version: 1\n"
        "scenarios:\n"
        "- key: welcome\n"
        "  name: ようこそ\n"
        "  trigger: {kind: signup}\n"
        "  steps:\n"
        "  - {key: s1, anchor: trigger, offset_days: 0, send_time: '10:00', "
        "repeat_monthly: true, channel: email, template: thanks}\n"
    )
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(text, acting_user=STAFF)
    assert refused.value.messages == [
        "scenarios[1](key: welcome): steps[1] の repeat_monthly は数字で書いてください"
        "(true・false は使えません)"
    ]


def test_the_scenario_service_refuses_boolean_numbers() -> None:
    _template("thanks", "お礼メール")
    spec = {
        "key": "welcome",
        "name": "ようこそ",
        "trigger": {"kind": "signup"},
        "first_use_days": True,
        "attribution_days": True,
        "steps": [{**step(), "send_time": "10:00", "repeat_monthly": True}],
    }
    _, errors = validate_scenario(spec)
    assert "使用開始日(お届けの何日後)は0〜60で入力してください" in errors
    assert "効果の計測期間は1〜365日で入力してください" in errors
    assert any("毎月くり返す回数は0〜60で入力してください" in e for e in errors)


# --- record fields in templates ---------------------------------------------------------------

OFFER_FIELDS = (
    "offer.name(名前)、offer.label(表示名)、offer.code(クーポンコード)、offer.value(値)、"
    "offer.expires_on(有効期限)"
)


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("{{ offer.cod }}", f"本文: {{{{ offer.cod }}}} という項目はありません。使える項目: {OFFER_FIELDS}"),
        (
            "{% if offer.cod %}x{% endif %}",
            f"本文: {{% if offer.cod %}} の「offer.cod」という項目はありません。使える項目: {OFFER_FIELDS}",
        ),
        (
            "{{ name|default:offer.cdoe }}",
            "本文: {{ name|default:offer.cdoe }} の「offer.cdoe」という項目はありません。"
            f"使える項目: {OFFER_FIELDS}",
        ),
        (
            "{% for r in recommendations %}{{ r.nmae }}{% endfor %}",
            "本文: {{ r.nmae }} という項目はありません。使える項目: r.name(商品名)、r.price(価格)",
        ),
        (
            "{{ recommendations.0.prise }}",
            "本文: {{ recommendations.0.prise }} という項目はありません。使える項目: "
            "recommendations.0.name(商品名)、recommendations.0.price(価格)",
        ),
    ],
)  # fmt: skip
def test_a_field_a_record_does_not_have_is_refused_listing_its_fields(text: str, said: str) -> None:
    with pytest.raises(TemplateRenderError) as refused:
        compile_template(subject="件名", text=text)
    assert refused.value.messages == [said]


def test_the_fields_records_have_and_other_attributes_are_accepted() -> None:
    compile_template(
        subject="{{ offer.label }}",
        text=(
            "{{ offer.name }}{{ offer.code }}{{ offer.value|comma }}{{ offer.expires_on|jdate }}"
            "{{ offer.expires_on.year }}{{ name.upper }}{{ recommendations.0.name }}"
            "{{ recommendations|length }}"
            "{% for r in recommendations %}{{ r.name }}{{ r.price|yen }}{% endfor %}"
            # a name bound over a record's is not that record any more
            "{% with offer=name %}{{ offer.upper }}{% endwith %}"
        ),
    )


DATE_PARTS = "使える項目: {0}.year(年)、{0}.month(月)、{0}.day(日)"


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (
            "{{ last_order_date.yeer }}",
            "本文: {{ last_order_date.yeer }} という項目はありません。"
            + DATE_PARTS.format("last_order_date"),
        ),
        (
            "{% if next_delivery_date.hour %}x{% endif %}",
            "本文: {% if next_delivery_date.hour %} の「next_delivery_date.hour」という項目はありません。"
            + DATE_PARTS.format("next_delivery_date"),
        ),
        (
            "{{ offer.expires_on.yeer }}",
            "本文: {{ offer.expires_on.yeer }} という項目はありません。"
            + DATE_PARTS.format("offer.expires_on"),
        ),
        (
            "{{ name.last }}",
            "本文: {{ name.last }} という項目はありません。name に項目はありません({{ name }} と書いてください)",
        ),
        (
            "{{ points_balance.0 }}",
            "本文: {{ points_balance.0 }} という項目はありません。"
            "points_balance に項目はありません({{ points_balance }} と書いてください)",
        ),
        (
            "{% for r in recommendations %}{{ r.price.yen }}{% endfor %}",
            "本文: {{ r.price.yen }} という項目はありません。r.price に項目はありません({{ r.price }} と書いてください)",
        ),
    ],
)  # fmt: skip
def test_an_attribute_a_text_number_or_date_does_not_have_is_refused(text: str, said: str) -> None:
    # each of these renders empty for every customer: 「前回のご購入( 年)」
    with pytest.raises(TemplateRenderError) as refused:
        compile_template(subject="件名", text=text)
    assert refused.value.messages == [said]


def test_what_a_text_number_or_date_has_is_accepted() -> None:
    compile_template(
        subject="{{ name.0 }}様",
        text=(
            "{{ last_order_date.year }}年{{ last_order_date.month }}月{{ next_delivery_date.day }}"
            "{{ points_expiry_date.isoformat }}{{ offer.expires_on.month }}{{ name.upper }}"
            "{{ points_balance.real }}{% for r in recommendations %}{{ r.name.0 }}{% endfor %}"
            "{% if last_order_date.year == 2026 %}今年{% endif %}"
            # a name bound over one of the given values is not that value any more
            "{% with last_order_date=offer %}{{ last_order_date.code }}{% endwith %}"
        ),
    )


def test_the_template_form_refuses_a_misspelled_offer_field(client_for: Login) -> None:
    response = client_for(Role.MARKETER).post(
        reverse("scenarios:template_create"),
        {"key": "typo", "name": "誤字", "subject": "件名", "text": "コード: {{ offer.cod }}"},
    )
    assert response.status_code == 400
    assert "{{ offer.cod }} という項目はありません" in response.content.decode()
    assert not MessageTemplate.objects.filter(key="typo").exists()


def test_a_stored_template_with_a_misspelled_field_still_renders() -> None:
    stored = MessageTemplate.objects.create(
        key="old", name="以前の", subject="件名", text="{{ name }} 様 {{ offer.cod }}"
    )
    compiled = compile_stored(stored)
    assert compiled.render({"name": "山田 花子", "offer": None})["text"] == "山田 花子 様 "


def test_the_scenario_form_still_saves(client_for: Login) -> None:
    _template("thanks", "お礼メール")
    response = client_for(Role.MARKETER).post(reverse("scenarios:create"), scenario_form())
    assert response.status_code == 302


# --- the demo's messages ----------------------------------------------------------------------


def test_the_demo_promises_no_points_kizuna_would_not_credit() -> None:
    """Kizuna never credits points (the shop's system does): a demo message, postal DM
    included, offers only what the step attaches and the message shows — a coupon code."""
    load_yaml(DEMO_SCENARIOS, acting_user=STAFF)
    today = dt.date(2026, 5, 1)
    for scenario in Scenario.objects.all():
        for s in scenario.steps.select_related("template", "offer"):
            assert s.offer is None or s.offer.kind != "points", (scenario.key, s.key)
            context = {**SAMPLE_CONTEXT, "offer": offer_context(s.offer, today=today)}
            text = compile_stored(s.template).render(context)["text"]
            assert "ポイント進呈" not in text, (scenario.key, s.key)
            if s.offer is not None and s.offer.code:
                assert s.offer.code in text, (scenario.key, s.key)
    birthday = Scenario.objects.get(key="birthday").steps.get()
    assert birthday.offer is not None
    text = compile_stored(birthday.template).render(
        {**SAMPLE_CONTEXT, "offer": offer_context(birthday.offer, today=today)}
    )["text"]
    assert "500円OFFクーポンをお贈りします" in text
    assert "クーポンコード: BIRTHDAY500" in text
