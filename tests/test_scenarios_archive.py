"""Archiving a scenario that ran: only a paused one, never run, hidden from the list (on its
own tab) and from the scenarios offered to act on, its history and lift kept, restorable to
停止中 (never straight to running)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import yaml
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Enrollment, Scenario, ScenarioStatus
from kizuna.campaigns.automation.scheduler import tick
from kizuna.campaigns.automation.selectors import scenario_choices
from kizuna.campaigns.automation.services import (
    ScenarioError,
    scenario_activate,
    scenario_archive,
    scenario_pause,
    scenario_save,
    scenario_unarchive,
)
from kizuna.campaigns.automation.yaml_io import ScenarioFileError, export_yaml, load_yaml
from kizuna.campaigns.models import OutboxMessage
from kizuna.core.models import AuditLog
from tests.factories import make_customer, make_order
from tests.test_scenarios_kit import STAFF, jst, scenario, step

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]
EDITORS = (Role.ADMIN, Role.MARKETER)


def _paused(key: str = "summer-2025") -> Scenario:
    ran = scenario(key, trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    return scenario_pause(scenario=ran, acting_user=STAFF)


def _archived(key: str = "summer-2025") -> Scenario:
    return scenario_archive(scenario=_paused(key), acting_user=STAFF)


# --- services ---------------------------------------------------------------------------------


def test_a_paused_scenario_is_archived_and_restored_to_paused_with_audit_rows() -> None:
    s = _paused()
    archived = scenario_archive(scenario=s, acting_user=STAFF)
    assert archived.status == ScenarioStatus.ARCHIVED
    assert Scenario.objects.get(pk=s.pk).get_status_display() == "アーカイブ"
    restored = scenario_unarchive(scenario=archived, acting_user=STAFF)
    assert Scenario.objects.get(pk=s.pk).status == restored.status == ScenarioStatus.PAUSED
    actions = list(
        AuditLog.objects.filter(action__in=["scenario.archive", "scenario.unarchive"])
        .order_by("pk")
        .values_list("action", "changes")
    )
    assert actions == [
        ("scenario.archive", {"status": ["paused", "archived"]}),
        ("scenario.unarchive", {"status": ["archived", "paused"]}),
    ]


def test_only_a_paused_scenario_is_archived() -> None:
    running = scenario("running", trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    with pytest.raises(ScenarioError, match=r"停止中のシナリオだけ.*先に停止してください"):
        scenario_archive(scenario=running, acting_user=STAFF)
    draft = scenario_save(
        scenario=None,
        spec={"key": "draft", "name": "下書き", "trigger": {"kind": "signup"}, "steps": [step()]},
        acting_user=STAFF,
    )
    with pytest.raises(ScenarioError, match="下書きは削除できます"):
        scenario_archive(scenario=draft, acting_user=STAFF)
    statuses = dict(Scenario.objects.values_list("key", "status"))
    assert statuses == {"running": ScenarioStatus.ACTIVE, "draft": ScenarioStatus.DRAFT}


def test_an_archived_scenario_is_never_activated() -> None:
    s = _archived()
    with pytest.raises(ScenarioError, match="アーカイブしたシナリオは稼働できません"):
        scenario_activate(scenario=s, acting_user=STAFF)
    assert Scenario.objects.get(pk=s.pk).status == ScenarioStatus.ARCHIVED


def test_the_scheduler_never_runs_an_archived_scenario() -> None:
    s = _archived()
    make_order(make_customer(), ordered_at=jst(2026, 5, 2, 9))
    report = tick(jst(2026, 5, 2, 10))
    assert report.scenarios == []
    assert not Enrollment.objects.filter(scenario=s).exists()
    assert not OutboxMessage.objects.exists()


def test_an_archived_scenarios_name_and_key_stay_taken() -> None:
    _archived()
    with pytest.raises(ScenarioError) as refused:
        scenario_save(
            scenario=None,
            spec={
                "key": "summer-2025",
                "name": "シナリオ summer-2025",
                "trigger": {"kind": "signup"},
                "steps": [step()],
            },
            acting_user=STAFF,
        )
    text = str(refused.value)
    assert "summer-2025" in text
    assert "シナリオ summer-2025" in text


def test_the_outbox_filter_still_lists_an_archived_scenario_marked_as_such() -> None:
    s = _archived()
    assert (s.pk, "シナリオ summer-2025(summer-2025)(アーカイブ)") in scenario_choices()


def test_an_archived_scenario_round_trips_through_the_file_as_archived() -> None:
    s = _archived()
    text = export_yaml()
    assert yaml.safe_load(text)["scenarios"][0]["status"] == "archived"
    assert load_yaml(text, acting_user=STAFF).unchanged["scenarios"] == 1
    assert export_yaml() == text
    # into an empty database: created as archived, and exported the same
    Scenario.objects.filter(pk=s.pk).delete()
    load_yaml(text, acting_user=STAFF)
    assert Scenario.objects.get(key="summer-2025").status == ScenarioStatus.ARCHIVED
    assert export_yaml() == text


def _status_in_file(text: str, key: str, status: str) -> str:
    document = yaml.safe_load(text)
    for entry in document["scenarios"]:
        if entry["key"] == key:
            entry["status"] = status
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def test_a_file_that_archives_a_running_scenario_is_refused_and_nothing_of_it_is_applied() -> None:
    # given: a running scenario, and a file that archives it and renames another one
    s = scenario("summer-2025", trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    other = _paused("winter-2025")
    document = yaml.safe_load(_status_in_file(export_yaml(), "summer-2025", "archived"))
    document["scenarios"][1]["name"] = "冬のキャンペーン"
    audits = AuditLog.objects.count()
    # when / then: refused, naming the scenario and what to do
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    assert refused.value.messages == [
        "scenarios[1](key: summer-2025): シナリオ「シナリオ summer-2025」: アーカイブできるのは"
        "停止中のシナリオだけです(このシナリオは稼働中です)。先に停止してください。"
    ]
    # and nothing of the file is applied
    s.refresh_from_db()
    other.refresh_from_db()
    assert (s.status, other.name) == (ScenarioStatus.ACTIVE, "シナリオ winter-2025")
    assert AuditLog.objects.count() == audits


def test_a_file_moves_a_status_as_the_buttons_do_with_their_audit_rows() -> None:
    # given: a paused scenario
    s = _paused()
    text = export_yaml()
    # when: a file archives it, then one restores it
    load_yaml(_status_in_file(text, "summer-2025", "archived"), acting_user=STAFF)
    s.refresh_from_db()
    assert s.status == ScenarioStatus.ARCHIVED
    load_yaml(text, acting_user=STAFF)
    s.refresh_from_db()
    assert s.status == ScenarioStatus.PAUSED
    # then: each move left the row its button leaves
    rows = AuditLog.objects.filter(action__in=["scenario.archive", "scenario.unarchive"])
    assert [(r.action, r.changes) for r in rows.order_by("pk")] == [
        ("scenario.archive", {"status": ["paused", "archived"]}),
        ("scenario.unarchive", {"status": ["archived", "paused"]}),
    ]


@pytest.mark.parametrize(
    ("before", "status", "message"),
    [
        ("draft", "archived", "アーカイブできるのは停止中のシナリオだけです(このシナリオは下書きです)。使わない下書きは削除できます。"),
        ("archived", "active", "アーカイブしたシナリオは稼働できません。元に戻して(停止中にして)から稼働させてください"),
        ("draft", "paused", "下書きのシナリオは停止中にできません(停止中は稼働したシナリオの状態です)。稼働させるか、下書きのままにしてください"),
        ("paused", "draft", "停止中のシナリオは下書きに戻せません。使わない場合は停止中にしてください"),
    ],
    ids=["draft-archived", "archived-active", "draft-paused", "paused-draft"],
)  # fmt: skip
def test_a_file_cannot_make_a_move_the_buttons_refuse(
    before: str, status: str, message: str
) -> None:
    s = _archived() if before == "archived" else _paused()
    if before == "draft":
        Scenario.objects.filter(pk=s.pk).update(status=ScenarioStatus.DRAFT)
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(_status_in_file(export_yaml(), "summer-2025", status), acting_user=STAFF)
    assert refused.value.messages == [
        f"scenarios[1](key: summer-2025): シナリオ「シナリオ summer-2025」: {message}"
    ]
    s.refresh_from_db()
    assert s.status == before


def test_an_archived_scenario_is_not_changed_by_a_file() -> None:
    s = _archived()
    document = yaml.safe_load(export_yaml())
    document["scenarios"][0]["name"] = "夏のキャンペーン"
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    assert (
        "シナリオ「夏のキャンペーン」はアーカイブしているため変更できません"
        in refused.value.messages[0]
    )
    s.refresh_from_db()
    assert s.name == "シナリオ summer-2025"


# --- web --------------------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
def test_only_marketers_and_admins_archive_and_restore(client_for: Login, role: Role) -> None:
    s = _paused()
    client = client_for(role)
    archived = client.post(reverse("scenarios:archive", args=[s.pk]), {"sure": "1"})
    assert archived.status_code == (302 if role in EDITORS else 403)
    s.refresh_from_db()
    assert s.status == (ScenarioStatus.ARCHIVED if role in EDITORS else ScenarioStatus.PAUSED)
    if role not in EDITORS:
        scenario_archive(scenario=s, acting_user=STAFF)
    restored = client.post(reverse("scenarios:unarchive", args=[s.pk]))
    assert restored.status_code == (302 if role in EDITORS else 403)
    s.refresh_from_db()
    assert s.status == (ScenarioStatus.PAUSED if role in EDITORS else ScenarioStatus.ARCHIVED)


def test_a_paused_scenarios_page_offers_to_archive_after_a_confirmation(
    client_for: Login,
) -> None:
    s = _paused()
    client = client_for(Role.MARKETER)
    html = client.get(reverse("scenarios:detail", args=[s.pk])).content.decode()
    assert "アーカイブする" in html
    assert "効果の計測結果は消えず" in html
    assert "元に戻すこともできます" in html
    # without the box ticked: nothing happens, and the page says why
    page = client.post(reverse("scenarios:archive", args=[s.pk]), follow=True).content.decode()
    assert "「アーカイブしてよい」にチェック" in page
    assert Scenario.objects.get(pk=s.pk).status == ScenarioStatus.PAUSED
    page = client.post(
        reverse("scenarios:archive", args=[s.pk]), {"sure": "1"}, follow=True
    ).content.decode()
    assert "アーカイブしました" in page
    assert Scenario.objects.get(pk=s.pk).status == ScenarioStatus.ARCHIVED


def test_a_running_scenarios_page_does_not_offer_to_archive(client_for: Login) -> None:
    s = scenario("running", trigger={"kind": "first_purchase"}, activated_at=jst(2026, 5, 1))
    client = client_for(Role.MARKETER)
    html = client.get(reverse("scenarios:detail", args=[s.pk])).content.decode()
    assert "アーカイブする" not in html
    page = client.post(
        reverse("scenarios:archive", args=[s.pk]), {"sure": "1"}, follow=True
    ).content.decode()
    assert "先に停止してください" in page
    assert Scenario.objects.get(pk=s.pk).status == ScenarioStatus.ACTIVE


def test_an_archived_scenarios_page_offers_only_to_restore(client_for: Login) -> None:
    s = _archived()
    client = client_for(Role.MARKETER)
    html = client.get(reverse("scenarios:detail", args=[s.pk])).content.decode()
    assert "元に戻す" in html
    assert "このシナリオはアーカイブされています" in html
    assert "効果(配信グループとホールドアウトの比較)" in html  # the lift stays viewable
    for gone in (
        "稼働させる",
        "停止する",
        "アーカイブする",
        reverse("scenarios:edit", args=[s.pk]),
    ):
        assert gone not in html, gone
    # the edit page itself sends them back with the reason
    page = client.get(reverse("scenarios:edit", args=[s.pk]), follow=True).content.decode()
    assert "元に戻してから編集してください" in page
    # restored: paused, never running, and the page says how to start it
    page = client.post(reverse("scenarios:unarchive", args=[s.pk]), follow=True).content.decode()
    assert "元に戻しました(停止中です)" in page
    assert Scenario.objects.get(pk=s.pk).status == ScenarioStatus.PAUSED
    assert "稼働させる" in page


def test_the_list_hides_archived_scenarios_behind_their_own_tab(client_for: Login) -> None:
    _archived("summer-2025")
    _archived("winter-2025")
    scenario("welcome", trigger={"kind": "signup"}, activated_at=jst(2026, 5, 1))
    client = client_for(Role.ANALYST)
    html = client.get(reverse("scenarios:list")).content.decode()
    assert "シナリオ welcome" in html
    assert "シナリオ summer-2025" not in html
    assert f'href="{reverse("scenarios:list")}?archived=1">アーカイブ(2件)</a>' in html
    html = client.get(reverse("scenarios:list") + "?archived=1").content.decode()
    assert "シナリオ summer-2025" in html
    assert "シナリオ winter-2025" in html
    assert "シナリオ welcome" not in html
    assert "アーカイブ(2件)" in html
    assert f'href="{reverse("scenarios:list")}">使用中のシナリオ</a>' in html


def test_the_list_has_no_archive_tab_while_nothing_is_archived(client_for: Login) -> None:
    scenario("welcome", trigger={"kind": "signup"}, activated_at=jst(2026, 5, 1))
    html = client_for(Role.MARKETER).get(reverse("scenarios:list")).content.decode()
    assert "シナリオ welcome" in html
    assert "アーカイブ(" not in html


@pytest.mark.parametrize("role", [Role.MARKETER, Role.ANALYST])
def test_an_archived_scenarios_empty_lift_does_not_point_to_a_button_it_has_not(
    client_for: Callable[[Role], Client], role: Role
) -> None:
    archived = _archived()
    html = client_for(role).get(reverse("scenarios:lift", args=[archived.pk])).content.decode()
    assert "アーカイブしたシナリオは稼働しないため、エントリーは始まりません" in html
    assert "稼働させる" not in html


def test_a_paused_scenarios_empty_lift_names_the_button_only_for_those_who_have_it(
    client_for: Callable[[Role], Client],
) -> None:
    paused = _paused()
    url = reverse("scenarios:lift", args=[paused.pk])
    assert "「稼働させる」を押すと" in client_for(Role.MARKETER).get(url).content.decode()
    analyst = client_for(Role.ANALYST).get(url).content.decode()
    assert "稼働させる" not in analyst
    assert "稼働すると、その後のきっかけからエントリーが始まります" in analyst
