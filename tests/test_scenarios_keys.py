"""識別名 (key) of segments, templates, offers, scenarios and steps: one too long for its column is told
its length, not refused as 「半角英小文字・数字・ハイフンで」 which it already is."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import MessageTemplate, Offer, Scenario
from kizuna.campaigns.automation.segments import SegmentError
from kizuna.campaigns.automation.services import (
    ScenarioError,
    offer_save,
    scenario_save,
    template_save,
)
from tests.test_scenarios_kit import STAFF, one, segment, step, template

pytestmark = pytest.mark.django_db

Login = Callable[[Role], Client]

CHARS = "半角英小文字・数字・ハイフン"


def _offer(key: str) -> Offer:
    return offer_save(
        offer=None, key=key, name="500円OFF", kind="yen_off", value=500, acting_user=STAFF
    )


def _template(key: str) -> MessageTemplate:
    return template_save(
        template=None, key=key, name="お礼", subject="{{ name }} 様", text="本文", acting_user=STAFF
    )


def _scenario(key: str, step_key: str = "s1") -> Scenario:
    spec = {
        "key": key,
        "name": "シナリオ",
        "trigger": {"kind": "first_purchase"},
        "steps": [step(step_key, template=template().key)],
    }
    return scenario_save(scenario=None, spec=spec, acting_user=STAFF)


@pytest.mark.parametrize(
    ("save", "label"),
    [(_offer, "オファー"), (_template, "テンプレート"), (_scenario, "シナリオ")],
)
def test_a_key_too_long_is_told_its_length(save: Callable[[str], object], label: str) -> None:
    with pytest.raises(ScenarioError) as excinfo:
        save("a" * 65)
    assert excinfo.value.messages == [f"{label}の識別名は64文字以内で入力してください(いま65文字)"]
    # the forms allow 64 characters (maxlength), and so does the column: all of them save
    assert save("a" * 64)


def test_a_step_key_too_long_is_told_its_column_length() -> None:
    with pytest.raises(ScenarioError) as excinfo:
        _scenario("scn", step_key="s" * 51)
    assert any(
        "識別名は50文字以内で入力してください(いま51文字)" in m for m in excinfo.value.messages
    )
    assert not any(CHARS in m for m in excinfo.value.messages)
    assert _scenario("scn", step_key="s" * 50)


def test_bad_characters_are_still_told_as_such() -> None:
    with pytest.raises(ScenarioError) as excinfo:
        _offer("Big_Sale")
    assert any(CHARS in m for m in excinfo.value.messages)


def test_the_offers_page_tells_a_long_key_its_length(client_for: Login) -> None:
    response = client_for(Role.MARKETER).post(
        reverse("scenarios:offers"),
        {"key": "k" * 65, "name": "割引", "kind": "yen_off", "value": "500", "valid_days": "14"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert "オファーの識別名は64文字以内で入力してください(いま65文字)" in page
    assert CHARS not in page


def test_a_segment_key_too_long_is_told_its_length() -> None:
    with pytest.raises(SegmentError) as excinfo:
        segment("a" * 65, one("prefecture", "in", ["13"]))
    assert excinfo.value.messages == ["識別名は64文字以内で入力してください(いま65文字)"]
    assert segment("a" * 64, one("prefecture", "in", ["13"]))
