"""Scenario files: export → load into an empty database → export gives the same bytes; loading
is idempotent and all-or-nothing, with every problem named by its place in the file."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from io import StringIO
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from kizuna.campaigns.automation import scheduler
from kizuna.campaigns.automation.models import (
    Enrollment,
    MessageTemplate,
    Offer,
    Scenario,
    ScenarioStatus,
    Segment,
    StepDispatch,
)
from kizuna.campaigns.automation.services import offer_save, scenario_pause, template_save
from kizuna.campaigns.automation.yaml_io import ScenarioFileError, export_yaml, load_yaml
from kizuna.core.models import AuditLog
from tests.test_scenarios_kit import STAFF, jst, one, scenario, segment, step
from tests.test_scenarios_resume_confirm import _buyers, _paused_after_running, _tick_after_resume

pytestmark = pytest.mark.django_db


def _library() -> None:
    trial = segment("trial-buyers", one("bought_kind", "in", ["trial"]))
    segment(
        "tokyo-women",
        {
            "op": "and",
            "rules": [
                {"field": "prefecture", "operator": "in", "value": ["13"]},
                {"op": "or", "rules": [{"field": "gender", "operator": "in", "value": ["female"]}]},
            ],
        },
    )
    template_save(
        template=None, key="thanks", name="お礼", subject="{{ name }} 様、ありがとうございます",
        text="{{ name }} 様\n\nご購入ありがとうございます。\n{% if offer %}{{ offer.label }}{% endif %}\n",
        html="<p>{{ name }} 様</p>\n<p>ありがとうございます</p>", acting_user=STAFF,
    )  # fmt: skip
    offer_save(
        offer=None, key="welcome", name="本品1,000円OFF", kind="yen_off", value=1000,
        code="WELCOME1000", valid_days=14, acting_user=STAFF,
    )  # fmt: skip
    scenario(
        "trial-steps",
        trigger={"kind": "first_purchase", "product_kind": "trial"},
        steps=[
            step("arrived", anchor="delivery", send_time="10:00", template="thanks"),
            step(
                "coupon",
                anchor="first_use",
                offset_days=7,
                send_time="10:00",
                template="thanks",
                offer="welcome",
                condition="tokyo-women",
                channel="best",
            ),
        ],
        holdout_percent=10,
        exit_on=["purchase", "opt_out"],
        audience=trial.key,
        activated_at=jst(2026, 5, 1),
    )
    paused = scenario(
        "monthly-tips",
        trigger={"kind": "delivery"},
        steps=[
            step("tip", anchor="delivery", send_time="09:30", repeat_monthly=6, template="thanks")
        ],
        activated_at=jst(2026, 5, 1),
    )
    scenario_pause(scenario=paused, acting_user=STAFF)


def _empty() -> None:
    Scenario.objects.all().delete()
    MessageTemplate.objects.all().delete()
    Offer.objects.all().delete()
    Segment.objects.all().delete()


def test_export_load_export_gives_the_same_file() -> None:
    # given
    _library()
    first = export_yaml()
    # when: loaded into an empty database
    _empty()
    report = load_yaml(first, acting_user=STAFF)
    # then
    assert export_yaml() == first
    assert report.created == {"segments": 2, "templates": 1, "offers": 1, "scenarios": 2}
    statuses = dict(Scenario.objects.values_list("key", "status"))
    assert statuses == {"trial-steps": ScenarioStatus.ACTIVE, "monthly-tips": ScenarioStatus.PAUSED}


def test_the_file_reads_like_what_staff_wrote() -> None:
    _library()
    text = export_yaml()
    assert "ご購入ありがとうございます。" in text  # not \\u escapes
    assert "text: |" in text  # multi-line bodies as literal blocks
    document = yaml.safe_load(text)
    trial = next(s for s in document["scenarios"] if s["key"] == "trial-steps")
    assert trial["trigger"] == {"kind": "first_purchase", "product_kind": "trial"}
    assert trial["steps"][1] == {
        "key": "coupon", "anchor": "first_use", "offset_days": 7, "send_time": "10:00",
        "repeat_monthly": 0, "channel": "best", "template": "thanks", "offer": "welcome",
        "condition": "tokyo-women",
    }  # fmt: skip


def test_loading_the_same_file_again_changes_nothing() -> None:
    _library()
    text = export_yaml()
    audits = AuditLog.objects.count()
    report = load_yaml(text, acting_user=STAFF)
    assert sum(report.created.values()) + sum(report.updated.values()) == 0
    assert report.unchanged == {"segments": 2, "templates": 1, "offers": 1, "scenarios": 2}
    assert AuditLog.objects.count() == audits


HAND_WRITTEN = """\
version: 1
segments:
- {key: tokyo, name: 東京都のお客様, rules: {op: and, rules: [{field: prefecture, operator: in, value: ['13']}]}}
templates:
- {key: hello, name: ごあいさつ, subject: '{{ name }} 様', text: '{{ name }} 様、こんにちは'}
offers:
- {key: off500, name: 500円OFF, kind: yen_off, value: 500}
scenarios:
- key: tokyo-hello
  name: 東京のお客様へ
  status: active
  trigger: {kind: segment_entered, segment: tokyo}
  steps:
  - {key: hi, channel: email, template: hello, offer: off500}
"""


def test_a_hand_written_file_that_leaves_out_defaults_loads_once() -> None:
    # given: a file written by hand, leaving out what has a default (the trigger's
    # include_existing, the step's anchor and offset, html, the offer's valid_days…), loaded
    load_yaml(HAND_WRITTEN, acting_user=STAFF)
    audits = AuditLog.objects.count()
    # when: the same file is loaded again
    report = load_yaml(HAND_WRITTEN, acting_user=STAFF)
    # then: nothing is written again
    assert sum(report.updated.values()) == 0
    assert report.unchanged == {"segments": 1, "templates": 1, "offers": 1, "scenarios": 1}
    assert AuditLog.objects.count() == audits


def test_a_field_left_out_is_its_default_not_what_is_stored() -> None:
    # given: a template with an HTML part
    _library()
    document = yaml.safe_load(export_yaml())
    # when: the file leaves the HTML out
    del document["templates"][0]["html"]
    report = load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    # then: as a new template would, it has none (not "unchanged" with the old HTML kept)
    assert report.updated["templates"] == 1
    assert MessageTemplate.objects.get(key="thanks").html == ""


def test_a_scenario_whose_status_is_left_out_keeps_it() -> None:
    # given: a running scenario
    _library()
    document = yaml.safe_load(export_yaml())
    trial = next(s for s in document["scenarios"] if s["key"] == "trial-steps")
    # when: a hand edit changes its holdout and leaves the status out
    del trial["status"]
    trial["holdout_percent"] = 20
    load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    # then: it keeps running with the change
    saved = Scenario.objects.get(key="trial-steps")
    assert (saved.status, saved.holdout_percent) == (ScenarioStatus.ACTIVE, 20)


def test_an_edited_file_updates_by_key() -> None:
    _library()
    document = yaml.safe_load(export_yaml())
    document["scenarios"][0]["holdout_percent"] = 20
    document["templates"][0]["subject"] = "新しい件名"
    report = load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    assert report.updated["scenarios"] == 1
    assert report.updated["templates"] == 1
    key = document["scenarios"][0]["key"]
    assert Scenario.objects.get(key=key).holdout_percent == 20
    assert MessageTemplate.objects.get().subject == "新しい件名"


def test_a_bad_file_changes_nothing_and_names_every_problem() -> None:
    _library()
    before = export_yaml()
    document = yaml.safe_load(before)
    document["scenarios"][0]["holdout_percent"] = 95
    document["scenarios"][1]["steps"][0]["template"] = "no-such-template"
    document["templates"][0]["text"] = "{% include 'x' %}"
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    messages = excinfo.value.messages
    assert any(m.startswith("templates[1](key: thanks)") and "include" in m for m in messages)
    assert any(m.startswith("scenarios[1]") and "ホールドアウト" in m for m in messages)
    assert any(m.startswith("scenarios[2]") and "テンプレート" in m for m in messages)
    assert export_yaml() == before


def test_names_longer_than_their_columns_are_refused_by_place() -> None:
    # The forms' maxlength stops a browser; a file is checked here, or PostgreSQL would
    # refuse the row with a server error (and SQLite quietly store it).
    _library()
    before = export_yaml()
    document = yaml.safe_load(before)
    document["segments"][0]["name"] = "セ" * 101
    document["templates"][0]["subject"] = "件" * 201
    document["scenarios"][0]["name"] = "シ" * 101
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    messages = excinfo.value.messages
    assert any(
        m.startswith("segments[1]") and "名前は100文字以内で入力してください(いま101文字)" in m
        for m in messages
    )
    assert any(
        m.startswith("templates[1]") and "件名・タイトルは200文字以内" in m for m in messages
    )
    assert any(m.startswith("scenarios[1]") and "名前は100文字以内" in m for m in messages)
    assert export_yaml() == before


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nscenarios: [\n", "YAMLとして読めません"),
        ("- a\n- b\n", "形式が正しくありません"),
        ("version: 2\n", "version は 1"),
        ("version: 1\nsegments: {}\nfoo: 1\n", "不明な項目です: foo"),
    ],
)
def test_unreadable_files_are_refused(text: str, message: str) -> None:
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(text, acting_user=STAFF)
    assert any(message in m for m in excinfo.value.messages)


def test_the_command_exports_and_loads(tmp_path: Path) -> None:
    _library()
    path = tmp_path / "scenarios.yml"
    call_command("scenarios", "export", str(path), stdout=StringIO())
    text = path.read_text(encoding="utf-8")
    _empty()
    out = StringIO()
    call_command("scenarios", "load", str(path), stdout=out)
    assert "シナリオ 新規2" in out.getvalue()
    assert export_yaml() == text
    bad = tmp_path / "bad.yml"
    bad.write_text("version: 1\nscenarios:\n- key: x\n", encoding="utf-8")
    with pytest.raises(CommandError, match="何も変更していません"):
        call_command("scenarios", "load", str(bad), stdout=StringIO())


def test_a_key_written_twice_is_refused_by_its_line() -> None:
    # given a pasted line that repeats a scenario's name: YAML alone would keep the second
    _library()
    before = export_yaml()
    lines = before.splitlines(keepends=True)
    at = lines.index("  name: お礼\n")  # the template's name
    edited = "".join([*lines[: at + 1], "  name: 別の名前\n", *lines[at + 1 :]])
    # when loaded
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(edited, acting_user=STAFF)
    # then the file is refused at that line and nothing changes
    (message,) = excinfo.value.messages
    assert f"{at + 2}行目・3文字目: 「name」は{at + 1}行目にも書かれています" in message
    assert export_yaml() == before


def test_two_entries_with_one_key_are_refused() -> None:
    # a copied block whose key was not changed would overwrite the first one
    _library()
    before = export_yaml()
    document = yaml.safe_load(before)
    document["scenarios"].append({**document["scenarios"][0], "name": "コピー"})
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    key = document["scenarios"][0]["key"]
    assert f"scenarios[3](key: {key}): key が scenarios[1] と同じです" in excinfo.value.messages
    assert export_yaml() == before


def test_a_send_time_typed_without_quotes_is_that_time() -> None:
    # YAML 1.1 reads 10:30 as the number 630 (base 60); staff mean half past ten
    _library()
    edited = export_yaml().replace("send_time: 09:30", "send_time: 10:30")
    report = load_yaml(edited, acting_user=STAFF)
    assert report.updated["scenarios"] == 1
    assert "send_time: '10:30'" in export_yaml()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("version: 1\nscenarios:\n- key: x\n\tname: y\n", "4行目・1文字目: タブ文字は使えません"),
        (
            "version: 1\ntemplates:\n- key: x\n  subject: {{ name }} 様\n",
            "4行目・23文字目: 引用符や「{」「[」で始まる値の後ろに文字が続いています",
        ),
        (
            "version: 1\ntemplates:\n- key: x\n  subject: {{ name }}\n",
            "4行目・13文字目: 「{」「[」で始まる値は引用符で囲んでください",
        ),
        (
            "version: 1\nsegments:\n- key: x\n   name: y\n",
            "4行目・8文字目: ここに「:」は書けません",
        ),
        (
            # an impossible unquoted date failed inside PyYAML with a Python traceback
            "version: 1\nsegments:\n- key: x\n  name: y\n  rules: {op: and, rules: [{field:"
            " first_order_at, operator: between, value: [2026-02-30, 2026-03-01]}]}\n",
            "5行目・79文字目: 「2026-02-30」という日付はありません。日付を確かめてください",
        ),
    ],
)
def test_yaml_mistakes_are_named_by_line_column_and_reason(text: str, message: str) -> None:
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(text, acting_user=STAFF)
    assert any(message in m for m in excinfo.value.messages)


def test_a_text_written_as_a_list_is_refused_not_stored_as_python() -> None:
    _library()
    before = export_yaml()
    document = yaml.safe_load(before)
    document["templates"][0]["name"] = ["お礼", "サンクス"]
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    assert any(
        m.startswith("templates[1](key: thanks): name は文字で") for m in excinfo.value.messages
    )
    assert export_yaml() == before


def test_the_file_does_not_depend_on_how_the_database_orders_json_keys() -> None:
    # PostgreSQL's jsonb keeps an object's keys shortest first, SQLite as written
    _library()
    sorted_export = export_yaml()
    segment = Segment.objects.get(key="tokyo-women")
    segment.rules = {
        "rules": [
            {"value": ["13"], "field": "prefecture", "operator": "in"},
            {"rules": [{"value": ["female"], "operator": "in", "field": "gender"}], "op": "or"},
        ],
        "op": "and",
    }
    segment.save(update_fields=["rules"])
    assert export_yaml() == sorted_export


def test_the_command_speaks_japanese_when_it_refuses(tmp_path: Path) -> None:
    # Django would print "CommandError: …"; the message alone is what staff should see
    env = {**os.environ, "KIZUNA_DATA_DIR": str(tmp_path)}
    done = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "kizuna", "scenarios", "load", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 1
    assert done.stderr.strip() == f"エラー: ファイルではなくフォルダが指定されています: {tmp_path}"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["scenarios", "lod", "x.yml"], "action に 'lod' は指定できません"),
        (["scenarios", "load"], "必須の引数がありません: file"),
        (["scenarios", "run", "--now"], "--now には値を指定してください"),
        (
            ["scenarios", "load", "x.yml", "--pause-entrants", "yes"],
            "--pause-entrants に 'yes' は指定できません",
        ),
    ],
)
def test_a_mistyped_command_line_is_explained_in_japanese(
    tmp_path: Path, args: list[str], said: str
) -> None:
    env = {**os.environ, "KIZUNA_DATA_DIR": str(tmp_path)}
    done = subprocess.run(  # noqa: S603 - our own command line
        [sys.executable, "-m", "kizuna", *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert f"エラー: {said}" in done.stderr
    assert "usage" not in done.stderr.split("エラー:")[1]


def test_load_reads_standard_input_as_export_writes_standard_output() -> None:
    # given: the library exported to standard output, then emptied
    _library()
    out = StringIO()
    call_command("scenarios", "export", "-", stdout=out)
    exported = out.getvalue()
    _empty()
    # when: it is piped back in (kizuna scenarios export - | … | kizuna scenarios load -)
    call_command("scenarios", "load", "-", stdin=StringIO(exported), stdout=StringIO())
    # then
    again = StringIO()
    call_command("scenarios", "export", "-", stdout=again)
    assert again.getvalue() == exported


def test_an_impossible_date_in_a_file_is_told_by_the_command_not_a_traceback(
    tmp_path: Path,
) -> None:
    path = tmp_path / "scenarios.yml"
    path.write_text(
        "version: 1\nsegments:\n- key: x\n  name: y\n"
        "  rules: {op: and, rules: [{field: first_order_at, operator: between,"
        " value: [2026-02-30, 2026-03-01]}]}\n",
        encoding="utf-8",
    )
    with pytest.raises(CommandError) as excinfo:
        call_command("scenarios", "load", str(path), stdout=StringIO())
    assert "5行目" in str(excinfo.value)
    assert "「2026-02-30」という日付はありません" in str(excinfo.value)


def _file_resuming(tmp_path: Path, key: str) -> Path:
    """The library exported, with the paused scenario `key` set to 稼働中 (and its description
    edited, so the refusal is seen to write nothing else of it either)."""
    document = yaml.safe_load(export_yaml())
    entry = next(s for s in document["scenarios"] if s["key"] == key)
    entry["status"] = "active"
    entry["description"] = "再開します"
    path = tmp_path / "scenarios.yml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True), encoding="utf-8")
    return path


def test_a_file_resuming_a_scenario_with_entrants_while_paused_asks_what_to_do(
    tmp_path: Path,
) -> None:
    # given: a paused 「セグメントに入った」 scenario that 5 customers entered the segment of
    # while it was stopped, and a file that sets it 稼働中
    scenario = _paused_after_running()
    _buyers(5)
    path = _file_resuming(tmp_path, "coupon")
    before = export_yaml()
    audits = AuditLog.objects.count()
    # when: the file is loaded without saying what happens to them
    with pytest.raises(CommandError) as excinfo:
        call_command("scenarios", "load", str(path), stdout=StringIO())
    # then: refused, naming the scenario, how many, and how to choose; nothing changed
    message = str(excinfo.value)
    assert "何も変更していません" in message
    assert "scenarios[1](key: coupon): シナリオ「購入者クーポン」を再開すると" in message
    assert "5人" in message
    assert "--pause-entrants send" in message
    assert "--pause-entrants skip" in message
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.PAUSED
    assert export_yaml() == before
    assert AuditLog.objects.count() == audits


def test_pause_entrants_send_resumes_and_enrolls_those_who_entered_while_paused(
    tmp_path: Path,
) -> None:
    scenario = _paused_after_running()
    _buyers(5)
    path = _file_resuming(tmp_path, "coupon")
    call_command("scenarios", "load", str(path), "--pause-entrants", "send", stdout=StringIO())
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.ACTIVE
    _tick_after_resume()
    # as 稼働させる's send: the 5 are enrolled at the next run (the baseline 3 are not) and
    # the first step is queued for those not held out
    enrolled = Enrollment.objects.filter(scenario=scenario)
    assert enrolled.count() == 5
    treated = enrolled.filter(holdout=False).count()
    queued = StepDispatch.objects.filter(enrollment__scenario=scenario, status="queued")
    assert queued.count() == treated > 0


def test_pause_entrants_skip_resumes_with_them_as_members_already_there(tmp_path: Path) -> None:
    scenario = _paused_after_running()
    _buyers(5)
    path = _file_resuming(tmp_path, "coupon")
    call_command("scenarios", "load", str(path), "--pause-entrants", "skip", stdout=StringIO())
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.ACTIVE
    _tick_after_resume()
    assert Enrollment.objects.filter(scenario=scenario).count() == 0
    # someone who enters after resuming is still enrolled
    _buyers(1)
    scheduler.tick(now=timezone.now() + dt.timedelta(hours=2))  # its next hourly check
    assert Enrollment.objects.filter(scenario=scenario).count() == 1


def test_a_file_resuming_a_scenario_nobody_entered_while_paused_needs_no_choice(
    tmp_path: Path,
) -> None:
    scenario = _paused_after_running()
    path = _file_resuming(tmp_path, "coupon")
    call_command("scenarios", "load", str(path), stdout=StringIO())
    scenario.refresh_from_db()
    assert scenario.status == ScenarioStatus.ACTIVE
