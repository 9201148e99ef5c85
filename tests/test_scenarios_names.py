"""Two scenarios cannot share a name — also not written in full-width or another case — on
create, edit or file load; two that did before the rule are told apart by their keys in the
送信キュー's scenario filter."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import yaml
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Scenario, Segment
from kizuna.campaigns.automation.services import ScenarioError, scenario_save
from kizuna.campaigns.automation.yaml_io import ScenarioFileError, export_yaml, load_yaml
from tests.test_scenarios_kit import STAFF, one, scenario_form, segment, step

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]


def _save(key: str, name: str, scenario: Scenario | None = None, **fields: object) -> Scenario:
    spec = {"key": key, "name": name, "trigger": {"kind": "signup"}, "steps": [step()], **fields}
    return scenario_save(scenario=scenario, spec=spec, acting_user=STAFF)


@pytest.mark.parametrize(
    "typed",
    [
        "QA シナリオ",
        "ＱＡ　シナリオ",
        "qa  シナリオ ",
        "QAシナリオ",
        "ＱＡシナリオ",
        "Q A　シナリオ",
    ],
)
def test_a_new_scenario_cannot_take_a_name_in_use(typed: str) -> None:
    _save("qa-1", "QA シナリオ")
    with pytest.raises(ScenarioError) as refused:
        _save("qa-2", typed)
    assert refused.value.messages == [
        f"名前「{typed.strip()}」は既にシナリオ「QA シナリオ」(識別名 qa-1)で使われています。"
        "一覧や絞り込みで区別できるよう、別の名前にしてください"
    ]
    assert list(Scenario.objects.values_list("key", flat=True)) == ["qa-1"]


def test_the_form_refuses_a_duplicate_name_and_names_the_other(client_for: Login) -> None:
    _save("qa-1", "QA シナリオ")
    data = scenario_form(key="qa-2", name="QA シナリオ")
    response = client_for(Role.MARKETER).post(reverse("scenarios:create"), data)
    html = response.content.decode()
    assert response.status_code == 400
    assert "既にシナリオ「QA シナリオ」(識別名 qa-1)で使われています" in html
    assert not Scenario.objects.filter(key="qa-2").exists()


def test_renaming_to_another_scenarios_name_is_refused_but_keeping_ones_own_is_not() -> None:
    first = _save("qa-1", "QA シナリオ")
    second = _save("qa-2", "別のシナリオ")
    with pytest.raises(ScenarioError):
        _save("qa-2", "qa シナリオ", scenario=second)
    # a change of width or case of its own name is not a clash with itself
    assert _save("qa-1", "ＱＡ シナリオ", scenario=first).name == "ＱＡ シナリオ"


def test_a_file_with_two_scenarios_of_one_name_loads_nothing() -> None:
    _save("qa-1", "QA シナリオ")
    text = export_yaml().replace("key: qa-1", "key: qa-new")
    text += text[text.index("- key: qa-new") :].replace("qa-new", "qa-other")
    Scenario.objects.all().delete()
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(text, acting_user=STAFF)
    assert any(
        m.startswith("scenarios[2](key: qa-other): 名前「QA シナリオ」は既にシナリオ")
        for m in refused.value.messages
    )
    assert not Scenario.objects.exists()


def _renamed(text: str, names: dict[str, str]) -> str:
    document = yaml.safe_load(text)
    for section in ("segments", "scenarios"):
        for entry in document[section]:
            entry["name"] = names.get(entry["key"], entry["name"])
    return yaml.safe_dump(document, allow_unicode=True, sort_keys=False)


def test_a_file_may_swap_the_names_of_two_scenarios() -> None:
    # given: 「x」 and 「y」, and a file that gives each the other's name
    _save("qa-1", "x")
    _save("qa-2", "y")
    swapped = _renamed(export_yaml(), {"qa-1": "y", "qa-2": "x"})
    # when
    load_yaml(swapped, acting_user=STAFF)
    # then
    assert dict(Scenario.objects.values_list("key", "name")) == {"qa-1": "y", "qa-2": "x"}


def test_a_file_may_swap_the_names_of_two_segments() -> None:
    segment("tokyo", one("prefecture", "in", ["13"]))
    segment("osaka", one("prefecture", "in", ["27"]))
    load_yaml(
        _renamed(export_yaml(), {"tokyo": "セグメント osaka", "osaka": "セグメント tokyo"}),
        acting_user=STAFF,
    )
    names = dict(Segment.objects.values_list("key", "name"))
    assert names == {"tokyo": "セグメント osaka", "osaka": "セグメント tokyo"}


def test_a_file_is_checked_against_the_scenarios_it_leaves_out_and_its_own_new_names() -> None:
    # given: 「x」 and 「y」; a file renames 「x」 to what 「y」 (not in the file) is called
    _save("qa-1", "x")
    _save("qa-2", "y")
    document = yaml.safe_load(_renamed(export_yaml(), {"qa-1": "Ｙ"}))
    document["scenarios"] = [document["scenarios"][0]]
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    assert refused.value.messages == [
        "scenarios[1](key: qa-1): 名前「Ｙ」は既にシナリオ「y」(識別名 qa-2)で使われています。"
        "一覧や絞り込みで区別できるよう、別の名前にしてください"
    ]
    # and: a file that renames 「x」 to 「z」 and 「y」 to 「Ｚ」 is told at the second
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(_renamed(export_yaml(), {"qa-1": "z", "qa-2": "Ｚ"}), acting_user=STAFF)
    assert refused.value.messages == [
        "scenarios[2](key: qa-2): 名前「Ｚ」は既にシナリオ「z」(識別名 qa-1)で使われています。"
        "一覧や絞り込みで区別できるよう、別の名前にしてください"
    ]
    assert dict(Scenario.objects.values_list("key", "name")) == {"qa-1": "x", "qa-2": "y"}


def test_scenarios_that_shared_a_name_before_the_rule_are_told_apart(client_for: Login) -> None:
    # given: two scenarios saved with the same name before names had to differ
    first = _save("qa-1", "QA シナリオ")
    second = _save("qa-2", "仮の名前")
    Scenario.objects.filter(pk=second.pk).update(name="QA シナリオ")
    second.refresh_from_db()
    # then: each can still be edited without renaming it
    _save("qa-2", "QA シナリオ", scenario=second, description="説明を追加")
    # and the 送信キュー's scenario filter shows which is which
    page = client_for(Role.ADMIN).get("/delivery/queue/").content.decode()
    options = re.findall(r'<option value="(\d+)"[^>]*>([^<]*)</option>', page)
    assert (str(first.pk), "QA シナリオ(qa-1)") in options
    assert (str(second.pk), "QA シナリオ(qa-2)") in options


def test_names_that_differ_only_in_spaces_stored_before_the_rule_can_still_be_edited() -> None:
    # given: 「QA シナリオ」 and 「QAシナリオ」, saved when spaces still told names apart
    first = _save("qa-1", "QA シナリオ")
    second = _save("qa-2", "仮の名前")
    Scenario.objects.filter(pk=second.pk).update(name="QAシナリオ")
    second.refresh_from_db()
    # then: each keeps its name through an edit
    assert _save("qa-2", "QAシナリオ", scenario=second, description="説明").name == "QAシナリオ"
    assert _save("qa-1", "QA シナリオ", scenario=first, description="説明").name == "QA シナリオ"
    # and a third cannot take either, told which scenario has it (the first saved)
    with pytest.raises(ScenarioError) as refused:
        _save("qa-3", "Ｑ Ａ シナリオ")
    assert refused.value.messages == [
        "名前「Ｑ Ａ シナリオ」は既にシナリオ「QA シナリオ」(識別名 qa-1)で使われています。"
        "一覧や絞り込みで区別できるよう、別の名前にしてください"
    ]
