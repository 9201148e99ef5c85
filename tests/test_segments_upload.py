"""The segment builder's largest forms reach the server: Django's default of 1,000 fields a
post refused 20 都道府県 conditions with every prefecture ticked (a bare 400 page, the input
lost), though the builder allows 40 conditions."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Segment
from kizuna.campaigns.automation.segments import MAX_CONDITIONS
from kizuna.core import jp
from tests.factories import make_customer

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}
Login = Callable[[Role], Client]
PREFECTURES = [str(code) for code, _label in jp.PREFECTURE_CHOICES]


def _every_prefecture(conditions: int) -> dict[str, Any]:
    """A root OR group of `conditions` 都道府県 conditions, each with all 47 ticked."""
    paths = [f"0.{i}" for i in range(conditions)]
    data: dict[str, Any] = {"node": ["0", *paths], "kind-0": "group", "op-0": "or"}
    for path in paths:
        data[f"kind-{path}"] = "condition"
        data[f"field-{path}"] = "prefecture"
        data[f"operator-{path}"] = "in"
        data[f"value-{path}"] = PREFECTURES
    return data


def test_twenty_conditions_with_every_prefecture_are_previewed(client_for: Login) -> None:
    make_customer(prefecture=13)
    response = client_for(Role.MARKETER).post(
        reverse("segments:preview"), _every_prefecture(20), headers=HTMX
    )
    assert response.status_code == 200
    assert "1人" in response.content.decode()


def test_the_most_conditions_the_builder_allows_are_saved(client_for: Login) -> None:
    assert len(PREFECTURES) == 47
    data = {**_every_prefecture(MAX_CONDITIONS), "key": "everywhere", "name": "全国"}
    response = client_for(Role.MARKETER).post(reverse("segments:create"), data)
    assert response.status_code == 302
    rules = Segment.objects.get(key="everywhere").rules
    assert len(rules["rules"]) == MAX_CONDITIONS
    assert all(len(rule["value"]) == 47 for rule in rules["rules"])
