"""A scenario that has enrolled anyone keeps its holdout %: its lift pools every entry, and
entries drawn at 10% and at 50% mixed together would bias the comparison. The edit form and a
scenario file are refused alike (one service rule); 0% (stop holding out) stays allowed, and a
scenario nobody entered yet can still be changed."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import yaml
from django.http import HttpResponse
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Enrollment, Scenario
from kizuna.campaigns.automation.yaml_io import ScenarioFileError, export_yaml, load_yaml
from tests.factories import make_customer
from tests.test_scenarios_kit import STAFF, jst, scenario_form

pytestmark = pytest.mark.django_db
Login = Callable[[Role], Client]
REFUSED = "このシナリオには既にエントリーがあるため、割合は変えられません(10%→50%)"


def _saved(client: Client, *, enrolled: bool) -> Scenario:
    client.post(reverse("scenarios:create"), scenario_form())
    saved = Scenario.objects.get(key="trial-follow")
    if enrolled:
        moment = jst(2026, 5, 2, 9)
        Enrollment.objects.create(
            scenario=saved,
            customer=make_customer(),
            occurrence="first",
            enrolled_at=moment,
            anchor_at=moment,
            anchor_date=moment.date(),
        )
    return saved


def _edit(client: Client, saved: Scenario, holdout: str) -> HttpResponse:
    url = reverse("scenarios:edit", args=[saved.pk])
    found = re.search(r'name="opened" value="([^"]*)"', client.get(url).content.decode())
    assert found is not None
    response: HttpResponse = client.post(
        url, scenario_form(holdout_percent=holdout, opened=found[1])
    )
    return response


def test_the_form_refuses_a_new_holdout_once_anyone_entered(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    saved = _saved(client, enrolled=True)
    response = _edit(client, saved, "50")
    html = response.content.decode()
    assert response.status_code == 400
    assert REFUSED in html
    assert "新しいシナリオを作ってください" in html
    saved.refresh_from_db()
    assert saved.holdout_percent == 10
    # stopping the holdout (0%: send to everyone) is still possible
    assert _edit(client, saved, "0").status_code == 302
    saved.refresh_from_db()
    assert saved.holdout_percent == 0


def test_a_scenario_nobody_entered_changes_its_holdout(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    saved = _saved(client, enrolled=False)
    assert _edit(client, saved, "50").status_code == 302
    saved.refresh_from_db()
    assert saved.holdout_percent == 50


def test_a_scenario_file_is_refused_the_same_way(client_for: Login) -> None:
    saved = _saved(client_for(Role.MARKETER), enrolled=True)
    document = yaml.safe_load(export_yaml())
    document["scenarios"][0]["holdout_percent"] = 50
    with pytest.raises(ScenarioFileError) as refused:
        load_yaml(yaml.safe_dump(document, allow_unicode=True), acting_user=STAFF)
    assert any(REFUSED in message for message in refused.value.messages)
    saved.refresh_from_db()
    assert saved.holdout_percent == 10
