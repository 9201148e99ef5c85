"""Offers: the value a shop types (on the form or in a scenario file) is checked for its kind,
so a mistyped amount is told in Japanese instead of failing the save with a server error."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Offer
from kizuna.campaigns.automation.yaml_io import ScenarioFileError, load_yaml
from tests.test_scenarios_kit import STAFF

pytestmark = pytest.mark.django_db

Login = Callable[[Role], Client]


@pytest.mark.parametrize(
    ("kind", "value", "message"),
    [
        ("yen_off", "99999999999999999999", "円引きは1〜1,000,000円で入力してください"),
        ("yen_off", "3000000000", "円引きは1〜1,000,000円で入力してください"),
        ("points", "99999999999999999999", "ポイントは1〜1,000,000ポイントで入力してください"),
        ("percent_off", "99999999999999999999", "割引率は100%以下にしてください"),
    ],
)
def test_an_amount_too_large_is_refused_on_the_form_and_kept(
    client_for: Login, kind: str, value: str, message: str
) -> None:
    client = client_for(Role.MARKETER)
    response = client.post(
        reverse("scenarios:offers"),
        {"key": "big", "name": "大きな割引", "kind": kind, "value": value, "valid_days": "14"},
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert message in page
    assert f'value="{value}"' in page  # what was typed stays, to be corrected
    assert 'value="big"' in page
    assert not Offer.objects.exists()


def test_the_largest_amounts_are_accepted(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    for key, kind in (("yen", "yen_off"), ("pts", "points")):
        response = client.post(
            reverse("scenarios:offers"),
            {"key": key, "name": key, "kind": kind, "value": "1000000", "valid_days": "14"},
        )
        assert response.status_code == 302
    assert Offer.objects.get(key="yen").label == "1,000,000円OFF"
    assert Offer.objects.get(key="pts").label == "1,000,000ポイント進呈"


def test_an_amount_too_large_in_a_scenario_file_is_refused_by_place() -> None:
    text = (
        "version: 1\n"
        "offers:\n"
        "- {key: big, name: 大きな割引, kind: yen_off, value: 99999999999999999999}\n"
        "- {key: pts, name: ポイント, kind: points, value: 3000000000}\n"
    )
    with pytest.raises(ScenarioFileError) as excinfo:
        load_yaml(text, acting_user=STAFF)
    messages = excinfo.value.messages
    assert any(
        m.startswith("offers[1]") and "円引きは1〜1,000,000円で入力してください" in m
        for m in messages
    )
    assert any(
        m.startswith("offers[2]") and "ポイントは1〜1,000,000ポイント" in m for m in messages
    )
    assert not Offer.objects.exists()
