"""The segment pages: who may open them, the htmx rule builder, the live count and sample,
saving with Japanese errors that keep the input, the audited CSV export, and deleting a
segment no scenario uses."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from openpyxl import load_workbook

from kizuna.accounts.models import Role
from kizuna.campaigns.automation import segments as rules_engine
from kizuna.campaigns.automation.models import Scenario, Segment
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.services import scenario_save
from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer, Identity, IdentityKind
from tests.factories import make_customer
from tests.test_scenarios_kit import STAFF, one, scenario, segment, step

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
Login = Callable[[Role], Client]


def form(**fields: Any) -> dict[str, Any]:
    """The builder's fields for a root AND group with one prefecture condition."""
    data: dict[str, Any] = {
        "node": ["0", "0.0"],
        "kind-0": "group",
        "op-0": "and",
        "kind-0.0": "condition",
        "field-0.0": "prefecture",
        "operator-0.0": "in",
        "value-0.0": ["13"],
    }
    data.update(fields)
    return data


@pytest.fixture
def tokyo() -> Segment:
    return segment("tokyo", one("prefecture", "in", ["13"]))


@pytest.mark.parametrize("role", list(Role))
def test_only_marketers_and_admins_open_segments(
    client_for: Login, tokyo: Segment, role: Role
) -> None:
    client = client_for(role)
    allowed = role in (Role.ADMIN, Role.MARKETER)
    for url in (
        reverse("segments:list"),
        reverse("segments:create"),
        reverse("segments:edit", args=[tokyo.pk]),
        reverse("segments:count", args=[tokyo.pk]),
    ):
        assert client.get(url).status_code == (200 if allowed else 403), url
    response = client.post(reverse("segments:preview"), form(), headers=HTMX)
    assert response.status_code == (200 if allowed else 403)


def test_the_list_shows_each_segment_and_loads_its_count(client_for: Login, tokyo: Segment) -> None:
    make_customer(prefecture=13)
    make_customer(prefecture=27)
    client = client_for(Role.MARKETER)
    html = client.get(reverse("segments:list")).content.decode()
    assert "セグメント tokyo" in html
    assert "都道府県が東京都のいずれか" in html
    assert client.get(reverse("segments:count", args=[tokyo.pk])).content.decode() == "1人"


def test_an_empty_list_says_how_to_start(client_for: Login) -> None:
    html = client_for(Role.MARKETER).get(reverse("segments:list")).content.decode()
    assert "セグメントはまだありません" in html


def test_the_builder_adds_and_removes_conditions_and_groups(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    url = reverse("segments:builder")
    added = client.post(url, form(action="add-condition:0"), headers=HTMX).content.decode()
    assert 'name="field-0.1"' in added
    assert 'value="13" checked' in added  # what was chosen before stays chosen
    grouped = client.post(url, form(action="add-group:0"), headers=HTMX).content.decode()
    assert 'name="op-0.1"' in grouped
    assert 'name="field-0.1.0"' in grouped
    removed = client.post(url, form(action="remove:0.0"), headers=HTMX).content.decode()
    assert 'name="field-0.0"' not in removed


def test_choosing_a_field_offers_its_operators_and_value_inputs(client_for: Login) -> None:
    data = form(**{"field-0.0": "last_order", "operator-0.0": ""})
    html = (
        client_for(Role.MARKETER)
        .post(reverse("segments:builder"), data, headers=HTMX)
        .content.decode()
    )
    assert "過去n日以内" in html
    assert 'name="value-0.0"' in html


def test_the_builder_works_without_javascript(client_for: Login) -> None:
    response = client_for(Role.MARKETER).post(
        reverse("segments:builder"), form(action="add-condition:0", name="下書き")
    )
    html = response.content.decode()
    assert "<html" in html
    assert 'value="下書き"' in html
    assert 'name="field-0.1"' in html


def test_the_preview_counts_and_links_a_sample(client_for: Login) -> None:
    inside = make_customer(prefecture=13, family_name="東京")
    make_customer(prefecture=27)
    response = client_for(Role.MARKETER).post(reverse("segments:preview"), form(), headers=HTMX)
    html = response.content.decode()
    assert '<span class="segment-count-value">1</span> 人' in html
    assert reverse("web:customer_detail", args=[inside.pk]) in html


def test_a_new_form_shows_the_hint_not_an_error(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    page = client.get(reverse("segments:create")).content.decode()
    assert "条件を選ぶと、該当する人数とお客様の例がここに表示されます" in page
    assert "条件を確認してください" not in page
    # adding a second empty condition before choosing anything still is not an error
    empty = {"node": ["0", "0.0", "0.1"], "kind-0": "group", "op-0": "and",
             "kind-0.0": "condition", "kind-0.1": "condition"}  # fmt: skip
    preview = client.post(reverse("segments:preview"), empty, headers=HTMX).content.decode()
    assert "条件を確認してください" not in preview


def test_the_preview_explains_an_unfinished_condition(client_for: Login) -> None:
    data = form(**{"field-0.0": "age", "operator-0.0": "gte", "value-0.0": "三十"})
    html = (
        client_for(Role.MARKETER)
        .post(reverse("segments:preview"), data, headers=HTMX)
        .content.decode()
    )
    assert "年齢" in html
    assert "0以上の整数を入力してください" in html


def test_a_negative_number_gets_the_validators_message(client_for: Login) -> None:
    data = form(
        **{
            "field-0.0": "age",
            "operator-0.0": "between",
            "value-0.0-low": "-5",
            "value-0.0-high": "30",
        }
    )
    response = client_for(Role.MARKETER).post(
        reverse("segments:create"), {**data, "key": "young", "name": "若い方"}
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert "範囲は0以上の整数で入力してください" in html
    assert 'value="-5"' in html


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"field-0.0": "registered", "operator-0.0": "between_dates",
             "value-0.0-from": "2026-01-01", "value-0.0-to": "2025-01-01"},
            "条件 &gt; 1(登録日): 開始日が終了日より後です",
        ),
        (
            {"field-0.0": "next_delivery", "operator-0.0": "between_dates",
             "value-0.0-from": "0001-01-01", "value-0.0-to": "2026-01-01"},
            "条件 &gt; 1(次回お届け予定日): 日付は 1900-01-01〜2999-12-31 の間で入力してください",
        ),
        (
            {"field-0.0": "last_order", "operator-0.0": "between_dates",
             "value-0.0-from": "2026-01-01", "value-0.0-to": "9999-12-31"},
            "条件 &gt; 1(最終購入日): 日付は 1900-01-01〜2999-12-31 の間で入力してください",
        ),
        (
            {"field-0.0": "age", "operator-0.0": "between",
             "value-0.0-low": "60", "value-0.0-high": "20"},
            "条件 &gt; 1(年齢): 下限が上限より大きくなっています",
        ),
        (
            {"field-0.0": "p_alive", "operator-0.0": "gte", "value-0.0": "150"},
            "条件 &gt; 1(生存確率 P(alive)): 0〜100%の整数で入力してください",
        ),
    ],
)  # fmt: skip
def test_the_builder_says_what_is_wrong_with_a_range(
    client_for: Login, fields: dict[str, str], message: str
) -> None:
    client = client_for(Role.MARKETER)
    data = form(**fields)
    preview = client.post(reverse("segments:preview"), data, headers=HTMX).content.decode()
    assert message in preview
    assert "YYYY-MM-DD" not in preview
    response = client.post(reverse("segments:create"), {**data, "key": "k", "name": "n"})
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not Segment.objects.exists()


def test_full_width_digits_are_read_as_numbers(client_for: Login) -> None:
    make_customer(prefecture=13)
    data = {
        **form(),
        "node": ["0", "0.0"],
        "field-0.0": "registered",
        "operator-0.0": "within_days",
    }
    data["value-0.0"] = "３６５"
    html = (
        client_for(Role.MARKETER)
        .post(reverse("segments:preview"), data, headers=HTMX)
        .content.decode()
    )
    assert '<span class="segment-count-value">1</span>' in html


def test_saving_refuses_bad_input_and_keeps_it(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    response = client.post(reverse("segments:create"), form(key="Tokyo Women", name=""))
    html = response.content.decode()
    assert response.status_code == 400
    assert "名前を入力してください" in html
    assert "識別名" in html
    assert 'value="Tokyo Women"' in html
    assert 'value="13" checked' in html
    assert not Segment.objects.exists()


def test_saving_creates_the_segment_and_records_who(client_for: Login, users: Any) -> None:
    response = client_for(Role.MARKETER).post(
        reverse("segments:create"), form(key="tokyo-women", name="東京都の女性")
    )
    saved = Segment.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("segments:edit", args=[saved.pk])
    assert saved.rules == {
        "op": "and",
        "rules": [{"field": "prefecture", "operator": "in", "value": ["13"]}],
    }
    audit = AuditLog.objects.get(action="segment.create")
    assert audit.actor_label == "marketer-user"


def test_the_csv_export_streams_members_and_is_audited(client_for: Login, tokyo: Segment) -> None:
    member = make_customer(prefecture=13, family_name="髙橋", given_name="花子")
    Identity.objects.create(
        customer=member,
        kind=IdentityKind.EMAIL,
        value="hanako@example.jp",
        display_value="hanako@example.jp",
    )
    make_customer(prefecture=27)
    client = client_for(Role.MARKETER)
    assert client.get(reverse("segments:export", args=[tokyo.pk])).status_code == 405
    response = client.post(reverse("segments:export", args=[tokyo.pk]))
    body = b"".join(response.streaming_content).decode("utf-8")  # type: ignore[attr-defined]
    lines = body.lstrip("\ufeff").splitlines()
    assert body.startswith("\ufeff")
    assert lines[0].startswith("顧客ID,姓,名")
    assert len(lines) == 2
    assert f"{member.pk},髙橋,花子" in lines[1]
    assert "hanako@example.jp" in lines[1]
    assert "東京都" in lines[1]
    audit = AuditLog.objects.get(action="segment.export")
    assert audit.entity_id == str(tokyo.pk)
    assert audit.changes["rows"] == [None, 1]
    assert Customer.objects.count() == 2


def test_the_export_gives_the_address_messages_go_to(client_for: Login, tokyo: Segment) -> None:
    # given a customer who gave the shop a new address after the first one
    member = make_customer(prefecture=13)
    for address in ("old@example.jp", "new@example.jp"):
        Identity.objects.create(
            customer=member, kind=IdentityKind.EMAIL, value=address, display_value=address
        )
    # when the segment is exported for a mailing
    response = client_for(Role.MARKETER).post(reverse("segments:export", args=[tokyo.pk]))
    body = b"".join(response.streaming_content).decode("utf-8")  # type: ignore[attr-defined]
    # then the row carries the address Kizuna itself sends to, not the one given first
    (row,) = body.lstrip("\ufeff").splitlines()[1:]
    assert "new@example.jp" in row
    assert "old@example.jp" not in row


def test_the_csv_export_never_hands_excel_a_formula(client_for: Login, tokyo: Segment) -> None:
    # given: a customer who signed up with a name Excel would run as a formula
    attacker = make_customer(prefecture=13, family_name='=HYPERLINK("http://x.example","a")')
    attacker.given_name = "@SUM(1)"
    attacker.save()
    # when
    response = client_for(Role.MARKETER).post(reverse("segments:export", args=[tokyo.pk]))
    body = b"".join(response.streaming_content).decode("utf-8")  # type: ignore[attr-defined]
    # then: both cells start with an apostrophe, so Excel shows them as text
    [row] = list(csv.reader(io.StringIO(body.lstrip("\ufeff"))))[1:]
    assert row[1] == '\'=HYPERLINK("http://x.example","a")'
    assert row[2] == "'@SUM(1)"


def test_the_excel_export_keeps_leading_zeros_as_text(client_for: Login, tokyo: Segment) -> None:
    # given: a member whose phone number and postal code start with 0
    member = make_customer(prefecture=13, family_name="佐藤", postal_code="0600001")
    Identity.objects.create(
        customer=member, kind=IdentityKind.PHONE, value="+819012345678",
        display_value="090-1234-5678",
    )  # fmt: skip
    # when: exported for Excel
    response = client_for(Role.MARKETER).post(
        reverse("segments:export", args=[tokyo.pk]), {"format": "xlsx"}
    )
    # then: an Excel file whose cells are text, zeros kept; the export is audited as Excel
    assert response["Content-Disposition"].endswith('.xlsx"')
    sheet = load_workbook(io.BytesIO(response.content)).active
    assert sheet is not None
    header, row = list(sheet.iter_rows(values_only=True))
    by_name = dict(zip(header, row, strict=True))
    assert by_name["電話番号"] == "090-1234-5678"
    assert by_name["郵便番号"] == "060-0001"  # written as on the postal DM list
    assert by_name["姓"] == "佐藤"
    audit = AuditLog.objects.get(action="segment.export")
    assert audit.changes["format"] == [None, "xlsx"]


def test_a_segment_larger_than_an_excel_sheet_is_refused_for_excel(
    client_for: Login, tokyo: Segment, monkeypatch: pytest.MonkeyPatch
) -> None:
    # given: a sheet that holds one row (Excel's own limit is a million)
    monkeypatch.setattr(rules_engine, "XLSX_MAX_ROWS", 1)
    make_customer(prefecture=13)
    make_customer(prefecture=13)
    # when
    response = client_for(Role.MARKETER).post(
        reverse("segments:export", args=[tokyo.pk]), {"format": "xlsx"}, follow=True
    )
    # then: told to use CSV, nothing exported, nothing audited
    assert "CSVで書き出してください" in response.content.decode()
    assert not AuditLog.objects.filter(action="segment.export").exists()


def test_a_segment_is_deleted_only_once_confirmed(client_for: Login, tokyo: Segment) -> None:
    client = client_for(Role.MARKETER)
    url = reverse("segments:delete", args=[tokyo.pk])
    page = client.get(reverse("segments:edit", args=[tokyo.pk])).content.decode()
    assert f'action="{url}"' in page
    assert "削除してよい" in page
    assert client.get(url).status_code == 405
    # when: the button is pressed without ticking 「削除してよい」
    refused = client.post(url, follow=True)
    # then: nothing is deleted, and the segment's page says what to do
    assert Segment.objects.filter(pk=tokyo.pk).exists()
    assert refused.redirect_chain[-1][0] == reverse("segments:edit", args=[tokyo.pk])
    assert "「削除してよい」にチェックを入れてから" in refused.content.decode()
    # when: ticked
    deleted = client.post(url, {"sure": "1"}, follow=True)
    # then: gone from the list, said so, and audited
    assert not Segment.objects.filter(pk=tokyo.pk).exists()
    assert deleted.redirect_chain[-1][0] == reverse("segments:list")
    assert "セグメント「セグメント tokyo」を削除しました" in deleted.content.decode()
    audit = AuditLog.objects.get(action="segment.delete")
    assert (audit.entity_id, audit.actor_label) == (str(tokyo.pk), "marketer-user")
    assert audit.changes["key"] == ["tokyo", None]
    assert audit.changes["rules"] == ["都道府県が東京都のいずれか", None]
    # when: the same form is sent again from a second tab
    again = client.post(url, {"sure": "1"}, follow=True)
    # then: a plain answer, not an error page
    assert again.status_code == 200
    assert "このセグメントはすでに削除されています" in again.content.decode()


@pytest.mark.parametrize(
    ("use", "place"),
    [
        ("audience", "対象セグメント"),
        ("condition", "ステップ「s1」の送信条件"),
        ("trigger", "きっかけ「セグメントに入った」"),
    ],
)
def test_a_segment_a_scenario_uses_is_not_deleted(
    client_for: Login, tokyo: Segment, use: str, place: str
) -> None:
    # given: a draft scenario that reads the segment in one place
    spec: dict[str, Any] = {
        "key": "welcome",
        "name": "ようこそシナリオ",
        "trigger": {"kind": "first_purchase"},
        "steps": [step()],
    }
    if use == "audience":
        spec["audience"] = tokyo.key
    elif use == "condition":
        spec["steps"] = [step(condition=tokyo.key)]
    else:
        spec["trigger"] = {"kind": "segment_entered", "segment": tokyo.key}
    used_by = scenario_save(scenario=None, spec=spec, acting_user=STAFF)
    client = client_for(Role.MARKETER)
    # then: the segment's page names the scenario, links to it, and offers no delete button
    page = client.get(reverse("segments:edit", args=[tokyo.pk])).content.decode()
    assert f'href="{reverse("scenarios:edit", args=[used_by.pk])}">ようこそシナリオ</a>' in page
    assert place in page
    assert "先にシナリオの設定からこのセグメントを外してください" in page
    assert reverse("segments:delete", args=[tokyo.pk]) not in page
    # when: a delete is posted anyway (a page opened before the scenario used it)
    response = client.post(reverse("segments:delete", args=[tokyo.pk]), {"sure": "1"}, follow=True)
    # then: refused, naming the scenario; nothing is deleted and nothing audited
    html = response.content.decode()
    assert response.status_code == 200
    assert "次のシナリオで使われているため削除できません: 「ようこそシナリオ」" in html
    assert Segment.objects.filter(pk=tokyo.pk).exists()
    assert Scenario.objects.filter(pk=used_by.pk).exists()
    assert not AuditLog.objects.filter(action="segment.delete").exists()


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.ANALYST])
def test_only_marketers_and_admins_delete_segments(
    client_for: Login, tokyo: Segment, role: Role
) -> None:
    response = client_for(role).post(reverse("segments:delete", args=[tokyo.pk]), {"sure": "1"})
    assert response.status_code == 403
    assert Segment.objects.filter(pk=tokyo.pk).exists()


def test_widening_a_segment_a_running_scenario_enters_on_asks_first(client_for: Login) -> None:
    # given: a running 「セグメントに入った」 scenario on 東京都, evaluated once (its member
    # recorded), and two customers in 大阪府
    tokyo = segment("tokyo", one("prefecture", "in", ["13"]))
    make_customer(prefecture=13)
    osaka = [make_customer(prefecture=27), make_customer(prefecture=27)]
    running = scenario(
        "on-tokyo",
        trigger={"kind": "segment_entered", "segment": "tokyo"},
        activated_at=timezone.now() - dt.timedelta(minutes=5),
    )
    tick(timezone.now())
    client = client_for(Role.MARKETER)
    url = reverse("segments:edit", args=[tokyo.pk])
    widened = form(key="tokyo", name="東京と大阪", **{"value-0.0": ["13", "27"]})
    # when: the rules are widened to 大阪府 too
    asked = client.post(url, widened)
    # then: nothing saved yet; the page names the scenario and how many would enter at once
    html = asked.content.decode()
    assert asked.status_code == 200
    assert f'シナリオ「<a href="{reverse("scenarios:detail", args=[running.pk])}">' in html
    assert f"最大 {len(osaka)} 人" in html
    tokyo.refresh_from_db()
    assert tokyo.rules == one("prefecture", "in", ["13"])
    # when: saved from the confirmation (it carries the form as posted)
    posted = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))
    assert posted["confirmed"] == "1"
    saved = client.post(url, {**widened, "confirmed": "1"})
    # then
    assert saved.status_code == 302
    tokyo.refresh_from_db()
    assert tokyo.name == "東京と大阪"
    assert tokyo.rules["rules"][0]["value"] == ["13", "27"]


def test_a_change_nobody_enters_by_saves_at_once(client_for: Login) -> None:
    tokyo = segment("tokyo", one("prefecture", "in", ["13"]))
    make_customer(prefecture=13)
    scenario(
        "on-tokyo",
        trigger={"kind": "segment_entered", "segment": "tokyo"},
        activated_at=timezone.now() - dt.timedelta(minutes=5),
    )
    tick(timezone.now())
    response = client_for(Role.MARKETER).post(
        reverse("segments:edit", args=[tokyo.pk]), form(key="tokyo", name="東京都の方")
    )
    assert response.status_code == 302
    tokyo.refresh_from_db()
    assert tokyo.name == "東京都の方"
