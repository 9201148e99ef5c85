"""The scenario pages by role; building a scenario in the form; the scenario page with lift
and held backlogs; templates with a preview on a real customer; offers; deleting what was made
by mistake (a draft scenario, an unused template or offer)."""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import (
    Backlog,
    Enrollment,
    MessageTemplate,
    Offer,
    Scenario,
    ScenarioStatus,
    ScenarioStep,
    SegmentMember,
    StepDispatch,
    TickLog,
)
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.services import ScenarioError, offer_save, scenario_save
from kizuna.campaigns.automation.templating import MAX_RENDERED
from kizuna.campaigns.models import OutboxMessage, OutboxStatus, Purpose
from kizuna.campaigns.outbox import outbox_enqueue
from kizuna.core.models import AuditLog
from kizuna.customers.models import IdentityKind
from kizuna.web.scenarios import spec_of
from tests.factories import add_identity, make_customer, make_order
from tests.test_scenarios_kit import (
    STAFF,
    jst,
    one,
    scenario,
    scenario_form,
    segment,
    step,
    template,
)

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
Login = Callable[[Role], Client]
EDITORS = (Role.ADMIN, Role.MARKETER)
READERS = (Role.ADMIN, Role.MARKETER, Role.ANALYST)


@pytest.fixture
def welcome() -> Scenario:
    return scenario("welcome", trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))


@pytest.mark.parametrize("role", list(Role))
def test_analysts_read_scenarios_and_only_marketers_change_them(
    client_for: Login, welcome: Scenario, role: Role
) -> None:
    client = client_for(role)
    for url in (
        reverse("scenarios:list"),
        reverse("scenarios:detail", args=[welcome.pk]),
        reverse("scenarios:lift", args=[welcome.pk]),
    ):
        assert client.get(url).status_code == (200 if role in READERS else 403), url
    for url in (
        reverse("scenarios:create"),
        reverse("scenarios:edit", args=[welcome.pk]),
        reverse("scenarios:templates"),
        reverse("scenarios:template_create"),
        reverse("scenarios:template_edit", args=[template().pk]),
        reverse("scenarios:offers"),
    ):
        assert client.get(url).status_code == (200 if role in EDITORS else 403), url
    paused = client.post(reverse("scenarios:pause", args=[welcome.pk]))
    assert paused.status_code == (302 if role in EDITORS else 403)


def _enroll(s: Scenario, *, holdout: bool = False) -> Enrollment:
    moment = jst(2026, 5, 2, 9)
    return Enrollment.objects.create(
        scenario=s,
        customer=make_customer(),
        occurrence="first",
        holdout=holdout,
        enrolled_at=moment,
        anchor_at=moment,
        anchor_date=moment.date(),
    )


def test_the_empty_list_says_where_to_start_in_the_pages_not_on_the_command_line(
    client_for: Login,
) -> None:
    html = client_for(Role.MARKETER).get(reverse("scenarios:list")).content.decode()
    assert "シナリオはまだありません" in html
    assert f'<a href="{reverse("scenarios:templates")}">メッセージテンプレート</a>' in html
    assert f'<a href="{reverse("scenarios:create")}">新しいシナリオを作成</a>' in html
    assert "scenarios load" not in html


def test_the_list_shows_trigger_status_and_enrollments(
    client_for: Login, welcome: Scenario
) -> None:
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    _enroll(welcome, holdout=True)
    other = scenario("other", trigger={"kind": "signup"}, activated_at=jst(2026, 5, 1))
    _enroll(other)
    client = client_for(Role.ANALYST)
    # when: the list is opened
    with CaptureQueriesContext(connection) as queries:
        html = client.get(reverse("scenarios:list")).content.decode()
    # then: it does not count enrollments itself (a GROUP BY over the whole table took 0.7 s
    # at a million customers); each row loads its counts after the page
    assert not [q["sql"] for q in queries.captured_queries if "automation_enrollment" in q["sql"]]
    assert "シナリオ welcome" in html
    assert "初回購入" in html
    assert "稼働中" in html
    assert "新しいシナリオ" not in html  # analysts cannot create
    for s in (welcome, other):
        assert f'hx-get="{reverse("scenarios:counts", args=[s.pk])}" hx-trigger="load"' in html
    assert "数えています…" in html
    # the counts replace the placeholder with the two cells: treated, holdout
    counts = client.get(reverse("scenarios:counts", args=[welcome.pk])).content.decode()
    assert counts == '<td class="num">1</td><td class="num">1</td>'
    counts = client.get(reverse("scenarios:counts", args=[other.pk])).content.decode()
    assert counts == '<td class="num">1</td><td class="num">0</td>'


def test_a_scenario_is_built_in_the_form(client_for: Login) -> None:
    response = client_for(Role.MARKETER).post(reverse("scenarios:create"), scenario_form())
    saved = Scenario.objects.get(key="trial-follow")
    assert response.status_code == 302
    assert response["Location"] == reverse("scenarios:detail", args=[saved.pk])
    assert saved.trigger_params == {"product_kind": "trial"}
    assert saved.status == ScenarioStatus.DRAFT
    step_ = saved.steps.get()
    assert (step_.anchor, step_.send_time.hour) == ("delivery", 10)  # type: ignore[union-attr]


def test_form_errors_are_japanese_and_keep_the_input(client_for: Login) -> None:
    data = scenario_form(
        **{"holdout_percent": "百", "step-0-anchor": "next_delivery", "name": "下書き"}
    )
    response = client_for(Role.MARKETER).post(reverse("scenarios:create"), data)
    html = response.content.decode()
    assert response.status_code == 400
    assert "ホールドアウトは0〜90(%)の整数で入力してください" in html
    assert "次回お届け予定日" in html
    assert 'value="下書き"' in html
    assert 'value="百"' in html
    assert not Scenario.objects.exists()


def _opened(html: str) -> str:
    """The version an edit form was opened on (its hidden "opened" field)."""
    found = re.search(r'name="opened" value="([^"]*)"', html)
    assert found is not None
    return found[1]


def test_a_save_from_a_second_tab_does_not_silently_undo_the_first(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    client.post(reverse("scenarios:create"), scenario_form())
    saved = Scenario.objects.get(key="trial-follow")
    url = reverse("scenarios:edit", args=[saved.pk])
    # given: the scenario is open in two tabs; the first adds a step and saves
    second_tab = _opened(client.get(url).content.decode())
    reminder = {
        "step-1-key": "reminder",
        "step-1-anchor": "delivery",
        "step-1-offset_days": "7",
        "step-1-channel": "email",
        "step-1-template": template().key,
    }
    first_tab = scenario_form(
        opened=_opened(client.get(url).content.decode()), step=["0", "1"], **reminder
    )
    assert client.post(url, first_tab).status_code == 302
    # when: the second tab, opened before that save, saves its older form
    response = client.post(url, scenario_form(opened=second_tab, name="名前だけ変えた"))
    # then: nothing is overwritten; the page says why and keeps what was typed
    html = response.content.decode()
    assert response.status_code == 409
    assert "この画面を開いた後に別の画面で保存されています" in html
    assert 'value="名前だけ変えた"' in html
    assert sorted(saved.steps.values_list("key", flat=True)) == ["arrived", "reminder"]
    saved.refresh_from_db()
    assert saved.name == "トライアル購入者フォロー"
    # when: saved again from the page that said so, it overwrites knowingly
    again = client.post(url, scenario_form(opened=_opened(html), name="名前だけ変えた"))
    assert again.status_code == 302
    saved.refresh_from_db()
    assert saved.name == "名前だけ変えた"


def test_a_template_saved_in_another_tab_is_not_silently_overwritten(
    client_for: Login,
) -> None:
    client = client_for(Role.MARKETER)
    thanks = template(text="最初の本文")
    url = reverse("scenarios:template_edit", args=[thanks.pk])
    fields = {"name": "お礼", "subject": "{{ name }} 様", "html": ""}
    second_tab = _opened(client.get(url).content.decode())
    first_tab = _opened(client.get(url).content.decode())
    assert (
        client.post(url, {**fields, "text": "一つ目のタブの本文", "opened": first_tab}).status_code
        == 302
    )
    response = client.post(url, {**fields, "text": "二つ目のタブの本文", "opened": second_tab})
    html = response.content.decode()
    assert response.status_code == 409
    assert "この画面を開いた後に別の画面で保存されています" in html
    assert "二つ目のタブの本文" in html
    thanks.refresh_from_db()
    assert thanks.text == "一つ目のタブの本文"
    again = client.post(url, {**fields, "text": "二つ目のタブの本文", "opened": _opened(html)})
    assert again.status_code == 302
    thanks.refresh_from_db()
    assert thanks.text == "二つ目のタブの本文"


def test_the_form_adds_steps_and_changes_trigger_settings_without_losing_input(
    client_for: Login,
) -> None:
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:form_refresh")
    html = client.post(url, scenario_form(action="add-step"), headers=HTMX).content.decode()
    assert 'name="step-1-key"' in html
    assert 'value="arrived"' in html
    html = client.post(
        url, scenario_form(trigger_kind="no_purchase"), headers=HTMX
    ).content.decode()
    assert 'name="param-days"' in html
    assert 'value="120"' in html  # the trigger's default


def test_the_scenario_page_shows_steps_lift_and_lets_a_marketer_pause(
    client_for: Login, welcome: Scenario
) -> None:
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    client = client_for(Role.MARKETER)
    html = client.get(reverse("scenarios:detail", args=[welcome.pk])).content.decode()
    for text in ("きっかけの直後", "停止する", reverse("scenarios:lift", args=[welcome.pk])):
        assert text in html
    # skips at send time (consent, cap) are not in the step table: the page says where they are
    assert "条件で見送り" in html
    assert f"{reverse('outbox:queue')}?scenario={welcome.pk}&amp;status=skipped" in html
    # the lift table comes after the page (it can take seconds on a large shop)
    lift = client.get(reverse("scenarios:lift", args=[welcome.pk])).content.decode()
    # (welcome holds nobody out, so its lift cannot be measured)
    for text in ("購入率(30日以内)", "90日LTV", "計測不可"):
        assert text in lift
    # (the message queued above is still waiting: stopping asks about it)
    client.post(reverse("scenarios:pause", args=[welcome.pk]), {"waiting": "keep"})
    welcome.refresh_from_db()
    assert welcome.status == ScenarioStatus.PAUSED
    html = client.get(reverse("scenarios:detail", args=[welcome.pk])).content.decode()
    assert "稼働させる" in html


def _queued_welcome(welcome: Scenario, buyers: int) -> Any:
    for _ in range(buyers):
        make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    return OutboxMessage.objects.filter(scenario_id=welcome.pk)


def test_stopping_a_scenario_with_queued_mail_can_cancel_it(
    client_for: Login, welcome: Scenario
) -> None:
    queued = _queued_welcome(welcome, 4)
    # one of them a worker is sending right now: it cannot be taken back
    sending = queued.first()
    assert sending is not None
    queued.filter(pk=sending.pk).update(
        status=OutboxStatus.CLAIMED,
        claimed_by="worker-1",
        lease_until=timezone.now() + dt.timedelta(minutes=5),
    )
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:pause", args=[welcome.pk])
    asked = client.post(url).content.decode()
    welcome.refresh_from_db()
    assert welcome.status == ScenarioStatus.ACTIVE  # asked first, nothing stopped yet
    assert "停止して送信待ちの3件も取り消す" in asked
    assert "停止する(送信待ちの3件は予定どおり送信)" in asked
    assert "送信中のメッセージが 1 件" in asked
    found = re.search(r'name="up_to_id" value="(\d+)"', asked)
    assert found is not None
    done = client.post(url, {"waiting": "cancel", "up_to_id": found[1]}, follow=True)
    html = done.content.decode()
    assert "停止しました。送信待ちの3件を取り消しました" in html
    assert "送信中の1件はすでに送信が始まっているため取り消せません" in html
    welcome.refresh_from_db()
    assert welcome.status == ScenarioStatus.PAUSED
    assert not queued.filter(status=OutboxStatus.PENDING).exists()
    reasons = set(queued.filter(status=OutboxStatus.SKIPPED).values_list("reason", flat=True))
    assert len(reasons) == 1
    assert reasons.pop().startswith("シナリオ「シナリオ welcome」の停止により送信を取り消し(")
    audit = AuditLog.objects.get(action="outbox.cancel")
    assert audit.changes["count"] == [0, 3]
    # resuming does not queue the cancelled ones again: each step is dispatched once
    client.post(reverse("scenarios:activate", args=[welcome.pk]))
    tick(timezone.now() + dt.timedelta(minutes=1))
    assert not queued.filter(status=OutboxStatus.PENDING).exists()


def test_stopping_can_let_queued_mail_go_as_planned(client_for: Login, welcome: Scenario) -> None:
    queued = _queued_welcome(welcome, 2)
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:pause", args=[welcome.pk])
    done = client.post(url, {"waiting": "keep"}, follow=True).content.decode()
    assert "停止しました。送信待ちの2件は予定どおり送信されます" in done
    assert queued.filter(status=OutboxStatus.PENDING).count() == 2
    assert not AuditLog.objects.filter(action="outbox.cancel").exists()


def test_the_step_timing_says_when_a_send_time_really_applies(client_for: Login) -> None:
    # given: a marketing scenario with a same-day step at 10:00 and a late-evening step inside
    # the default quiet hours (21:00-08:00)
    shown = scenario(
        "timed",
        trigger={"kind": "first_purchase"},
        steps=[
            step("morning", send_time=dt.time(10)),
            step("late", offset_days=3, send_time=dt.time(23, 30)),
        ],
        activated_at=jst(2026, 5, 1),
    )
    # when
    html = client_for(Role.MARKETER).get(reverse("scenarios:detail", args=[shown.pk]))
    page = html.content.decode()
    # then: an entry after 10:00 is sent at once, not held to the next day; the 23:30 step
    # says the worker sends it when the quiet hours end
    assert "きっかけの当日 10:00(過ぎていればすぐ)" in page
    assert "きっかけの日時の3日後 23:30※送信しない時間帯のため08:00以降に送信" in page


def test_stopping_a_draft_says_nothing_was_running(client_for: Login) -> None:
    draft = scenario_save(
        scenario=None,
        spec={"key": "draft", "name": "下書き", "trigger": {"kind": "signup"}, "steps": []},
        acting_user=STAFF,
    )
    response = client_for(Role.MARKETER).post(
        reverse("scenarios:pause", args=[draft.pk]), follow=True
    )
    html = response.content.decode()
    assert "このシナリオは下書きのため、停止するものはありません" in html
    assert "停止しました" not in html
    draft.refresh_from_db()
    assert draft.status == ScenarioStatus.DRAFT


def test_a_scenario_without_entries_says_so_instead_of_a_table_of_zeros(
    client_for: Login,
) -> None:
    draft = scenario_save(
        scenario=None,
        spec={"key": "draft", "name": "下書き", "trigger": {"kind": "signup"}, "steps": []},
        acting_user=STAFF,
    )
    lift = client_for(Role.ANALYST).get(reverse("scenarios:lift", args=[draft.pk]))
    html = lift.content.decode()
    assert "まだエントリーがありません" in html
    # an analyst has no 稼働させる button to press
    assert "稼働すると、その後のきっかけからエントリーが始まります" in html
    assert "0.0%" not in html


def test_a_held_backlog_is_shown_and_confirmed_on_the_scenario_page(
    client_for: Login, welcome: Scenario
) -> None:
    tick(jst(2026, 5, 2, 10))
    make_order(make_customer(), ordered_at=jst(2026, 5, 3, 9))
    tick(jst(2026, 5, 6, 10))  # after a stop: held
    backlog = Backlog.objects.get()
    analyst_html = client_for(Role.ANALYST).get(reverse("scenarios:list")).content.decode()
    assert "確認するまで送信されません" in analyst_html
    client = client_for(Role.MARKETER)
    html = client.get(reverse("scenarios:detail", args=[welcome.pk])).content.decode()
    assert "確認待ちのメッセージ 1 件" in html
    assert "今から送信する" in html
    assert (
        client_for(Role.ANALYST)
        .post(reverse("scenarios:backlog_confirm", args=[backlog.pk]))
        .status_code
        == 403
    )
    client.post(reverse("scenarios:backlog_confirm", args=[backlog.pk]))
    backlog.refresh_from_db()
    assert backlog.status == Backlog.Status.CONFIRMED
    assert backlog.decided_by == "marketer-user"


def test_discarding_a_held_backlog_asks_to_be_sure(client_for: Login, welcome: Scenario) -> None:
    tick(jst(2026, 5, 2, 10))
    make_order(make_customer(), ordered_at=jst(2026, 5, 3, 9))
    tick(jst(2026, 5, 6, 10))  # after a stop: held
    backlog = Backlog.objects.get()
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:backlog_discard", args=[backlog.pk])
    # when: the button is pressed without ticking 「破棄してよい」
    html = client.post(url, follow=True).content.decode()
    # then: nothing is discarded, and the page says what to do
    backlog.refresh_from_db()
    assert backlog.status == Backlog.Status.PENDING
    assert "「破棄してよい」にチェックを入れてから" in html
    # when: ticked
    client.post(url, {"sure": "1"})
    backlog.refresh_from_db()
    assert backlog.status == Backlog.Status.DISCARDED


def test_activation_is_refused_with_the_reason(client_for: Login) -> None:
    draft = scenario_save(
        scenario=None,
        spec={"key": "empty", "name": "空", "trigger": {"kind": "signup"}, "steps": []},
        acting_user=STAFF,
    )
    client = client_for(Role.MARKETER)
    response = client.post(reverse("scenarios:activate", args=[draft.pk]), follow=True)
    assert "ステップを1つ以上追加してから稼働させてください" in response.content.decode()


def test_templates_are_created_and_previewed_with_a_real_customer(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    customer = make_customer(family_name="佐藤", given_name="一郎")
    fields = {
        "name": "お礼",
        "key": "thanks-2",
        "subject": "{{ name }} 様",
        "text": "{{ name }} 様、ありがとうございます。",
        "html": "",
    }
    preview = client.post(
        reverse("scenarios:template_preview"),
        {**fields, "customer": str(customer.pk)},
        headers=HTMX,
    )
    html = preview.content.decode()
    assert "佐藤 一郎 様、ありがとうございます。" in html
    assert f"顧客 #{customer.pk}" in html
    sample = client.post(
        reverse("scenarios:template_preview"), fields, headers=HTMX
    ).content.decode()
    assert "山田 花子 様" in sample

    def preview_for(typed: str) -> str:
        answer = client.post(
            reverse("scenarios:template_preview"), {**fields, "customer": typed}, headers=HTMX
        )
        return answer.content.decode()

    # A marketer knows a test customer by e-mail or phone rather than by ID.
    add_identity(customer, IdentityKind.EMAIL, "ichiro.sato@example.jp")
    add_identity(customer, IdentityKind.PHONE, "+819012345678", "090-1234-5678")
    assert "佐藤 一郎 様、ありがとうございます。" in preview_for("Ichiro.Sato@example.jp")
    assert "佐藤 一郎 様、ありがとうございます。" in preview_for("09012345678")
    # Two 佐藤 are not one customer: the preview says so and names them, never picks one.
    other = make_customer(family_name="佐藤", given_name="花")
    both = preview_for("佐藤")
    assert "山田 花子 様" in both
    assert "当てはまるお客様が複数います" in both
    assert f"#{customer.pk} 佐藤 一郎" in both
    assert f"#{other.pk} 佐藤 花" in both
    assert "当てはまるお客様は見つかりません" in preview_for("nobody@example.jp")
    refused = client.post(
        reverse("scenarios:template_preview"), {**fields, "text": "{% debug %}"}, headers=HTMX
    )
    assert "debug" in refused.content.decode()
    saved = client.post(reverse("scenarios:template_create"), fields)
    assert saved.status_code == 302
    assert MessageTemplate.objects.filter(key="thanks-2").exists()


def test_the_preview_shows_where_the_unsubscribe_link_goes(client_for: Login) -> None:
    fields = {"subject": "ご案内", "text": "配信停止はこちら: {{ unsubscribe_url }}", "html": ""}
    html = (
        client_for(Role.MARKETER)
        .post(reverse("scenarios:template_preview"), fields, headers=HTMX)
        .content.decode()
    )
    assert "/u/お客様ごとの配信停止リンク" in html
    assert "{{unsubscribe_url}}" not in html


def test_a_template_with_a_forbidden_tag_is_not_saved(client_for: Login) -> None:
    response = client_for(Role.MARKETER).post(
        reverse("scenarios:template_create"),
        {"name": "x", "key": "bad", "subject": "件名", "text": "{% include 'web/base.html' %}"},
    )
    assert response.status_code == 400
    assert "include" in response.content.decode()
    assert not MessageTemplate.objects.filter(key="bad").exists()


def test_the_template_form_caps_bodies_at_what_a_message_may_render(client_for: Login) -> None:
    # given: the longest bodies the form lets a browser send, posted as a browser posts them
    # (URL-encoded: 9 bytes per Japanese character)
    client = client_for(Role.MARKETER)
    page = client.get(reverse("scenarios:template_create")).content.decode()
    caps = re.findall(r'<textarea id="t-(?:text|html)"[^>]*maxlength="(\d+)"', page)
    assert caps == [str(MAX_RENDERED)] * 2
    body = {"name": "長文", "key": "long", "subject": "件名", "text": "あ" * MAX_RENDERED,
            "html": "い" * MAX_RENDERED}  # fmt: skip
    # when
    response = client.post(
        reverse("scenarios:template_create"),
        urlencode(body),
        content_type="application/x-www-form-urlencoded",
    )
    # then: read and saved, not refused as too large a request (a 400 losing what was typed)
    assert response.status_code == 302
    assert len(MessageTemplate.objects.get(key="long").text) == MAX_RENDERED


WITH_TIME = '{{ name }} 様 最終購入: {{ last_order_date|date:"Y年n月j日 H:i" }}'


@pytest.mark.parametrize(
    ("text", "said"),
    [
        (WITH_TIME, "時刻の書式(H・i)は使えません"),
        ("{{ points_balance|divisibleby:0 }}", "0で割ることはできません"),
        # a 59-second, several-GB preview before widths were capped
        ("{{ name|ljust:'2000000000' }}", "幅は200までです"),
        ("{{ name|center:'99999999' }}", "幅は200までです"),
    ],
)
def test_the_preview_shows_why_a_template_cannot_be_rendered(
    client_for: Login, text: str, said: str
) -> None:
    started = time.perf_counter()
    response = client_for(Role.MARKETER).post(
        reverse("scenarios:template_preview"),
        {"subject": "ご案内", "text": text, "html": ""},
        headers=HTMX,
    )
    assert time.perf_counter() - started < 2
    # 200, or htmx would leave the preview as it was: the error is the preview's content
    assert response.status_code == 200
    html = response.content.decode()
    assert "このままでは保存できません" in html
    assert said in html
    assert "本文: 「" in html


def test_a_template_that_fails_when_rendered_is_not_saved(client_for: Login) -> None:
    response = client_for(Role.MARKETER).post(
        reverse("scenarios:template_create"),
        {
            "name": "最終購入日", "key": "last-order", "subject": "ご案内", "text": WITH_TIME,
            "customer": "hanako@example.jp",
        },
    )  # fmt: skip
    assert response.status_code == 400
    html = response.content.decode()
    assert "保存できませんでした" in html
    assert "時刻の書式(H・i)は使えません" in html
    assert "Y年n月j日 H:i" in html  # the input is kept
    assert 'value="hanako@example.jp"' in html  # and whom the preview was shown for
    assert not MessageTemplate.objects.filter(key="last-order").exists()


def _break(saved: MessageTemplate, text: str) -> None:
    """The template as one saved before templates were rendered when saved."""
    MessageTemplate.objects.filter(pk=saved.pk).update(text=text)


def test_the_scenario_page_says_its_last_tick_failed_and_why(client_for: Login) -> None:
    # given: a running scenario whose template fails for every customer
    dated = template("dated", text="{{ name }} 様")
    first = scenario(
        "first", trigger={"kind": "first_purchase"}, steps=[step(template="dated")],
        activated_at=jst(2026, 5, 1),
    )  # fmt: skip
    _break(dated, WITH_TIME)
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    # when: the scheduler runs
    report = tick(jst(2026, 5, 2, 10))
    # then: the tick went on (完了), the scenario failed, nothing was queued
    assert report.scenarios[0].error.startswith("TemplateRenderError: 本文: ")
    client = client_for(Role.MARKETER)
    page = client.get(reverse("scenarios:detail", args=[first.pk])).content.decode()
    assert "直近の実行でエラー" in page
    assert "テンプレートを表示できないため" in page
    assert "時刻の書式(H・i)は使えません" in page
    assert "TemplateRenderError" not in page
    listing = client.get(reverse("scenarios:list")).content.decode()
    assert "直近の実行でエラー" in listing
    # when: the template is fixed and the scheduler runs again
    _break(dated, "{{ name }} 様 最終購入: {{ last_order_date|jdate }}")
    tick(jst(2026, 5, 2, 10, 1))
    # then: the error is gone with the tick that failed
    page = client.get(reverse("scenarios:detail", args=[first.pk])).content.decode()
    assert "直近の実行でエラー" not in page
    assert "直近の実行でエラー" not in client.get(reverse("scenarios:list")).content.decode()


def test_an_error_that_is_not_the_templates_is_shown_for_the_administrator(
    client_for: Login, welcome: Scenario
) -> None:
    other = scenario("other", trigger={"kind": "signup"}, activated_at=jst(2026, 5, 1))
    TickLog.objects.create(
        started_at=jst(2026, 5, 2, 10), now=jst(2026, 5, 2, 10), holder="test",
        status=TickLog.Status.DONE,
        report={"scenarios": [{"key": "welcome", "error": "OperationalError: database is locked"},
                              {"key": "other", "error": ""}]},
    )  # fmt: skip
    client = client_for(Role.ANALYST)
    page = client.get(reverse("scenarios:detail", args=[welcome.pk])).content.decode()
    assert "直近の実行でエラー(2026-05-02 10:00)" in page
    assert "システム管理者" in page
    assert "OperationalError: database is locked" in page
    page = client.get(reverse("scenarios:detail", args=[other.pk])).content.decode()
    assert "直近の実行でエラー" not in page


def test_offers_are_added_and_bad_values_explained(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    # the page says the shop's cart issues coupons and points: a marketer who reads
    # 「ポイント付与」 must not expect Kizuna to credit them
    page = client.get(reverse("scenarios:offers")).content.decode()
    assert "ポイントの付与はKizunaでは行いません" in page
    bad = client.post(
        reverse("scenarios:offers"),
        {"key": "pct", "name": "割引", "kind": "percent_off", "value": "150", "valid_days": "14"},
    )
    assert bad.status_code == 400
    assert "割引率は100%以下にしてください" in bad.content.decode()
    good = client.post(
        reverse("scenarios:offers"),
        {"key": "pct", "name": "10%OFF", "kind": "percent_off", "value": "10", "valid_days": "14"},
    )
    assert good.status_code == 302
    assert Offer.objects.get().label == "10%OFF"
    # 送料無料 has nothing to count: the value box may stay empty; a 0-yen coupon is refused
    free = client.post(
        reverse("scenarios:offers"),
        {
            "key": "free",
            "name": "送料無料",
            "kind": "free_shipping",
            "value": "",
            "valid_days": "7",
        },
    )
    assert free.status_code == 302
    assert Offer.objects.get(key="free").value == 0
    zero = client.post(
        reverse("scenarios:offers"),
        {"key": "zero", "name": "0円", "kind": "yen_off", "value": "0", "valid_days": "7"},
    )
    assert zero.status_code == 400
    assert "オファーの値は1以上の整数で入力してください" in zero.content.decode()


def test_enrollments_are_listed_per_step(client_for: Login) -> None:
    s = scenario(
        "two-steps",
        trigger={"kind": "first_purchase"},
        steps=[step("now"), step("later", anchor="purchase", offset_days=3, send_time="10:00")],
        activated_at=jst(2026, 5, 1),
    )
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    html = client_for(Role.MARKETER).get(reverse("scenarios:detail", args=[s.pk])).content.decode()
    assert "購入日の3日後 10:00" in html
    assert Enrollment.objects.count() == 1


# --- deleting ---------------------------------------------------------------------------------


def _draft(key: str = "mistake", **fields: Any) -> Scenario:
    spec: dict[str, Any] = {
        "key": key,
        "name": "間違えて作ったシナリオ",
        "trigger": {"kind": "first_purchase"},
        "steps": [step()],
    }
    spec.update(fields)
    return scenario_save(scenario=None, spec=spec, acting_user=STAFF)


def test_a_draft_scenario_is_deleted_only_once_confirmed(client_for: Login) -> None:
    draft = _draft()
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:delete", args=[draft.pk])
    page = client.get(reverse("scenarios:detail", args=[draft.pk])).content.decode()
    assert f'action="{url}"' in page
    assert "削除してよい" in page
    assert client.get(url).status_code == 405
    # when: the button is pressed without ticking 「削除してよい」
    refused = client.post(url, follow=True)
    # then: nothing is deleted, and the scenario's page says what to do
    assert Scenario.objects.filter(pk=draft.pk).exists()
    assert refused.redirect_chain[-1][0] == reverse("scenarios:detail", args=[draft.pk])
    assert "「削除してよい」にチェックを入れてから" in refused.content.decode()
    # when: ticked
    deleted = client.post(url, {"sure": "1"}, follow=True)
    # then: gone with its steps, said on the list, and audited with what it was
    assert not Scenario.objects.filter(pk=draft.pk).exists()
    assert not ScenarioStep.objects.exists()
    assert deleted.redirect_chain[-1][0] == reverse("scenarios:list")
    assert "シナリオ「間違えて作ったシナリオ」を削除しました" in deleted.content.decode()
    audit = AuditLog.objects.get(action="scenario.delete")
    assert (audit.entity_id, audit.actor_label) == (str(draft.pk), "marketer-user")
    assert audit.changes["key"] == ["mistake", None]
    assert audit.changes["name"] == ["間違えて作ったシナリオ", None]
    assert audit.changes["steps"][1] is None
    assert audit.changes["steps"][0][0].startswith("s1:trigger+0d")
    # when: the same form is sent again from a second tab
    again = client.post(url, {"sure": "1"}, follow=True)
    # then: a plain answer, not an error page
    assert again.status_code == 200
    assert again.redirect_chain[-1][0] == reverse("scenarios:list")
    assert "このシナリオはすでに削除されています" in again.content.decode()


def test_a_scenario_that_ran_keeps_its_history(client_for: Login, welcome: Scenario) -> None:
    # given: a running scenario that has enrolled and sent to a customer
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    assert (Enrollment.objects.count(), StepDispatch.objects.count()) == (1, 1)
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:delete", args=[welcome.pk])
    # then: its page says why it cannot be deleted and what to do instead; no delete button
    page = client.get(reverse("scenarios:detail", args=[welcome.pk])).content.decode()
    assert "配信の記録があるため削除できません(稼働中・お客様のエントリー)" in page
    assert "使わない場合は停止してください" in page
    assert url not in page
    # when: paused, and a delete is posted anyway (a page opened while it was a draft)
    client.post(reverse("scenarios:pause", args=[welcome.pk]), {"waiting": "keep"})
    response = client.post(url, {"sure": "1"}, follow=True)
    # then: refused, saying so on its page; its history is all still there
    html = response.content.decode()
    assert response.redirect_chain[-1][0] == reverse("scenarios:detail", args=[welcome.pk])
    assert "配信の記録があるため削除できません(お客様のエントリー)" in html
    assert "使わない場合は停止したままにしてください" in html
    assert Scenario.objects.filter(pk=welcome.pk).exists()
    assert (Enrollment.objects.count(), StepDispatch.objects.count()) == (1, 1)
    assert not AuditLog.objects.filter(action="scenario.delete").exists()


def test_a_draft_with_an_enrollment_is_not_deleted(client_for: Login) -> None:
    # given: a draft with an enrollment (written by a tool, never by the scheduler for a draft)
    draft = _draft()
    _enroll(draft)
    client = client_for(Role.MARKETER)
    page = client.get(reverse("scenarios:detail", args=[draft.pk])).content.decode()
    assert "配信の記録があるため削除できません(お客様のエントリー)" in page
    assert "使わない場合は下書きのままにしてください" in page
    response = client.post(reverse("scenarios:delete", args=[draft.pk]), {"sure": "1"})
    assert response.status_code == 302
    assert Scenario.objects.filter(pk=draft.pk).exists()
    assert Enrollment.objects.count() == 1


def test_a_scenario_started_and_stopped_before_anyone_entered_is_deleted(
    client_for: Login,
) -> None:
    # given: a scenario started once (the scheduler ran: a tick log) and stopped, nobody entered
    draft = _draft()
    client = client_for(Role.MARKETER)
    client.post(reverse("scenarios:activate", args=[draft.pk]))
    tick(jst(2026, 5, 2, 10))
    assert TickLog.objects.exists()
    url = reverse("scenarios:delete", args=[draft.pk])
    # then: while it runs, its page says the real reason — running, not a record of sends
    page = client.get(reverse("scenarios:detail", args=[draft.pk])).content.decode()
    assert "稼働中のため削除できません" in page
    assert "配信の記録" not in page
    assert client.post(url, {"sure": "1"}).status_code == 302
    assert Scenario.objects.filter(pk=draft.pk).exists()
    # when: stopped, it can be deleted: nothing was recorded for any customer
    client.post(reverse("scenarios:pause", args=[draft.pk]))
    page = client.get(reverse("scenarios:detail", args=[draft.pk])).content.decode()
    assert f'action="{url}"' in page
    deleted = client.post(url, {"sure": "1"}, follow=True)
    assert not Scenario.objects.filter(pk=draft.pk).exists()
    assert "シナリオ「間違えて作ったシナリオ」を削除しました" in deleted.content.decode()
    # its starts and stops stay in the audit log with the delete
    actions = set(AuditLog.objects.values_list("action", flat=True))
    assert {"scenario.activate", "scenario.pause", "scenario.delete"} <= actions


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.ANALYST])
def test_only_marketers_and_admins_delete(client_for: Login, role: Role) -> None:
    draft = _draft()
    unused = template("unused")
    offer = offer_save(
        offer=None, key="free", name="送料無料", kind="free_shipping", value=0, acting_user=STAFF
    )
    client = client_for(role)
    for url in (
        reverse("scenarios:delete", args=[draft.pk]),
        reverse("scenarios:template_delete", args=[unused.pk]),
        reverse("scenarios:offer_delete", args=[offer.pk]),
    ):
        assert client.post(url, {"sure": "1"}).status_code == 403, url
    assert Scenario.objects.filter(pk=draft.pk).exists()
    assert MessageTemplate.objects.filter(pk=unused.pk).exists()
    assert Offer.objects.filter(pk=offer.pk).exists()
    if role == Role.ANALYST:  # reads the scenario page, without the 削除 card
        page = client.get(reverse("scenarios:detail", args=[draft.pk])).content.decode()
        assert "削除してよい" not in page


def test_a_template_no_step_uses_is_deleted(client_for: Login) -> None:
    unused = template("unused")
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:template_delete", args=[unused.pk])
    page = client.get(reverse("scenarios:template_edit", args=[unused.pk])).content.decode()
    assert f'action="{url}"' in page
    assert "削除してよい" in page
    refused = client.post(url, follow=True)
    assert refused.redirect_chain[-1][0] == reverse("scenarios:template_edit", args=[unused.pk])
    assert "「削除してよい」にチェックを入れてから" in refused.content.decode()
    assert MessageTemplate.objects.filter(pk=unused.pk).exists()
    deleted = client.post(url, {"sure": "1"}, follow=True)
    assert not MessageTemplate.objects.filter(pk=unused.pk).exists()
    assert deleted.redirect_chain[-1][0] == reverse("scenarios:templates")
    assert "テンプレート「テンプレート unused」を削除しました" in deleted.content.decode()
    audit = AuditLog.objects.get(action="message_template.delete")
    assert audit.changes["key"] == ["unused", None]
    assert audit.changes["subject"] == ["{{ name }} 様へ", None]
    again = client.post(url, {"sure": "1"}, follow=True)
    assert again.status_code == 200
    assert "このテンプレートはすでに削除されています" in again.content.decode()


def test_a_template_a_step_uses_is_not_deleted(client_for: Login) -> None:
    # given: a draft scenario whose two steps use the template
    used_by = _draft(steps=[step("first"), step("second")])
    used = template()
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:template_delete", args=[used.pk])
    # then: its page names the scenario and the steps, links to the scenario, no delete button
    page = client.get(reverse("scenarios:template_edit", args=[used.pk])).content.decode()
    assert (
        f'href="{reverse("scenarios:edit", args=[used_by.pk])}">間違えて作ったシナリオ</a>' in page
    )
    assert "ステップ「first」・ステップ「second」" in page
    assert url not in page
    # when: a delete is posted anyway (a page opened before a step used it)
    response = client.post(url, {"sure": "1"}, follow=True)
    # then: refused naming the scenario and steps; nothing deleted or audited
    assert (
        "次のシナリオで使われているため削除できません: "
        "「間違えて作ったシナリオ」(ステップ「first」・ステップ「second」)"
    ) in response.content.decode()
    assert MessageTemplate.objects.filter(pk=used.pk).exists()
    assert not AuditLog.objects.filter(action="message_template.delete").exists()
    # when: the draft made by mistake is deleted, the template is free to go too
    client.post(reverse("scenarios:delete", args=[used_by.pk]), {"sure": "1"})
    client.post(url, {"sure": "1"})
    assert not MessageTemplate.objects.filter(pk=used.pk).exists()


def test_an_offer_is_deleted_only_when_no_step_uses_it(client_for: Login) -> None:
    def offer(key: str) -> Offer:
        return offer_save(
            offer=None,
            key=key,
            name=f"オファー {key}",
            kind="yen_off",
            value=500,
            acting_user=STAFF,
        )

    used, unused = offer("used"), offer("unused")
    used_by = _draft(steps=[step("coupon", offer="used")])
    client = client_for(Role.MARKETER)
    offers = reverse("scenarios:offers")
    # a used offer's page names the scenario and the step, without a delete button
    page = client.get(offers, {"edit": used.pk}).content.decode()
    assert (
        f'href="{reverse("scenarios:edit", args=[used_by.pk])}">間違えて作ったシナリオ</a>' in page
    )
    assert "ステップ「coupon」" in page
    assert reverse("scenarios:offer_delete", args=[used.pk]) not in page
    refused = client.post(
        reverse("scenarios:offer_delete", args=[used.pk]), {"sure": "1"}, follow=True
    )
    assert refused.redirect_chain[-1][0] == f"{offers}?edit={used.pk}"
    assert "オファー「オファー used」は次のシナリオで使われているため削除できません" in (
        refused.content.decode()
    )
    assert Offer.objects.filter(pk=used.pk).exists()
    # an unused one is deleted once confirmed, and audited
    url = reverse("scenarios:offer_delete", args=[unused.pk])
    page = client.get(offers, {"edit": unused.pk}).content.decode()
    assert f'action="{url}"' in page
    unticked = client.post(url, follow=True)
    assert "「削除してよい」にチェックを入れてから" in unticked.content.decode()
    assert Offer.objects.filter(pk=unused.pk).exists()
    deleted = client.post(url, {"sure": "1"}, follow=True)
    assert deleted.redirect_chain[-1][0] == offers
    assert "オファー「オファー unused」を削除しました" in deleted.content.decode()
    assert not Offer.objects.filter(pk=unused.pk).exists()
    audit = AuditLog.objects.get(action="offer.delete")
    assert (audit.changes["key"], audit.changes["value"]) == (["unused", None], [500, None])
    again = client.post(url, {"sure": "1"}, follow=True)
    assert again.status_code == 200
    assert "このオファーはすでに削除されています" in again.content.decode()


def test_the_customer_page_shows_the_scenarios_and_what_became_of_each_step(
    client_for: Login,
) -> None:
    # given: a customer with no e-mail consent enrolled by a first purchase, whose first step
    # was queued and then skipped by the delivery worker
    from kizuna.campaigns.delivery import DeliveryWorker

    s = scenario(
        "thanks",
        trigger={"kind": "first_purchase"},
        steps=[step("now"), step("later", anchor="purchase", offset_days=30, send_time="10:00")],
        activated_at=jst(2026, 5, 1),
    )
    customer = make_customer(family_name="未同意")
    add_identity(customer, IdentityKind.EMAIL, "no-consent@example.jp")
    make_order(customer, ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    DeliveryWorker().drain()
    # when: an operator opens the customer on a call
    html = client_for(Role.OPERATOR).get(f"/customers/{customer.pk}/").content.decode()
    # then: the scenario, its state, and why the mail did not go out
    card = html[html.index('id="scenarios"') :]
    assert s.name in card
    assert "進行中" in card
    # each step said as when it runs, not by its key
    assert "きっかけの直後</span>: 送信見送り(メール): 配信同意がありません" in card
    # operators cannot open scenario pages: the name is not a link for them
    assert f'href="/scenarios/{s.pk}/"' not in card
    marketer = client_for(Role.MARKETER).get(f"/customers/{customer.pk}/").content.decode()
    assert f'href="/scenarios/{s.pk}/"' in marketer


def test_a_held_out_customer_is_marked_on_the_customer_page(client_for: Login) -> None:
    scenario(
        "all-held",
        trigger={"kind": "first_purchase"},
        steps=[step("now")],
        activated_at=jst(2026, 5, 1),
        holdout_percent=90,
    )
    for _ in range(10):
        make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    # the holdout is drawn by a hash of the customer: take one it held out
    customer = Enrollment.objects.filter(holdout=True).first().customer  # type: ignore[union-attr]
    html = client_for(Role.OPERATOR).get(f"/customers/{customer.pk}/").content.decode()
    card = html[html.index('id="scenarios"') :]
    assert "ホールドアウト(送らないグループ)" in card
    assert "ホールドアウト(送信しない)" in card  # the step's own outcome


def test_a_new_scenario_chooses_no_template_for_its_first_step(client_for: Login) -> None:
    # given: the first template by name needs an offer (a coupon mail), as the demo's does
    template("a-coupon", text="{{ name }} 様\nクーポン {{ offer.code }}")
    template("b-thanks")
    # when: a marketer opens a new scenario
    response = client_for(Role.MARKETER).get(reverse("scenarios:create"))
    # then: nothing is chosen for them; saving as shown asks to choose, it does not
    # fail on an offer the marketer never picked
    (step_form,) = response.context["steps"]
    chosen = [option.value for option in step_form["templates"] if option.selected]
    assert chosen == [""]


def test_a_segment_scenario_whose_baseline_was_taken_is_deleted_once_stopped(
    client_for: Login,
) -> None:
    # given: a 「セグメントに入った」 scenario started once: its first check recorded who was
    # already inside (a baseline, nobody entered) — the trigger's memory, not a send
    segment("buyers", one("order_count", "gte", 1))
    make_order(make_customer(), ordered_at=jst(2026, 5, 1, 9))
    draft = _draft(trigger={"kind": "segment_entered", "segment": "buyers"})
    client = client_for(Role.MARKETER)
    client.post(reverse("scenarios:activate", args=[draft.pk]))
    tick(jst(2026, 5, 2, 10))
    assert SegmentMember.objects.filter(scenario=draft, baseline=True).count() == 1
    assert not Enrollment.objects.exists()
    client.post(reverse("scenarios:pause", args=[draft.pk]))
    # when: deleted
    client.post(reverse("scenarios:delete", args=[draft.pk]), {"sure": "1"})
    # then: gone, with its baseline
    assert not Scenario.objects.filter(pk=draft.pk).exists()
    assert not SegmentMember.objects.exists()


def test_an_executed_steps_name_is_fixed_and_changing_it_is_called_a_rename(
    client_for: Login, welcome: Scenario
) -> None:
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    tick(jst(2026, 5, 2, 10))
    form = client_for(Role.MARKETER).get(reverse("scenarios:edit", args=[welcome.pk]))
    key_input = re.search(r'<input name="step-0-key"[^>]*>', form.content.decode())
    assert key_input is not None
    assert 'value="s1"' in key_input[0]
    assert "readonly" in key_input[0]
    # a form posted with the name changed anyway is told it was a rename, not a deletion
    spec = spec_of(welcome)
    spec["steps"][0]["key"] = "s1-new"
    with pytest.raises(ScenarioError) as refused:
        scenario_save(scenario=welcome, spec=spec, acting_user=STAFF)
    assert refused.value.messages == ["実行済みのステップの識別名は変えられません(「s1」)"]


def test_saving_a_template_with_queued_mail_warns_and_can_cancel_it(
    client_for: Login, welcome: Scenario
) -> None:
    queued = _queued_welcome(welcome, 3)
    # one waiting message comes from another step (another template): not this template's
    other = queued.first()
    assert other is not None
    queued.filter(pk=other.pk).update(step_key="another-step")
    client = client_for(Role.MARKETER)
    thanks = template()
    url = reverse("scenarios:template_edit", args=[thanks.pk])
    fields = {"key": thanks.key, "name": "お礼", "subject": "{{ name }} 様", "html": ""}
    opened = _opened(client.get(url).content.decode())
    saved = client.post(url, {**fields, "text": "新しい本文", "opened": opened}, follow=True)
    html = saved.content.decode()
    assert "テンプレート「お礼」を保存しました" in html
    assert "送信待ちの2件は保存前の内容のまま送信されます" in html
    link = re.search(r'href="([^"]*cancel-waiting[^"]*)"', html)
    assert link is not None
    confirm = client.get(link[1].replace("&amp;", "&")).content.decode()
    assert "保存前の内容の送信待ちメッセージが 2 件あります" in confirm
    up_to = re.search(r'name="up_to_id" value="(\d+)"', confirm)
    assert up_to is not None
    cancel_url = reverse("scenarios:template_cancel_waiting", args=[thanks.pk])
    done = client.post(cancel_url, {"up_to_id": up_to[1]}, follow=True).content.decode()
    assert "送信待ちの2件を取り消しました" in done
    assert list(queued.filter(status=OutboxStatus.PENDING)) == [other]
    reasons = set(queued.filter(status=OutboxStatus.SKIPPED).values_list("reason", flat=True))
    assert len(reasons) == 1
    assert reasons.pop().startswith("テンプレート「お礼」の変更により送信を取り消し(")
    assert AuditLog.objects.get(action="outbox.cancel").changes["count"] == [0, 2]
    # saved again: nothing of this template is waiting any more, so no warning
    opened = _opened(done)
    again = client.post(url, {**fields, "text": "三つ目", "opened": opened}, follow=True)
    assert "保存前の内容のまま送信されます" not in again.content.decode()


def test_changing_a_step_with_queued_mail_says_those_keep_the_old_step(client_for: Login) -> None:
    # given: a scenario with two messages of its step waiting in the queue
    client = client_for(Role.MARKETER)
    client.post(reverse("scenarios:create"), scenario_form())
    saved = Scenario.objects.get(key="trial-follow")
    for n in range(2):
        outbox_enqueue(
            customer=make_customer(),
            channel="email",
            purpose=Purpose.MARKETING,
            dedupe_key=f"waiting-{n}",
            content={"subject": "件名", "text": "本文"},
            send_after=jst(2026, 5, 3, 10),
            scenario_id=saved.pk,
            step_key="arrived",
        )
    url = reverse("scenarios:edit", args=[saved.pk])
    # when: only the name changes, nothing is said about them
    renamed = client.post(
        url, scenario_form(name="フォロー", opened=_opened(client.get(url).content.decode())),
        follow=True,
    )  # fmt: skip
    assert "送信待ち" not in renamed.content.decode()
    # when: the step's send time changes
    retimed = client.post(
        url,
        scenario_form(
            name="フォロー", opened=_opened(client.get(url).content.decode()),
            **{"step-0-send_time": "12:00"},
        ),
        follow=True,
    )  # fmt: skip
    # then: the page says the two waiting keep the step as it was, and how to stop them
    html = retimed.content.decode()
    assert "変更したステップ(arrived)の送信待ち2件は、変更前のタイミングと内容のまま" in html
    assert "送らない場合は、「停止する」で送信待ちの取り消しを選んでください" in html
