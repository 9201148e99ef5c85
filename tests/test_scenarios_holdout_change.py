"""A scenario that has enrolled anyone keeps its holdout %: its lift pools every entry, and
entries drawn at 10% and at 50% mixed together would bias the comparison. The edit form and a
scenario file are refused alike (one service rule); 0% (stop holding out) stays allowed, and a
scenario nobody entered yet can still be changed. The edit form shows the lock before saving:
only the current % and 0% are offered, with the reason beside them."""

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
LOCKED = "このシナリオには既にエントリーがあるため、割合は変えられません。"


def _saved(client: Client, *, enrolled: bool, holdout: str = "10") -> Scenario:
    client.post(reverse("scenarios:create"), scenario_form(holdout_percent=holdout))
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


def _holdout_field(html: str) -> str:
    """The form's ホールドアウト field: from its label to the next field."""
    found = re.search(r'<label for="scenario-holdout">.*?</div>', html, re.S)
    assert found is not None
    return found[0]


def _offered(field: str) -> list[str]:
    """The values the holdout field lets the marketer send (a select's options, or the hidden
    value beside a disabled box); a free text box offers any value."""
    if '<input id="scenario-holdout" name="holdout_percent"' in field:
        return ["any"]
    return re.findall(r'<option value="([^"]*)"', field) or re.findall(
        r'type="hidden" name="holdout_percent" value="([^"]*)"', field
    )


def _edit_field(client: Client, saved: Scenario) -> str:
    url = reverse("scenarios:edit", args=[saved.pk])
    return _holdout_field(client.get(url).content.decode())


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
    new = client.get(reverse("scenarios:create")).content.decode()
    assert _offered(_holdout_field(new)) == ["any"]
    assert LOCKED not in new
    saved = _saved(client, enrolled=False)
    field = _edit_field(client, saved)
    assert _offered(field) == ["any"]
    assert LOCKED not in field
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


def test_the_edit_page_shows_the_lock_before_saving(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    saved = _saved(client, enrolled=True)
    field = _edit_field(client, saved)
    # 10% as it is, or 0% (stop holding out); nothing to type, and the reason is beside it
    assert _offered(field) == ["10", "0"]
    assert "10%(変更できません)" in field
    assert LOCKED in field
    assert "新しいシナリオを作ってください" in field
    # re-drawing the form (ステップを追加) keeps the lock
    redrawn = client.post(
        reverse("scenarios:form_refresh"),
        scenario_form(scenario=str(saved.pk), action="add-step"),
        HTTP_HX_REQUEST="true",
    )
    assert _offered(_holdout_field(redrawn.content.decode())) == ["10", "0"]


def test_an_entered_scenario_at_0_percent_shows_it_disabled(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    saved = _saved(client, enrolled=True, holdout="0")
    field = _edit_field(client, saved)
    assert 'value="0" size="4" disabled' in field
    assert _offered(field) == ["0"]
    assert LOCKED in field


@pytest.mark.parametrize("holdout", ["10", "0"])
def test_the_locked_form_saves_other_changes_and_keeps_the_holdout(
    client_for: Login, holdout: str
) -> None:
    client = client_for(Role.MARKETER)
    saved = _saved(client, enrolled=True, holdout=holdout)
    url = reverse("scenarios:edit", args=[saved.pk])
    page = client.get(url).content.decode()
    found = re.search(r'name="opened" value="([^"]*)"', page)
    assert found is not None
    # what the browser sends: the locked field's current value (selected or hidden)
    sent = _offered(_holdout_field(page))[0]
    response = client.post(
        url, scenario_form(name="トライアル購入者フォロー2", holdout_percent=sent, opened=found[1])
    )
    assert response.status_code == 302
    saved.refresh_from_db()
    assert saved.name == "トライアル購入者フォロー2"
    assert saved.holdout_percent == int(holdout)


def test_an_enrolled_scenario_keeps_its_kind_of_trigger(client_for: Login) -> None:
    # given: a first-purchase scenario someone entered
    client = client_for(Role.MARKETER)
    saved = _saved(client, enrolled=True)
    url = reverse("scenarios:edit", args=[saved.pk])
    page = client.get(url).content.decode()
    # then: the form shows the trigger locked, sending the current kind, with the reason
    trigger = re.search(r'<label for="scenario-trigger">.*?</div>', page, re.S)
    assert trigger is not None
    assert '<select id="scenario-trigger" disabled' in trigger[0]
    assert '<input type="hidden" name="trigger_kind" value="first_purchase">' in trigger[0]
    assert "きっかけの種類は変えられません" in trigger[0]
    # when: another kind is posted anyway (an old form, a second tab)
    opened = re.search(r'name="opened" value="([^"]*)"', page)
    assert opened is not None
    response = client.post(
        url, scenario_form(trigger_kind="delivery", **{"param-product_kind": ""}, opened=opened[1])
    )
    # then: refused with the reason, nothing changed
    assert response.status_code == 400
    assert "きっかけの種類は変えられません(初回購入→お届け)" in response.content.decode()
    saved.refresh_from_db()
    assert saved.trigger_kind == "first_purchase"
    # and the locked form saves with its other changes
    kept = client.post(url, scenario_form(name="トライアル購入者フォロー(改)", opened=opened[1]))
    assert kept.status_code == 302
    saved.refresh_from_db()
    assert (saved.name, saved.trigger_kind) == ("トライアル購入者フォロー(改)", "first_purchase")


def test_a_scenario_nobody_entered_may_change_its_trigger(client_for: Login) -> None:
    client = client_for(Role.MARKETER)
    saved = _saved(client, enrolled=False)
    url = reverse("scenarios:edit", args=[saved.pk])
    page = client.get(url).content.decode()
    assert '<select id="scenario-trigger" name="trigger_kind"' in page
    opened = re.search(r'name="opened" value="([^"]*)"', page)
    assert opened is not None
    response = client.post(
        url, scenario_form(trigger_kind="delivery", **{"param-product_kind": ""}, opened=opened[1])
    )
    assert response.status_code == 302, re.findall(r"<li>(.*?)</li>", response.content.decode())
    saved.refresh_from_db()
    assert saved.trigger_kind == "delivery"
