"""取引連絡 (transactional) scenarios skip consent, quiet hours, the frequency cap and the opt-out
link, so only messages about the customer's own transaction or account may be one: no offer,
and only a trigger about their membership, orders, shipments, subscription, points credited or
survey answer. Every route obeys (the form, the YAML file, the service), and a scenario stored
before the rule still gets its coupons sent as 販促 (特定電子メール法, RELIABILITY S7/S8)."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import (
    Enrollment,
    MessageTemplate,
    Scenario,
    ScenarioStatus,
)
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.services import (
    ScenarioError,
    offer_save,
    scenario_activate,
    scenario_save,
)
from kizuna.campaigns.automation.yaml_io import ScenarioFileError, export_yaml, load_yaml
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import OutboxMessage, OutboxStatus, Purpose
from kizuna.commerce.models import Shipment
from kizuna.customers.models import IdentityKind
from tests.delivery_support import open_all_day
from tests.factories import add_identity, make_customer, make_order
from tests.test_scenarios_kit import STAFF, jst, one, scenario_form, segment, step, template

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]
LAW = "特定電子メール法"
START = jst(2026, 5, 1)


def _coupon() -> str:
    return offer_save(
        offer=None, key="winback-10", name="おかえりなさい10%OFF", kind="percent_off",
        value=10, code="WELCOME10", valid_days=21, acting_user=STAFF,
    ).key  # fmt: skip


def _spec(trigger: dict[str, Any], *, offer: str | None = None, **fields: Any) -> dict[str, Any]:
    return {
        "key": "notice",
        "name": "お知らせ",
        "trigger": trigger,
        "holdout_percent": 0,
        "purpose": "transactional",
        "steps": [step("mail", offer=offer)],
        **fields,
    }


PROMOTIONAL = [
    ({"kind": "cart_abandonment", "hours": 3}, "カゴ落ち"),
    ({"kind": "browse_abandonment", "hours": 24}, "閲覧離脱"),
    ({"kind": "no_purchase", "days": 120}, "一定期間購入なし"),
    ({"kind": "birthday"}, "誕生日"),
    ({"kind": "first_purchase_anniversary"}, "初回購入記念日"),
    ({"kind": "points_expiring", "days": 30}, "ポイント失効前"),
    ({"kind": "segment_entered", "segment": "everyone"}, "セグメントに入った"),
]


@pytest.mark.parametrize(("trigger", "label"), PROMOTIONAL)
def test_a_promotional_trigger_cannot_be_transactional(trigger: dict[str, Any], label: str) -> None:
    segment("everyone", one("consent", "in", ["email"]))
    with pytest.raises(ScenarioError) as refused:
        scenario_save(scenario=None, spec=_spec(trigger), acting_user=STAFF)
    [message] = refused.value.messages
    assert f"目的「取引連絡」ではきっかけ「{label}」は使えません" in message
    assert f"{LAW}により配信同意と配信停止の案内が必要です" in message
    assert not Scenario.objects.exists()
    # the same scenario as 販促 is fine: consent and opt-out then apply
    saved = scenario_save(
        scenario=None, spec=_spec(trigger, purpose="marketing"), acting_user=STAFF
    )
    assert saved.purpose == Purpose.MARKETING


@pytest.mark.parametrize(
    "trigger",
    [
        {"kind": "signup"},
        {"kind": "first_purchase"},
        {"kind": "nth_purchase", "n": 2},
        {"kind": "shipment"},
        {"kind": "delivery"},
        {"kind": "points_earned"},
        {"kind": "subscription_before_delivery", "days": 3},
        {"kind": "subscription_skip"},
        {"kind": "subscription_cancel"},
    ],
)
def test_the_customers_own_transactions_can_be_transactional(trigger: dict[str, Any]) -> None:
    saved = scenario_save(scenario=None, spec=_spec(trigger), acting_user=STAFF)
    assert scenario_activate(scenario=saved, acting_user=STAFF).status == ScenarioStatus.ACTIVE


def test_a_transactional_step_cannot_carry_an_offer() -> None:
    spec = _spec({"kind": "shipment"}, offer=_coupon())
    with pytest.raises(ScenarioError) as refused:
        scenario_save(scenario=None, spec=spec, acting_user=STAFF)
    [message] = refused.value.messages
    assert message.startswith("ステップ1: 取引連絡のステップにはオファーを付けられません")
    assert LAW in message
    assert not Scenario.objects.exists()


def test_a_transactional_scenario_cannot_hold_anyone_out() -> None:
    # the holdout is sent nothing: 20% of the buyers would never get their shipping notice
    with pytest.raises(ScenarioError) as refused:
        scenario_save(scenario=None, spec=_spec({"kind": "shipment"}, holdout_percent=20), acting_user=STAFF)  # fmt: skip
    [message] = refused.value.messages
    assert message.startswith("ホールドアウト: 取引連絡ではホールドアウトを0%にしてください(20%")
    assert "その割合のお客様に出荷のお知らせなど" in message
    assert not Scenario.objects.exists()
    # left out, a 取引連絡 scenario holds nobody out (a 販促 one keeps the usual 10%)
    spec = _spec({"kind": "shipment"})
    del spec["holdout_percent"]
    assert scenario_save(scenario=None, spec=spec, acting_user=STAFF).holdout_percent == 0
    spec = {**spec, "key": "promo", "name": "販促", "purpose": "marketing"}
    assert scenario_save(scenario=None, spec=spec, acting_user=STAFF).holdout_percent == 10


def test_a_file_cannot_give_a_transactional_scenario_a_holdout() -> None:
    # given: a shipping notice running as 取引連絡 at 0%
    running = scenario_activate(
        scenario=scenario_save(scenario=None, spec=_spec({"kind": "shipment"}), acting_user=STAFF),
        acting_user=STAFF,
    )
    # when: the exported file is loaded back with a 10% holdout
    text = export_yaml().replace("holdout_percent: 0", "holdout_percent: 10")
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(text, acting_user=STAFF)
    # then: refused with the place and the reason; everyone still gets the notice
    assert refused.value.messages == [
        "scenarios[1](key: notice): ホールドアウト: 取引連絡ではホールドアウトを0%にしてください"
        "(10%になっています)。ホールドアウトのお客様には何も送られないため、その割合のお客様に"
        "出荷のお知らせなどご自身の注文や会員情報についての連絡が届きません。"
        "効果の比較は販促のシナリオで行ってください"
    ]
    running.refresh_from_db()
    assert running.holdout_percent == 0


def test_a_stored_transactional_scenario_with_a_holdout_is_not_started_again(
    client_for: Login,
) -> None:
    # given: a shipping notice stored as 取引連絡 with a 10% holdout before the rule, paused
    stored = _stored_before_the_rule(_spec({"kind": "shipment"}, holdout_percent=10))
    Scenario.objects.filter(pk=stored.pk).update(status=ScenarioStatus.PAUSED)
    # then: it cannot be started again until the holdout is 0, and its page says why
    with pytest.raises(ScenarioError) as refused:
        scenario_activate(scenario=stored, acting_user=STAFF)
    assert refused.value.messages == [
        "取引連絡ではホールドアウトを0%にしてください(10%になっています)。ホールドアウトのお客様には"
        "何も送られないため、その割合のお客様に出荷のお知らせなどご自身の注文や会員情報についての"
        "連絡が届きません。効果の比較は販促のシナリオで行ってください"
    ]
    html = client_for(Role.MARKETER).get(reverse("scenarios:detail", args=[stored.pk]))
    text = html.content.decode()
    assert "取引連絡としては送れない設定です" in text
    assert "ホールドアウトは使わず、全員に送っています" in text
    assert "取引連絡ではホールドアウトを0%にしてください(10%になっています)" in text
    # nothing of it is sent as 販促: it has no offer and its trigger is the customer's own
    assert "販促として送っています" not in text
    # once set to 0 it starts
    spec = {**_spec({"kind": "shipment"}), "purpose": "transactional"}
    fixed = scenario_save(scenario=stored, spec=spec, acting_user=STAFF)
    assert scenario_activate(scenario=fixed, acting_user=STAFF).status == ScenarioStatus.ACTIVE


def test_a_stored_transactional_scenario_with_a_holdout_still_tells_everyone() -> None:
    # given: a shipping notice stored as 取引連絡 with the largest holdout (90%) before the
    # rule, running, and ten customers whose orders ship
    _stored_before_the_rule(_spec({"kind": "shipment"}, holdout_percent=90))
    for _ in range(10):
        order = make_order(make_customer(), ordered_at=jst(2026, 5, 1, 12))
        Shipment.objects.create(order=order, shipped_on=dt.date(2026, 5, 2))
    # when
    tick(jst(2026, 5, 2, 10))
    # then: nobody is held out of the notice they are owed; each gets it
    assert Enrollment.objects.count() == 10
    assert not Enrollment.objects.filter(holdout=True).exists()
    assert OutboxMessage.objects.filter(purpose=Purpose.TRANSACTIONAL).count() == 10


def test_qa_s_coupon_scenario_is_refused_in_the_form(client_for: Login) -> None:
    # given: QA's scenario — segment entered, 取引連絡, holdout 0, the win-back coupon
    segment("lapsed", one("consent", "in", ["email"]))
    data = scenario_form(
        key="qa",
        name="QA シナリオ",
        trigger_kind="segment_entered",
        **{
            "param-segment": "lapsed",
            "purpose": "transactional",
            "holdout_percent": "0",
            "step-0-anchor": "trigger",
            "step-0-offer": _coupon(),
        },
    )
    # when
    response = client_for(Role.MARKETER).post(reverse("scenarios:create"), data)
    # then: not saved, and the page says why, for both problems
    html = response.content.decode()
    assert response.status_code == 400
    assert "きっかけ「セグメントに入った」は使えません" in html
    assert "取引連絡のステップにはオファーを付けられません" in html
    assert LAW in html
    assert not Scenario.objects.exists()


def test_a_running_coupon_scenario_cannot_be_made_transactional_by_file() -> None:
    # given: the F2 push with its ¥500 coupon, running as 販促
    offer_save(
        offer=None, key="f2-500", name="2回目500円OFF", kind="yen_off", value=500,
        code="NEXT500", valid_days=14, acting_user=STAFF,
    )  # fmt: skip
    spec = _spec({"kind": "first_purchase"}, offer="f2-500", key="f2-push-day30")
    spec["purpose"] = "marketing"
    running = scenario_activate(
        scenario=scenario_save(scenario=None, spec=spec, acting_user=STAFF), acting_user=STAFF
    )
    # when: the exported file is loaded with `purpose: transactional`
    text = export_yaml().replace("purpose: marketing", "purpose: transactional")
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(text, acting_user=STAFF)
    # then: refused with the place and the reason; the scenario stays 販促
    assert any(
        m.startswith("scenarios[1](key: f2-push-day30): ステップ1: 取引連絡のステップには")
        for m in refused.value.messages
    )
    running.refresh_from_db()
    assert running.purpose == Purpose.MARKETING


def _stored_before_the_rule(spec: dict[str, Any]) -> Scenario:
    """A scenario saved as 取引連絡 before the rule existed, running since START."""
    saved = scenario_save(scenario=None, spec={**spec, "purpose": "marketing"}, acting_user=STAFF)
    Scenario.objects.filter(pk=saved.pk).update(
        purpose=Purpose.TRANSACTIONAL, status=ScenarioStatus.ACTIVE, activated_at=START
    )
    saved.refresh_from_db()
    return saved


def test_a_stored_transactional_coupon_reaches_only_customers_who_consented(smtp) -> None:  # type: ignore[no-untyped-def]
    # given: a 取引連絡 first-purchase scenario stored before the rule, with a thank-you and
    # a coupon step, and a buyer who never agreed to marketing mail
    open_all_day()
    template("coupon", subject="{{ name }} 様へ {{ offer.label }}クーポン")
    _stored_before_the_rule(
        _spec(
            {"kind": "first_purchase"},
            steps=[step("thanks"), step("coupon", template="coupon", offer=_coupon())],
        )
    )
    buyer = make_customer(family_name="佐藤")
    add_identity(buyer, IdentityKind.EMAIL, "sato@example.jp")
    make_order(buyer, ordered_at=jst(2026, 5, 2, 9))
    # when: the scheduler and the delivery worker run
    tick(jst(2026, 5, 2, 10))
    DeliveryWorker().drain()
    # then: the thank-you arrives as 取引連絡; the coupon is 販促 and, without consent, not sent
    assert dict(OutboxMessage.objects.values_list("step_key", "purpose")) == {
        "thanks": Purpose.TRANSACTIONAL,
        "coupon": Purpose.MARKETING,
    }
    [received] = smtp.handler.received
    assert "クーポン" not in received.message["Subject"]
    coupon = OutboxMessage.objects.get(step_key="coupon")
    assert (coupon.status, coupon.reason) == (OutboxStatus.SKIPPED, "配信同意がありません")


def test_a_stored_transactional_promotional_trigger_is_sent_as_marketing() -> None:
    # given: a 取引連絡 birthday greeting stored before the rule (no offer)
    stored = _stored_before_the_rule(_spec({"kind": "birthday"}))
    make_customer(birthday=dt.date(1985, 5, 10))
    # when
    tick(jst(2026, 5, 10, 9))
    # then: it goes out as 販促, so consent, quiet hours, the cap and the opt-out link apply
    assert list(OutboxMessage.objects.values_list("purpose", flat=True)) == [Purpose.MARKETING]
    # and once paused it is not started again as 取引連絡
    Scenario.objects.filter(pk=stored.pk).update(status=ScenarioStatus.PAUSED)
    with pytest.raises(ScenarioError) as refused:
        scenario_activate(scenario=stored, acting_user=STAFF)
    assert "きっかけ「誕生日」は使えません" in refused.value.messages[0]


def test_the_scenario_page_says_a_stored_scenario_breaks_the_rule(client_for: Login) -> None:
    stored = _stored_before_the_rule(_spec({"kind": "shipment"}, offer=_coupon()))
    html = client_for(Role.MARKETER).get(reverse("scenarios:detail", args=[stored.pk]))
    text = html.content.decode()
    assert "取引連絡としては送れない設定です" in text
    assert "ステップ「mail」: 取引連絡のステップにはオファーを付けられません" in text
    assert "該当するメッセージは販促として送っています" in text


# --- a template that prints the offer, in a step without one ------------------------------------


@pytest.mark.parametrize("purpose", ["transactional", "marketing"])
def test_a_step_without_offer_cannot_use_a_template_that_prints_the_offer(purpose: str) -> None:
    # QA: the F2 coupon mail in a 取引連絡 first-purchase scenario without an offer passed the
    # rule and would send 「今ならでお届けします。クーポンコード: (まで)」 to every buyer, consent
    # or not; in a 販促 scenario the same broken text goes out.
    template(
        "f2-push", text="今なら{{ offer.label }}でお届けします。クーポンコード: {{ offer.code }}"
    )
    MessageTemplate.objects.filter(key="f2-push").update(name="F2クーポン案内")
    spec = _spec({"kind": "first_purchase"}, purpose=purpose)
    spec["steps"] = [step("mail", template="f2-push")]
    with pytest.raises(ScenarioError) as refused:
        scenario_save(scenario=None, spec=spec, acting_user=STAFF)
    # named as staff named it, not by its internal key
    assert "テンプレート「F2クーポン案内」はオファー({{ offer… }})を表示しますが" in str(
        refused.value
    )
    assert "f2-push" not in str(refused.value)
    assert not Scenario.objects.exists()
    # with the offer attached (販促), it saves
    if purpose == "marketing":
        spec["steps"] = [step("mail", template="f2-push", offer=_coupon())]
        assert scenario_save(scenario=None, spec=spec, acting_user=STAFF).key == "notice"


@pytest.mark.parametrize(
    "text",
    [
        "{% if offer %}{{ offer.label }}クーポン: {{ offer.code }}{% endif %}ご購入ありがとうございます",
        "{% if offer.code %}コード {{ offer.code }}{% else %}ありがとうございます{% endif %}",
        "{% if name and offer %}{{ offer.label }}{% endif %}",
        "{{ name|default:offer.code }} 様",
    ],
)
def test_a_template_that_prints_the_offer_only_when_there_is_one_needs_no_offer(text: str) -> None:
    template("thanks-or-coupon", text=text)
    spec = _spec({"kind": "first_purchase"})
    spec["steps"] = [step("mail", template="thanks-or-coupon")]
    assert (
        scenario_save(scenario=None, spec=spec, acting_user=STAFF).purpose == Purpose.TRANSACTIONAL
    )


def test_the_list_marks_stored_transactional_scenarios_to_fix(client_for: Login) -> None:
    # given: three 取引連絡 scenarios stored before the rules — a shipping notice with a coupon
    # step, one with a 10% holdout, a birthday greeting — one that is fine, and a 販促 one
    coupon = _coupon()
    _stored_before_the_rule(_spec({"kind": "shipment"}, offer=coupon, key="coupon", name="A"))
    _stored_before_the_rule(_spec({"kind": "delivery"}, holdout_percent=10, key="held", name="B"))
    _stored_before_the_rule(_spec({"kind": "birthday"}, key="birthday", name="C"))
    scenario_save(scenario=None, spec=_spec({"kind": "signup"}, key="fine", name="D"), acting_user=STAFF)  # fmt: skip
    scenario_save(
        scenario=None,
        spec=_spec({"kind": "signup"}, key="promo", name="E", purpose="marketing", offer=coupon),
        acting_user=STAFF,
    )
    client = client_for(Role.MARKETER)
    # when
    with CaptureQueriesContext(connection) as three_to_fix:
        html = client.get(reverse("scenarios:list")).content.decode()
    # then: each row to fix says so, with the reasons in its title; the others do not
    rows = {
        key: row
        for row in re.findall(r"<tr>(.*?)</tr>", html, re.S)
        for key in re.findall(r'class="muted small mono">([a-z-]+)<', row)
    }
    assert set(rows) == {"coupon", "held", "birthday", "fine", "promo"}
    for key in ("coupon", "held", "birthday"):
        assert "要修正" in rows[key], key
    for key in ("fine", "promo"):
        assert "要修正" not in rows[key], key
    assert "取引連絡のステップにはオファーを付けられません" in rows["coupon"]
    assert "取引連絡ではホールドアウトを0%にしてください(10%になっています)" in rows["held"]
    assert "きっかけ「誕生日」は使えません" in rows["birthday"]
    # and the marks cost one query for all rows, not one per row
    Scenario.objects.filter(key__in=["fine", "promo"]).update(purpose=Purpose.TRANSACTIONAL, holdout_percent=5)  # fmt: skip
    with CaptureQueriesContext(connection) as five_to_fix:
        html = client.get(reverse("scenarios:list")).content.decode()
    assert html.count("<strong>要修正</strong>") == 5
    assert len(five_to_fix) == len(three_to_fix)
