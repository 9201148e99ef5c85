"""Builders shared by the scenario, trigger, segment and lift tests (no tests in here)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from kizuna.campaigns.automation.clock import JST
from kizuna.campaigns.automation.models import MessageTemplate, Scenario, Segment
from kizuna.campaigns.automation.segments import segment_save
from kizuna.campaigns.automation.services import (
    scenario_activate,
    scenario_save,
    template_save,
)
from kizuna.core.audit import Actor

STAFF = Actor.system("test")


def jst(*parts: int) -> dt.datetime:
    """An aware moment given as Japanese wall-clock time."""
    return dt.datetime(*parts, tzinfo=JST)  # type: ignore[misc]


def template(
    key: str = "thanks", *, subject: str = "{{ name }} 様へ", text: str = ""
) -> MessageTemplate:
    found = MessageTemplate.objects.filter(key=key).first()
    if found is not None:
        return found
    return template_save(
        template=None,
        key=key,
        name=f"テンプレート {key}",
        subject=subject,
        text=text or "{{ name }} 様\nいつもありがとうございます。",
        acting_user=STAFF,
    )


def step(key: str = "s1", **fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "key": key,
        "anchor": "trigger",
        "offset_days": 0,
        "send_time": None,
        "repeat_monthly": 0,
        "channel": "email",
        "template": template().key,
    }
    values.update(fields)
    return values


def scenario(
    key: str = "scn",
    *,
    trigger: dict[str, Any],
    steps: list[dict[str, Any]] | None = None,
    activated_at: dt.datetime,
    holdout_percent: int = 0,
    **fields: Any,
) -> Scenario:
    """A saved, active scenario (activated at `activated_at`)."""
    spec: dict[str, Any] = {
        "key": key,
        "name": f"シナリオ {key}",
        "trigger": trigger,
        "holdout_percent": holdout_percent,
        "steps": steps if steps is not None else [step()],
    }
    spec.update(fields)
    saved = scenario_save(scenario=None, spec=spec, acting_user=STAFF)
    return scenario_activate(scenario=saved, acting_user=STAFF, at=activated_at)


def segment(key: str, rules: dict[str, Any]) -> Segment:
    return segment_save(
        segment=None,
        key=key,
        name=f"セグメント {key}",
        description="",
        rules=rules,
        acting_user=STAFF,
    )


def one(field: str, operator: str, value: Any = None, **extra: Any) -> dict[str, Any]:
    """A rule tree with one condition."""
    condition = {"field": field, "operator": operator, "value": value, **extra}
    return {"op": "and", "rules": [condition]}


def scenario_form(**overrides: Any) -> dict[str, Any]:
    """The scenario form as a marketer sends it: a trial-buyer follow-up with one step on the
    delivery day. Tests change what they need with `overrides`."""
    data: dict[str, Any] = {
        "key": "trial-follow",
        "name": "トライアル購入者フォロー",
        "trigger_kind": "first_purchase",
        "param-product_kind": "trial",
        "holdout_percent": "10",
        "purpose": "marketing",
        "exit_on": ["purchase"],
        "first_use_days": "3",
        "attribution_days": "30",
        "step": ["0"],
        "step-0-key": "arrived",
        "step-0-anchor": "delivery",
        "step-0-offset_days": "0",
        "step-0-send_time": "10:00",
        "step-0-repeat_monthly": "0",
        "step-0-channel": "email",
        "step-0-template": template().key,
    }
    data.update(overrides)
    return data
