"""Numbers typed into the forms: one reader (kizuna.web.http.int_or_text) for the segment
builder and the scenario form, so full-width digits, commas and a minus typed through a Japanese
IME mean the same everywhere, and a number out of range gets the validator's Japanese message."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Scenario
from kizuna.web.http import int_or_text
from tests.test_scenarios_kit import scenario_form

Login = Callable[[Role], Client]


@pytest.mark.parametrize(
    ("typed", "read"),
    [
        ("30", 30),
        ("３０", 30),
        ("1,200", 1200),
        (" -3 ", -3),
        ("－３", -3),  # full-width minus
        ("ー３", -3),  # the minus key in kana mode
        ("−3", -3),  # the minus sign, pasted
        ("--3", "--3"),
        ("3-", "3-"),
        ("三十", "三十"),
        ("1.5", "1.5"),
        ("", ""),
        (None, ""),
        ("9" * 5000, "9" * 5000),  # past what int() reads: kept, never a server error
    ],
)
def test_typed_numbers_are_read_or_kept_as_typed(typed: str | None, read: int | str) -> None:
    assert int_or_text(typed) == read


@pytest.mark.django_db
def test_the_scenario_form_reads_days_before_and_explains_a_bad_one(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:create")
    # when: a negative number beyond the allowed range, or a doubled minus
    for typed in ("-400", "--5"):
        response = client.post(url, scenario_form(**{"step-0-offset_days": typed}))
        # then: the validator's message, with the input kept
        html = response.content.decode()
        assert response.status_code == 400, typed
        assert "日数は-365〜1095の整数で入力してください" in html
        assert f'value="{typed}"' in html
    # when: three days before, typed with the IME's minus
    response = client.post(url, scenario_form(**{"step-0-offset_days": "ー３"}))
    # then: saved as -3
    assert response.status_code == 302
    assert Scenario.objects.get().steps.get().offset_days == -3


@pytest.mark.django_db
def test_days_before_are_refused_for_an_anchor_already_past_at_enrollment(
    client_for: Login,
) -> None:
    # A step 1 day before the purchase is late the moment the buyer is enrolled: every message
    # would go out late or be held as a backlog. Before the delivery it is what shops want.
    client = client_for(Role.MARKETER)
    url = reverse("scenarios:create")
    response = client.post(
        url, scenario_form(**{"step-0-anchor": "purchase", "step-0-offset_days": "-1"})
    )
    html = response.content.decode()
    assert response.status_code == 400
    assert "基準日「購入日」より前には送れません" in html
    assert not Scenario.objects.exists()
    response = client.post(
        url, scenario_form(**{"step-0-anchor": "purchase", "step-0-offset_days": "0"})
    )
    assert response.status_code == 302
