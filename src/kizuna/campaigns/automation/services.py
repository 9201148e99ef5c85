"""Write paths for scenarios, message templates, offers and held backlogs.

A scenario is described by a plain dict (a ScenarioSpec) — the same shape the web form builds
and the YAML file holds — validated as a whole, with every problem reported at once in
Japanese. Each write records an audit row (who, when, what changed).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction
from django.db.models import QuerySet
from django.utils import timezone

from kizuna.campaigns import outbox
from kizuna.campaigns.automation import triggers
from kizuna.campaigns.automation.models import (
    Backlog,
    DispatchStatus,
    Enrollment,
    ExitRule,
    MessageTemplate,
    Offer,
    OfferKind,
    Scenario,
    ScenarioStatus,
    ScenarioStep,
    Segment,
    StepAnchor,
    StepDispatch,
    TriggerKind,
)
from kizuna.campaigns.automation.segments import (
    compile_validated,
    key_error,
    name_error,
    name_key,
    segment_customers,
)
from kizuna.campaigns.automation.templating import (
    TemplateRenderError,
    compile_stored,
    compile_template,
    prints_offer_unguarded,
    render_check,
)
from kizuna.campaigns.models import Channel, OutboxStatus, Purpose
from kizuna.core.audit import Actor, audit_record, audited_delete, diff
from kizuna.core.limits import too_long

ORDER_ANCHORS = (
    StepAnchor.PURCHASE,
    StepAnchor.SHIPMENT,
    StepAnchor.DELIVERY,
    StepAnchor.FIRST_USE,
)
MAX_STEPS = 30
# The most a 円引き coupon or a points offer may give. Far above any real D2C incentive, and
# far below what the value column holds: 99999999999999999999 typed on the form (or written
# in a scenario file) overflowed the database integer with a server error.
MAX_OFFER_AMOUNT = 1_000_000


class ScenarioError(ValueError):
    """A scenario, template or offer that cannot be saved; `messages` say what to fix."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


def _key_error(label: str, key: Any, model: type[models.Model]) -> str | None:
    return key_error(key, model, example="trial-step-mail", label=label)


def _whole(value: Any) -> bool:
    """An integer, not a bool: `true` in a scenario file is an int to Python and would be
    saved as 1."""
    return isinstance(value, int) and not isinstance(value, bool)


def _parse_time(value: Any) -> dt.time | None:
    if value in (None, ""):
        return None
    if isinstance(value, dt.time):
        return value
    return dt.time.fromisoformat(str(value))


# --- templates and offers ---------------------------------------------------------------------


@transaction.atomic
def template_save(
    *,
    template: MessageTemplate | None,
    key: str,
    name: str,
    subject: str,
    text: str,
    html: str = "",
    acting_user: Any,
    check_name: bool = True,
) -> MessageTemplate:
    """Create or change a message template; refuses one that does not compile in the sandbox
    or cannot be rendered (templating.render_check). `check_name=False`: the caller checked
    the name (a scenario file, against its final state: yaml_io)."""
    errors: list[str] = []
    if template is None and (message := _key_error("テンプレート", key, MessageTemplate)):
        errors.append(message)
    elif template is None and MessageTemplate.objects.filter(key=key).exists():
        errors.append(f"識別名「{key}」のテンプレートは既にあります")
    if not name.strip():
        errors.append("テンプレートの名前を入力してください")
    elif check_name and (
        message := name_error(name.strip(), MessageTemplate, template, label="テンプレート")
    ):
        errors.append(message)
    errors.extend(too_long(MessageTemplate, name=name.strip(), subject=subject))
    try:
        # Compiled, then rendered: a template that fails only when rendered (a time format
        # on a date…) would otherwise fail at every scheduler tick instead of here.
        render_check(compile_template(subject=subject, text=text, html=html))
    except TemplateRenderError as exc:
        errors.extend(exc.messages)
    if errors:
        raise ScenarioError(errors)
    before = {} if template is None else _template_values(template)
    template = template or MessageTemplate(key=key)
    template.name, template.subject, template.text, template.html = (
        name.strip(),
        subject,
        text,
        html,
    )
    template.save()
    audit_record(
        actor=Actor.of(acting_user),
        action="message_template.update" if before else "message_template.create",
        instance=template,
        customer_id=None,
        changes=diff(before, _template_values(template)),
    )
    return template


def _template_values(template: MessageTemplate) -> dict[str, Any]:
    return {"name": template.name, "subject": template.subject, "text": template.text, "html": template.html}  # fmt: skip


# Offers whose value box means nothing (the label says it all): saved with value 0.
VALUELESS_OFFERS = (OfferKind.FREE_SHIPPING, OfferKind.GIFT)


@transaction.atomic
def offer_save(
    *,
    offer: Offer | None,
    key: str,
    name: str,
    kind: str,
    value: int,
    code: str = "",
    valid_days: int = 14,
    acting_user: Any,
    check_name: bool = True,
) -> Offer:
    """Create or change an offer. `check_name=False`: as for template_save."""
    errors: list[str] = []
    if offer is None and (message := _key_error("オファー", key, Offer)):
        errors.append(message)
    elif offer is None and Offer.objects.filter(key=key).exists():
        errors.append(f"識別名「{key}」のオファーは既にあります")
    if not name.strip():
        errors.append("オファーの名前を入力してください")
    elif check_name and (message := name_error(name.strip(), Offer, offer, label="オファー")):
        errors.append(message)
    errors.extend(too_long(Offer, name=name.strip(), code=code.strip()))
    if kind not in OfferKind.values:
        errors.append("オファーの種類を選んでください")
    if kind in VALUELESS_OFFERS:
        value = 0  # nothing to count: whatever the value box held means nothing here
    elif not _whole(value) or value < 1:
        errors.append(
            "オファーの値は1以上の整数で入力してください(送料無料・プレゼントは入力不要です)"
        )
    elif kind == OfferKind.PERCENT_OFF and value > 100:
        errors.append("割引率は100%以下にしてください")
    elif kind == OfferKind.YEN_OFF and value > MAX_OFFER_AMOUNT:
        errors.append(f"円引きは1〜{MAX_OFFER_AMOUNT:,}円で入力してください")
    elif kind == OfferKind.POINTS and value > MAX_OFFER_AMOUNT:
        errors.append(f"ポイントは1〜{MAX_OFFER_AMOUNT:,}ポイントで入力してください")
    if not _whole(valid_days) or not 1 <= valid_days <= 365:
        errors.append("有効日数は1〜365で入力してください")
    if errors:
        raise ScenarioError(errors)
    before = {} if offer is None else _offer_values(offer)
    offer = offer or Offer(key=key)
    offer.name, offer.kind, offer.value = name.strip(), kind, value
    offer.code, offer.valid_days = code.strip(), valid_days
    offer.save()
    audit_record(
        actor=Actor.of(acting_user),
        action="offer.update" if before else "offer.create",
        instance=offer,
        customer_id=None,
        changes=diff(before, _offer_values(offer)),
    )
    return offer


def _offer_values(offer: Offer) -> dict[str, Any]:
    return {"name": offer.name, "kind": offer.kind, "value": offer.value, "code": offer.code, "valid_days": offer.valid_days}  # fmt: skip


@dataclass(frozen=True)
class StepUse:
    """A scenario whose steps use a template or an offer, and which steps (by key)."""

    scenario: Scenario
    steps: list[str]

    @property
    def places(self) -> list[str]:
        """Where in the scenario, as the pages list it (and SegmentUse.places does)."""
        return [f"ステップ「{key}」" for key in self.steps]

    @property
    def label(self) -> str:
        return f"「{self.scenario.name}」({'・'.join(self.places)})"


def _step_uses(steps: QuerySet[ScenarioStep]) -> list[StepUse]:
    by_scenario: dict[int, list[str]] = {}
    for scenario_id, key in steps.order_by("position", "pk").values_list("scenario_id", "key"):
        by_scenario.setdefault(scenario_id, []).append(key)
    return [
        StepUse(scenario, by_scenario[scenario.pk])
        for scenario in Scenario.objects.filter(pk__in=list(by_scenario)).order_by("name", "pk")
    ]


def template_uses(template: MessageTemplate) -> list[StepUse]:
    return _step_uses(ScenarioStep.objects.filter(template=template))


def offer_uses(offer: Offer) -> list[StepUse]:
    return _step_uses(ScenarioStep.objects.filter(offer=offer))


@transaction.atomic
def template_delete(*, template: MessageTemplate, acting_user: Any) -> None:
    """Delete a template no step uses, leaving an audit row of what it was. Refuses
    (ScenarioError, naming the scenarios and steps) one that is still used: the steps' foreign
    keys PROTECT it, and the refusal says where to change it instead of Django's error. The
    row is locked first, so a step saved in the meantime either shows up here or waits."""
    template = MessageTemplate.objects.select_for_update().get(pk=template.pk)
    _delete_unused(
        template,
        what="テンプレート",
        uses=template_uses(template),
        fix="先にシナリオの設定で、そのステップのテンプレートを変えるかステップを外してください。",
        action="message_template.delete",
        values={"key": template.key, **_template_values(template)},
        acting_user=acting_user,
    )


@transaction.atomic
def offer_delete(*, offer: Offer, acting_user: Any) -> None:
    """Delete an offer no step uses, leaving an audit row of what it was; refuses one that is
    still used (ScenarioError, naming the scenarios and steps), as template_delete does."""
    offer = Offer.objects.select_for_update().get(pk=offer.pk)
    _delete_unused(
        offer,
        what="オファー",
        uses=offer_uses(offer),
        fix="先にシナリオの設定で、そのステップからオファーを外してください。",
        action="offer.delete",
        values={"key": offer.key, **_offer_values(offer)},
        acting_user=acting_user,
    )


def _delete_unused(
    instance: MessageTemplate | Offer,
    *,
    what: str,
    uses: list[StepUse],
    fix: str,
    action: str,
    values: dict[str, Any],
    acting_user: Any,
) -> None:
    """Delete a template or offer with an audit row, or refuse (ScenarioError) while steps
    use it, naming them and what to change first."""
    if uses:
        used_by = "、".join(use.label for use in uses)
        raise ScenarioError(
            [
                f"{what}「{instance.name}」は次のシナリオで使われているため削除できません: {used_by}。{fix}"
            ]
        )
    audited_delete(actor=Actor.of(acting_user), action=action, instance=instance, values=values)


# --- scenarios --------------------------------------------------------------------------------

# Why 取引連絡 is refused for a promotional trigger or an offer (RELIABILITY S7, S8).
AD_NEEDS_CONSENT = "特定電子メール法により配信同意と配信停止の案内が必要です"
OFFER_NOT_TRANSACTIONAL = (
    "取引連絡のステップにはオファーを付けられません。クーポンや特典を載せたメッセージは"
    f"広告・宣伝にあたり、{AD_NEEDS_CONSENT}。オファーを外すか、目的を「販促」にしてください"
)


def _trigger_not_transactional(trigger: triggers.Trigger) -> str:
    allowed = "・".join(t.label for t in triggers.TRIGGERS.values() if t.transactional)
    return (
        f"目的「取引連絡」ではきっかけ「{trigger.label}」は使えません。お客様ご自身の取引や"
        f"会員情報についての連絡ではなく購入のおすすめ(広告・宣伝)にあたり、{AD_NEEDS_CONSENT}。"
        f"目的を「販促」にしてください(取引連絡に使えるきっかけ: {allowed})"
    )


def _holdout_not_transactional(percent: int) -> str:
    return (
        f"取引連絡ではホールドアウトを0%にしてください({percent}%になっています)。"
        "ホールドアウトのお客様には何も送られないため、その割合のお客様に出荷のお知らせなど"
        "ご自身の注文や会員情報についての連絡が届きません。効果の比較は販促のシナリオで行ってください"
    )


def purpose_problems(scenario: Scenario) -> list[str]:
    """Why a stored 取引連絡 scenario cannot be one — saved before validate_scenario refused
    it; empty when it can. Such a scenario is not activated again until fixed, and while it
    runs its promotional messages go out as 販促 (triggers.sending_purpose)."""
    return purpose_problems_of([scenario]).get(scenario.pk, [])


def purpose_problems_of(scenarios: list[Scenario]) -> dict[int, list[str]]:
    """purpose_problems of many scenarios (the list page) in one query, by pk; scenarios
    without a problem are left out, and without a 取引連絡 one no query is made."""
    transactional = [s for s in scenarios if s.purpose == Purpose.TRANSACTIONAL]
    if not transactional:
        return {}
    offer_steps: dict[int, list[str]] = {}
    for scenario_id, key in (
        ScenarioStep.objects.filter(
            scenario_id__in=[s.pk for s in transactional], offer__isnull=False
        )
        .order_by("position", "pk")
        .values_list("scenario_id", "key")
    ):
        offer_steps.setdefault(scenario_id, []).append(key)
    found: dict[int, list[str]] = {}
    for scenario in transactional:
        problems = []
        trigger = triggers.TRIGGERS.get(scenario.trigger_kind)
        if trigger is not None and not trigger.transactional:
            problems.append(_trigger_not_transactional(trigger))
        problems += [
            f"ステップ「{key}」: {OFFER_NOT_TRANSACTIONAL}"
            for key in offer_steps.get(scenario.pk, [])
        ]
        if scenario.holdout_percent:
            problems.append(_holdout_not_transactional(scenario.holdout_percent))
        if problems:
            found[scenario.pk] = problems
    return found


def _name_errors(name: str, scenario: Scenario | None) -> list[str]:
    """Refuses a name another scenario has (segments.name_error); lists show the keys of two
    scenarios that shared a name before this rule (selectors.scenario_choices)."""
    message = name_error(name, Scenario, scenario, label="シナリオ")
    return [message] if message else []


def _purpose_errors(purpose: Any, trigger: triggers.Trigger | None, holdout: Any) -> list[str]:
    if purpose != Purpose.TRANSACTIONAL:
        return []
    errors = []
    if trigger is not None and not trigger.transactional:
        errors.append(f"目的: {_trigger_not_transactional(trigger)}")
    if isinstance(holdout, int) and not isinstance(holdout, bool) and 0 < holdout <= 90:
        errors.append(f"ホールドアウト: {_holdout_not_transactional(holdout)}")
    return errors


def validate_scenario(
    spec: Mapping[str, Any], *, scenario: Scenario | None = None, check_name: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """Check a ScenarioSpec; returns it cleaned (defaults filled, params checked) and the
    problems found, each naming the field or step. `check_name=False`: the caller checked the
    name (a scenario file, against its final state, where two scenarios may swap names)."""
    errors: list[str] = []
    key = spec.get("key")
    if scenario is None:
        if message := _key_error("シナリオ", key, Scenario):
            errors.append(message)
        elif Scenario.objects.filter(key=key).exists():
            errors.append(f"識別名「{key}」のシナリオは既にあります")
    name = str(spec.get("name") or "").strip()
    if not name:
        errors.append("シナリオの名前を入力してください")
    errors.extend(too_long(Scenario, name=name))
    if check_name:
        errors.extend(_name_errors(name, scenario))
    trigger = spec.get("trigger") or {}
    if not isinstance(trigger, Mapping):
        trigger = {}
    kind = str(trigger.get("kind") or "")
    params, trigger_errors = triggers.validate_params(
        kind, {k: v for k, v in trigger.items() if k != "kind"}
    )
    errors.extend(f"きっかけ: {m}" for m in trigger_errors)
    audience = spec.get("audience") or None
    if audience and not Segment.objects.filter(key=audience).exists():
        errors.append(f"対象セグメント「{audience}」が見つかりません")
    purpose = spec.get("purpose", Purpose.MARKETING)
    # Left out, 販促 keeps 10% to measure against; 取引連絡 must reach everyone (_purpose_errors).
    holdout = spec.get("holdout_percent", 0 if purpose == Purpose.TRANSACTIONAL else 10)
    if not _whole(holdout) or not 0 <= holdout <= 90:
        errors.append("ホールドアウトは0〜90(%)の整数で入力してください")
    if purpose not in Purpose.values:
        errors.append("目的を選んでください(販促・取引連絡)")
    exit_on = list(spec.get("exit_on") or [])
    if any(rule not in ExitRule.values for rule in exit_on):
        errors.append("終了条件に選べない値があります")
    first_use = spec.get("first_use_days", 3)
    if not _whole(first_use) or not 0 <= first_use <= 60:
        errors.append("使用開始日(お届けの何日後)は0〜60で入力してください")
    attribution = spec.get("attribution_days", 30)
    if not _whole(attribution) or not 1 <= attribution <= 365:
        errors.append("効果の計測期間は1〜365日で入力してください")
    trigger_spec = triggers.TRIGGERS.get(kind)
    errors.extend(_purpose_errors(purpose, trigger_spec, holdout))
    steps, step_errors = _validate_steps(spec.get("steps") or [], trigger_spec, purpose)
    errors.extend(step_errors)
    cleaned = {
        "key": key if scenario is None else scenario.key,
        "name": name,
        "description": str(spec.get("description") or "").strip(),
        "trigger_kind": kind,
        "trigger_params": params,
        "audience": audience,
        "holdout_percent": holdout,
        "purpose": purpose,
        "exit_on": sorted(set(exit_on)),
        "first_use_days": first_use,
        "attribution_days": attribution,
        "steps": steps,
    }
    return cleaned, errors


@dataclass(frozen=True)
class _StepRefs:
    """What steps may refer to, read once per validation."""

    trigger: triggers.Trigger | None
    purpose: Any
    templates: dict[str, bool]  # key → whether it prints {{ offer… }} outside {% if offer %}
    template_names: dict[str, str]  # key → the name staff gave it (what messages say)
    offers: set[str]
    segments: set[str]


def _validate_steps(
    raw_steps: Any, trigger: triggers.Trigger | None, purpose: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    if not isinstance(raw_steps, list):
        return [], ["ステップの形式が正しくありません"]
    all_templates = list(MessageTemplate.objects.all())
    refs = _StepRefs(
        trigger=trigger,
        purpose=purpose,
        templates={t.key: _prints_offer(t) for t in all_templates},
        template_names={t.key: t.name for t in all_templates},
        offers=set(Offer.objects.values_list("key", flat=True)),
        segments=set(Segment.objects.values_list("key", flat=True)),
    )
    errors: list[str] = []
    if len(raw_steps) > MAX_STEPS:
        errors.append(f"ステップは{MAX_STEPS}個までです")
    steps: list[dict[str, Any]] = []
    seen: set[str] = set()
    for index, raw in enumerate(raw_steps, start=1):
        where = f"ステップ{index}"
        if not isinstance(raw, Mapping):
            errors.append(f"{where}: 形式が正しくありません")
            continue
        if raw.get("key") in seen:
            errors.append(f"{where}: 識別名「{raw.get('key')}」が重複しています")
        seen.add(str(raw.get("key")))
        step, step_errors = _validate_step(raw, where, refs)
        steps.append(step)
        errors.extend(step_errors)
    return steps, errors


def _prints_offer(template: MessageTemplate) -> bool:
    try:
        return prints_offer_unguarded(compile_stored(template))
    except TemplateRenderError:  # saved before a check it now fails: its own page says so
        return False


def _validate_step(
    raw: Mapping[str, Any], where: str, refs: _StepRefs
) -> tuple[dict[str, Any], list[str]]:
    errors = [m for m in (_key_error(where, raw.get("key"), ScenarioStep),) if m]
    anchor = raw.get("anchor", StepAnchor.TRIGGER)
    errors += _anchor_errors(anchor, refs.trigger)
    offset = raw.get("offset_days", 0)
    if not _whole(offset) or not -365 <= offset <= 1095:
        errors.append("日数は-365〜1095の整数で入力してください")
    elif offset < 0 and anchor in StepAnchor.values and anchor not in AHEAD_ANCHORS:
        errors.append(
            f"基準日「{StepAnchor(anchor).label}」より前には送れません"
            "(その日時はエントリーした時点で過ぎているため、毎回遅れて送ることになります)。"
            "日数は0以上にしてください。前もって送れる基準日はお届け日・使用開始日・"
            "次回お届け予定日です"
        )
    try:
        send_time = _parse_time(raw.get("send_time"))
    except ValueError:
        errors.append("送信時刻は 10:00 の形で入力してください")
        send_time = None
    repeat = raw.get("repeat_monthly", 0)
    if not _whole(repeat) or not 0 <= repeat <= 60:
        errors.append("毎月くり返す回数は0〜60で入力してください")
    elif repeat and send_time is None:
        errors.append("毎月くり返すステップには送信時刻を指定してください")
    channel = raw.get("channel")
    if channel not in Channel.values:
        errors.append("チャネルを選んでください")
    elif channel == Channel.BEST and refs.purpose == Purpose.TRANSACTIONAL:
        errors.append("取引連絡では「最適チャネル」は使えません。チャネルを指定してください")
    if raw.get("template") not in refs.templates:
        errors.append("テンプレートを選んでください")
    offer, condition = raw.get("offer") or None, raw.get("condition") or None
    if offer is not None and offer not in refs.offers:
        errors.append(f"オファー「{offer}」が見つかりません")
    elif offer is not None and refs.purpose == Purpose.TRANSACTIONAL:
        errors.append(OFFER_NOT_TRANSACTIONAL)
    elif offer is None and refs.templates.get(str(raw.get("template")), False):
        # Without an offer its {{ offer… }} print nothing: 「今ならでお届けします。
        # クーポンコード: (まで)」 would go out (and a coupon mail would pass as 取引連絡).
        errors.append(
            f"テンプレート「{refs.template_names[str(raw.get('template'))]}」はオファー({{{{ offer… }}}})を表示しますが、"
            "このステップにオファーがありません。オファーを選ぶか、オファーを使わない"
            "テンプレートにしてください"
        )
    if condition is not None and condition not in refs.segments:
        errors.append(f"送信条件のセグメント「{condition}」が見つかりません")
    step = {
        "key": raw.get("key"),
        "anchor": anchor,
        "offset_days": offset,
        "send_time": send_time,
        "repeat_monthly": repeat,
        "channel": channel,
        "template": raw.get("template"),
        "offer": offer,
        "condition": condition,
    }
    return step, [f"{where}: {m}" if not m.startswith(where) else m for m in errors]


# Anchors that can lie ahead of the enrollment: the delivery date (a shipment carries it once
# shipped — the cart's お届け日 — so a notice can go before it), first use (delivery + n days)
# and the next subscription delivery. A step may be set before only these; the trigger moment
# and the purchase are past when the customer is enrolled, and the shipment is unknown until
# it happens, so a step before them would always be late.
AHEAD_ANCHORS = (StepAnchor.DELIVERY, StepAnchor.FIRST_USE, StepAnchor.NEXT_DELIVERY)


def _anchor_errors(anchor: Any, trigger: triggers.Trigger | None) -> list[str]:
    if anchor not in StepAnchor.values:
        return ["基準日を選んでください"]
    if anchor in ORDER_ANCHORS and not (trigger and trigger.has_order):
        return [
            f"基準日「{StepAnchor(anchor).label}」は注文に関するきっかけ"
            "(初回購入・n回目の購入・出荷・お届け・購入なし・初回購入記念日)でのみ使えます"
        ]
    if anchor == StepAnchor.NEXT_DELIVERY and not (trigger and trigger.has_delivery_date):
        return ["基準日「次回お届け予定日」は定期のお届けに関するきっかけでのみ使えます"]
    return []


def _scenario_values(scenario: Scenario) -> dict[str, Any]:
    return {
        "name": scenario.name,
        "description": scenario.description,
        "trigger": [scenario.trigger_kind, scenario.trigger_params],
        "audience": scenario.audience.key if scenario.audience else None,
        "holdout_percent": scenario.holdout_percent,
        "purpose": scenario.purpose,
        "exit_on": scenario.exit_on,
        "first_use_days": scenario.first_use_days,
        "attribution_days": scenario.attribution_days,
        "steps": [
            f"{s.key}:{s.anchor}{s.offset_days:+d}d@{s.send_time or '-'}x{s.repeat_monthly}"
            f"/{s.channel}/{s.template.key}/{s.offer.key if s.offer else '-'}"
            f"/{s.condition.key if s.condition else '-'}"
            for s in scenario.steps.select_related("template", "offer", "condition")
        ],
    }


@transaction.atomic
def scenario_save(
    *,
    scenario: Scenario | None,
    spec: Mapping[str, Any],
    acting_user: Any,
    check_name: bool = True,
) -> Scenario:
    """Create or change a scenario and its steps (matched by step key).

    A step that already ran for someone cannot be removed (its history would point nowhere);
    pause the scenario or give the step a condition instead. An active scenario must keep at
    least one step.
    """
    cleaned, errors = validate_scenario(spec, scenario=scenario, check_name=check_name)
    if scenario is not None:
        errors.extend(_removed_step_errors(scenario, [s["key"] for s in cleaned["steps"]]))
        if scenario.status == ScenarioStatus.ACTIVE and not cleaned["steps"]:
            errors.append("稼働中のシナリオにはステップが1つ以上必要です")
        errors.extend(_holdout_change_errors(scenario, cleaned["holdout_percent"]))
        errors.extend(_trigger_change_errors(scenario, cleaned["trigger_kind"]))
    if errors:
        raise ScenarioError(errors)
    actor = Actor.of(acting_user)
    before = {} if scenario is None else _scenario_values(scenario)
    if scenario is None:
        scenario = Scenario(key=cleaned["key"], created_by_id=actor.user_id)
    elif (scenario.trigger_kind, scenario.trigger_params) != (
        cleaned["trigger_kind"],
        cleaned["trigger_params"],
    ):
        # A changed trigger starts afresh: its first check is made again (for "segment
        # entered", who is inside the new segment then is the baseline, not an entry).
        scenario.trigger_checked_at = None
    for name in ("name", "description", "trigger_kind", "trigger_params", "holdout_percent",
                 "purpose", "exit_on", "first_use_days", "attribution_days"):  # fmt: skip
        setattr(scenario, name, cleaned[name])
    scenario.audience = (
        Segment.objects.get(key=cleaned["audience"]) if cleaned["audience"] else None
    )
    scenario.save()
    _save_steps(scenario, cleaned["steps"])
    audit_record(
        actor=actor,
        action="scenario.update" if before else "scenario.create",
        instance=scenario,
        customer_id=None,
        changes=diff(before, _scenario_values(scenario)),
    )
    return scenario


def executed_step_keys(scenario: Scenario | None) -> set[str]:
    """The keys of the scenario's steps that ran for someone: their history points at them."""
    if scenario is None:
        return set()
    return set(
        scenario.steps.filter(dispatches__isnull=False).values_list("key", flat=True).distinct()
    )


def _removed_step_errors(scenario: Scenario, keys: list[str]) -> list[str]:
    """Why an executed step would be gone. One whose place holds a key the scenario does not
    have was renamed, not deleted, and is told so: the marketer changed its 識別名."""
    existing = list(scenario.steps.order_by("position", "pk").values_list("key", flat=True))
    errors = []
    for key in sorted(executed_step_keys(scenario) - set(keys), key=existing.index):
        at = existing.index(key)
        if at < len(keys) and keys[at] not in existing:
            errors.append(f"実行済みのステップの識別名は変えられません(「{key}」)")
        else:
            errors.append(
                f"ステップ「{key}」は実行済みのため削除できません"
                "(送信条件で止めるか、シナリオを停止してください)"
            )
    return errors


def holdout_locked(scenario: Scenario | None) -> bool:
    """Whether the scenario keeps its holdout % (but for 0%): it has enrolled anyone. Its lift
    pools every entry, and entries drawn at 10% and at 50% mixed together compare two
    different groups (the later period weighs more in one group than in the other). The edit
    form shows the lock before saving; scenario_save refuses the change."""
    return scenario is not None and Enrollment.objects.filter(scenario=scenario).exists()


def _holdout_change_errors(scenario: Scenario, percent: Any) -> list[str]:
    """A locked holdout % (holdout_locked) is refused. Setting 0% (stop holding out, send to
    everyone) stays allowed: the lift page then says the comparison group stopped growing."""
    if not _whole(percent) or percent in (scenario.holdout_percent, 0):
        return []
    if not holdout_locked(scenario):
        return []
    return [
        f"ホールドアウト: このシナリオには既にエントリーがあるため、割合は変えられません"
        f"({scenario.holdout_percent}%→{percent}%)。効果は配信グループとホールドアウトを比べて"
        "計測するため、途中で割合を変えると2つの割合の期間が混ざり、比較が偏ります。"
        "割合を変えるには新しいシナリオを作ってください(このシナリオは停止できます)。"
        "ホールドアウトをやめて全員に送る場合は0%にできます"
    ]


def _trigger_change_errors(scenario: Scenario, kind: Any) -> list[str]:
    """A scenario that enrolled anyone (holdout_locked) keeps its kind of trigger: its lift
    compares customers who entered for one reason, and a first purchase pooled with a segment
    entry is no longer one campaign. Its settings (the hours, the segment…) may change."""
    if kind in (scenario.trigger_kind, None, "") or not holdout_locked(scenario):
        return []
    before, after = (TriggerKind(k).label if k in TriggerKind.values else str(k)
                     for k in (scenario.trigger_kind, kind))  # fmt: skip
    return [
        f"きっかけ: このシナリオには既にエントリーがあるため、きっかけの種類は変えられません"
        f"({before}→{after})。効果は同じきっかけで入ったお客様どうしで比べて計測するためです。"
        "別のきっかけで送るには新しいシナリオを作ってください(このシナリオは停止できます)"
    ]


def _save_steps(scenario: Scenario, steps: list[dict[str, Any]]) -> None:
    existing = {s.key: s for s in scenario.steps.all()}
    templates = {t.key: t for t in MessageTemplate.objects.all()}
    offers = {o.key: o for o in Offer.objects.all()}
    segments = {s.key: s for s in Segment.objects.all()}
    keep = {s["key"] for s in steps}
    scenario.steps.exclude(key__in=keep).delete()
    for position, data in enumerate(steps, start=1):
        step = existing.get(data["key"]) or ScenarioStep(scenario=scenario, key=data["key"])
        step.position = position
        step.anchor = data["anchor"]
        step.offset_days = data["offset_days"]
        step.send_time = data["send_time"]
        step.repeat_monthly = data["repeat_monthly"]
        step.channel = data["channel"]
        step.template = templates[data["template"]]
        step.offer = offers[data["offer"]] if data["offer"] else None
        step.condition = segments[data["condition"]] if data["condition"] else None
        step.save()


@transaction.atomic
def scenario_activate(
    *,
    scenario: Scenario,
    acting_user: Any,
    at: dt.datetime | None = None,
    skip_paused_entrants: bool = False,
) -> Scenario:
    """Start (or resume) a scenario. Its triggers look at events from this moment on: a
    scenario activated today does not reach back into last month's orders.

    A 「セグメントに入った」 scenario's next check enrolls everyone in the segment who is not
    recorded as a member yet — after a pause, everyone who entered while it was stopped.
    `skip_paused_entrants` records them now as members already there (a baseline, as on a
    first check without 稼働開始時点の該当者も対象にする), so only later entrants are enrolled."""
    scenario = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if scenario.status == ScenarioStatus.ACTIVE:
        return scenario
    if scenario.status == ScenarioStatus.ARCHIVED:
        raise ScenarioError(
            [
                "アーカイブしたシナリオは稼働できません。元に戻して(停止中にして)から稼働させてください"
            ]
        )
    errors = []
    if not scenario.steps.exists():
        errors.append("ステップを1つ以上追加してから稼働させてください")
    trigger = triggers.TRIGGERS.get(scenario.trigger_kind)
    if trigger is None or not trigger.available():
        note = trigger.unavailable_note if trigger else ""
        errors.append(f"このきっかけは現在使えません。{note}")
    errors += purpose_problems(scenario)
    if errors:
        raise ScenarioError(errors)
    old = scenario.status
    scenario.status = ScenarioStatus.ACTIVE
    scenario.activated_at = at or timezone.now()
    scenario.save(update_fields=["status", "activated_at", "updated_at"])
    if skip_paused_entrants and resumes_with_entrants(scenario):
        triggers.refresh_segment_members(scenario, now=scenario.activated_at, baseline=True)
    audit_record(
        actor=Actor.of(acting_user),
        action="scenario.activate",
        instance=scenario,
        customer_id=None,
        changes={"status": [old, scenario.status]},
    )
    return scenario


@dataclass(frozen=True)
class CurrentMembers:
    """Who a 「セグメントに入った」 scenario with 稼働開始時点の該当者も対象にする enrolls on
    its first check: everyone in the segment (and in its audience, if it has one) right now
    who can enter at all (triggers.can_enter, the rule the scheduler enrolls by)."""

    segment: str  # its name
    count: int  # those who can enter (triggers.can_enter)
    held_out: int  # about how many of them the holdout draw keeps back (not sent)
    left_out: int  # in the segment (and audience) but never enrolled: withdrawn, merged away

    @property
    def treated(self) -> int:
        return self.count - self.held_out


def current_members_on_activation(scenario: Scenario, *, now: dt.datetime) -> CurrentMembers | None:
    """The customers activating `scenario` would enroll at once, or None when activating only
    reaches what happens from now on. The count is the segment builder's live count
    (segment_customers), narrowed to those the scenario may enroll (triggers.can_enter)."""
    if (
        scenario.trigger_kind != TriggerKind.SEGMENT_ENTERED
        or not scenario.trigger_params.get("include_existing")
        # Checked before (a paused scenario): the stays recorded then are the baseline.
        or scenario.trigger_checked_at is not None
    ):
        return None
    segment = Segment.objects.filter(key=scenario.trigger_params.get("segment")).first()
    if segment is None:
        return None
    members = segment_customers(segment.rules, now=now)
    count = triggers.can_enter(members, scenario, now=now).count()
    customers = members
    if scenario.audience is not None:
        customers = customers.filter(compile_validated(scenario.audience.rules, now=now))
    percent = triggers.holdout_percent(scenario)
    return CurrentMembers(
        segment=segment.name,
        count=count,
        held_out=round(count * percent / 100),
        left_out=customers.count() - count,
    )


def resumes_with_entrants(scenario: Scenario) -> bool:
    """Whether starting `scenario` picks up, at its next check, everyone who entered its
    segment since the last check: a 「セグメントに入った」 scenario checked before (paused)."""
    return (
        scenario.trigger_kind == TriggerKind.SEGMENT_ENTERED
        and scenario.trigger_checked_at is not None
        and Segment.objects.filter(key=scenario.trigger_params.get("segment")).exists()
    )


@dataclass(frozen=True)
class PausedEntrants:
    segment: str  # its name
    count: int  # those who can enter (triggers.can_enter)
    left_out: int  # entered the segment but are never enrolled: withdrawn, merged away


def entrants_while_paused(scenario: Scenario, *, now: dt.datetime) -> PausedEntrants | None:
    """Who resuming a paused 「セグメントに入った」 scenario enrolls at its next check: the
    segment's members not recorded as members of it (they entered while it was stopped), in
    its audience if it has one, who can enter at all (triggers.can_enter). None for any other
    scenario. Counted with the queries the scheduler adds and enrolls them with
    (triggers.segment_newcomers, triggers.can_enter)."""
    if not resumes_with_entrants(scenario):
        return None
    segment = Segment.objects.get(key=scenario.trigger_params.get("segment"))
    newcomers = triggers.segment_newcomers(scenario, segment.rules, now=now)
    count = triggers.can_enter(newcomers, scenario, now=now).count()
    if scenario.audience is not None:
        newcomers = newcomers.filter(compile_validated(scenario.audience.rules, now=now))
    return PausedEntrants(segment=segment.name, count=count, left_out=newcomers.count() - count)


@dataclass(frozen=True)
class WaitingMessages:
    """A scenario's messages already in the outbox (送信待ち): pausing does not stop them."""

    pending: int  # not yet taken by a worker: 取り消せる
    sending: int  # held by a worker right now: being sent, cannot be recalled
    up_to_id: int  # the newest message when counted: a cancel touches none queued since


def waiting_messages(
    queues: Sequence[outbox.QueueFilter], *, up_to_id: int | None = None
) -> WaitingMessages:
    """How many of the messages `queues` select (up to the message `up_to_id`, by default the
    newest now) a cancel would stop, and how many a worker is sending (a cancel leaves those)."""
    if up_to_id is None:
        up_to_id = outbox.queue_newest_id()
    now = timezone.now()
    pending = sending = 0
    for queue in queues:
        pending += outbox.queue_count(queue, action="cancel", up_to_id=up_to_id)
        claimed = queue.rows(OutboxStatus.CLAIMED)
        sending += claimed.filter(lease_until__gte=now, pk__lte=up_to_id).count()
    return WaitingMessages(pending=pending, sending=sending, up_to_id=up_to_id)


def template_queues(template: MessageTemplate) -> list[outbox.QueueFilter]:
    """The outbox filters selecting messages rendered from `template`: a message names its
    scenario and step key, one filter per scenario with its steps that use the template."""
    keys: dict[int, list[str]] = {}
    for scenario_id, key in template.steps.values_list("scenario_id", "key"):
        keys.setdefault(scenario_id, []).append(key)
    return [
        outbox.QueueFilter(scenario_id=scenario_id, step_keys=tuple(sorted(step_keys)))
        for scenario_id, step_keys in sorted(keys.items())
    ]


@transaction.atomic
def scenario_pause(*, scenario: Scenario, acting_user: Any) -> Scenario:
    """Stop a scenario: nothing new is enrolled or queued until it is activated again. Messages
    already in the outbox (waiting_messages) are still sent unless cancelled (outbox.outbox_cancel)."""
    scenario = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if scenario.status != ScenarioStatus.ACTIVE:
        return scenario
    old = scenario.status
    scenario.status = ScenarioStatus.PAUSED
    scenario.save(update_fields=["status", "updated_at"])
    audit_record(
        actor=Actor.of(acting_user),
        action="scenario.pause",
        instance=scenario,
        customer_id=None,
        changes={"status": [old, scenario.status]},
    )
    return scenario


@transaction.atomic
def scenario_archive(*, scenario: Scenario, acting_user: Any) -> Scenario:
    """Put a paused scenario away: hidden from the scenario list and from the choices to act
    on, never run, its history and lift kept. Only a 停止中 one: a running one is stopped
    first (on purpose, by a person), and a draft that never ran is deleted instead. Already
    archived: nothing changes."""
    scenario = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if scenario.status == ScenarioStatus.ARCHIVED:
        return scenario
    if scenario.status != ScenarioStatus.PAUSED:
        instead = (
            "先に停止してください。"
            if scenario.status == ScenarioStatus.ACTIVE
            else "使わない下書きは削除できます。"
        )
        raise ScenarioError(
            [
                f"アーカイブできるのは停止中のシナリオだけです(このシナリオは"
                f"{scenario.get_status_display()}です)。{instead}"
            ]
        )
    return _set_status(scenario, ScenarioStatus.ARCHIVED, "scenario.archive", acting_user)


@transaction.atomic
def scenario_unarchive(*, scenario: Scenario, acting_user: Any) -> Scenario:
    """Restore an archived scenario to 停止中 (never straight to running: starting it again
    is a separate, deliberate step). Not archived: nothing changes."""
    scenario = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if scenario.status != ScenarioStatus.ARCHIVED:
        return scenario
    return _set_status(scenario, ScenarioStatus.PAUSED, "scenario.unarchive", acting_user)


def scenario_set_status(
    *,
    scenario: Scenario,
    status: str,
    acting_user: Any,
    new: bool = False,
    skip_paused_entrants: bool = False,
) -> Scenario:
    """Move a scenario to `status` (a scenario file's `status:`) by the buttons of its page —
    稼働・停止・アーカイブ・元に戻す — with their rules, refusals (ScenarioError) and audit
    rows: a file may not archive a running scenario or a draft, nor start an archived one.
    There is no button back to 下書き, nor from 下書き to 停止中, so a file is refused those too.

    `new`: the scenario was created from the file just now (as a draft); it arrives as the
    file has it, copied from where it ran — 停止中 or アーカイブ — with an audit row of that.

    `skip_paused_entrants`: as 稼働させる's 「停止中に入った人は対象にせず再開する」 (scenario_activate)."""
    current = scenario.status
    if status == current:
        return scenario
    if status == ScenarioStatus.ACTIVE:
        return scenario_activate(
            scenario=scenario, acting_user=acting_user, skip_paused_entrants=skip_paused_entrants
        )
    if new and status in (ScenarioStatus.PAUSED, ScenarioStatus.ARCHIVED):
        action = "scenario.pause" if status == ScenarioStatus.PAUSED else "scenario.archive"
        return _set_status(scenario, ScenarioStatus(status), action, acting_user)
    if status == ScenarioStatus.ARCHIVED:
        return scenario_archive(scenario=scenario, acting_user=acting_user)
    if status == ScenarioStatus.PAUSED and current == ScenarioStatus.ACTIVE:
        return scenario_pause(scenario=scenario, acting_user=acting_user)
    if status == ScenarioStatus.PAUSED and current == ScenarioStatus.ARCHIVED:
        return scenario_unarchive(scenario=scenario, acting_user=acting_user)
    if status == ScenarioStatus.PAUSED:  # from a draft
        raise ScenarioError(
            [
                "下書きのシナリオは停止中にできません(停止中は稼働したシナリオの状態です)。"
                "稼働させるか、下書きのままにしてください"
            ]
        )
    raise ScenarioError(
        [
            f"{scenario.get_status_display()}のシナリオは下書きに戻せません。"
            "使わない場合は停止中にしてください"
        ]
    )


def _set_status(
    scenario: Scenario, status: ScenarioStatus, action: str, acting_user: Any
) -> Scenario:
    old = scenario.status
    scenario.status = status
    scenario.save(update_fields=["status", "updated_at"])
    audit_record(
        actor=Actor.of(acting_user),
        action=action,
        instance=scenario,
        customer_id=None,
        changes={"status": [old, scenario.status]},
    )
    return scenario


# --- deleting a scenario ----------------------------------------------------------------------


def scenario_history(scenario: Scenario) -> list[str]:
    """What keeps the scenario from being deleted, in a few words each; empty for one that
    recorded nothing — a draft made by mistake, or one started and stopped before anyone
    entered it.

    Its steps, enrollments (and through them every step record), held backlogs and segment
    memberships are all deleted with a scenario (CASCADE), and its outbox rows name it by a
    plain id: deleting one with an enrollment would erase who was sent what and the lift
    measured on it. Outbox rows are only written for an enrollment's step, so "no enrollment"
    covers them without reading the outbox (its scenario column has no index: seconds at a
    million customers). Segment memberships without an enrollment are only the trigger's
    memory of who was inside (the baseline), and the starts and stops are in the audit log,
    which a delete keeps. A running scenario is stopped first: its next tick could enroll
    someone while it is being deleted."""
    history = []
    if scenario.status == ScenarioStatus.ACTIVE:
        history.append("稼働中")
    if Enrollment.objects.filter(scenario=scenario).exists():
        history.append("お客様のエントリー")
    if Backlog.objects.filter(scenario=scenario).exists():
        history.append("遅れて期限が来た送信")
    return history


def scenario_history_message(scenario: Scenario, history: list[str]) -> str:
    """Why the scenario cannot be deleted, and what to do instead (it depends on its state)."""
    if history == ["稼働中"]:
        return (
            f"シナリオ「{scenario.name}」は稼働中のため削除できません。"
            "まだお客様のエントリーも送信もないので、停止すると削除できます。"
        )
    if scenario.status == ScenarioStatus.ACTIVE:
        instead = "使わない場合は停止してください。"
    elif scenario.status == ScenarioStatus.PAUSED:
        instead = (
            "使わない場合は停止したままにしてください(エントリーも送信も行われません)。"
            "一覧から隠すにはアーカイブしてください(記録と効果はそのまま見られます)。"
        )
    elif scenario.status == ScenarioStatus.ARCHIVED:
        instead = "アーカイブしたまま残してください。"
    else:
        instead = "使わない場合は下書きのままにしてください(稼働させるまで何も送られません)。"
    return (
        f"シナリオ「{scenario.name}」は配信の記録があるため削除できません"
        f"({'・'.join(history)})。記録と効果の計測結果は残しておく必要があります。{instead}"
    )


@transaction.atomic
def scenario_delete(*, scenario: Scenario, acting_user: Any) -> None:
    """Delete a scenario that recorded nothing (with its steps), leaving an audit row of what
    it was.
    Refuses (ScenarioError) one with any history (scenario_history). The row is locked like
    scenario_activate locks it, so a start pressed in another tab cannot slip in between the
    check and the delete."""
    scenario = Scenario.objects.select_for_update().get(pk=scenario.pk)
    if history := scenario_history(scenario):
        raise ScenarioError([scenario_history_message(scenario, history)])
    audited_delete(
        actor=Actor.of(acting_user),
        action="scenario.delete",
        instance=scenario,
        values={"key": scenario.key, **_scenario_values(scenario)},
    )


# --- held backlogs ----------------------------------------------------------------------------


def _decide_backlog(
    *, backlog: Backlog, acting_user: Any, status: Backlog.Status, dispatch_status: DispatchStatus
) -> Backlog:
    backlog = Backlog.objects.select_for_update().get(pk=backlog.pk)
    if backlog.status != Backlog.Status.PENDING:
        raise ScenarioError([f"この確認待ちは既に「{backlog.get_status_display()}」です"])
    actor = Actor.of(acting_user)
    changed = StepDispatch.objects.filter(
        backlog=backlog, status=DispatchStatus.PENDING_CONFIRMATION
    ).update(status=dispatch_status, decided_at=timezone.now())
    backlog.status = status
    backlog.decided_at = timezone.now()
    backlog.decided_by = actor.label
    backlog.save(update_fields=["status", "decided_at", "decided_by"])
    audit_record(
        actor=actor,
        action=f"scenario_backlog.{status}",
        instance=backlog,
        customer_id=None,
        changes={"status": [Backlog.Status.PENDING, status], "messages": [None, changed]},
    )
    return backlog


@transaction.atomic
def backlog_confirm(*, backlog: Backlog, acting_user: Any) -> Backlog:
    """Send the held messages: the next scheduler tick queues them (with today's date)."""
    return _decide_backlog(
        backlog=backlog,
        acting_user=acting_user,
        status=Backlog.Status.CONFIRMED,
        dispatch_status=DispatchStatus.APPROVED,
    )


@transaction.atomic
def backlog_discard(*, backlog: Backlog, acting_user: Any) -> Backlog:
    """Never send the held messages; they stay on record as discarded."""
    return _decide_backlog(
        backlog=backlog,
        acting_user=acting_user,
        status=Backlog.Status.DISCARDED,
        dispatch_status=DispatchStatus.DISCARDED,
    )


def pending_backlogs() -> list[Backlog]:
    return list(
        Backlog.objects.filter(status=Backlog.Status.PENDING)
        .select_related("scenario")
        .order_by("created_at")
    )


__all__ = [
    "ScenarioError",
    "StepUse",
    "backlog_confirm",
    "backlog_discard",
    "name_key",
    "offer_delete",
    "offer_save",
    "offer_uses",
    "purpose_problems",
    "purpose_problems_of",
    "scenario_activate",
    "scenario_delete",
    "scenario_history",
    "scenario_history_message",
    "scenario_pause",
    "scenario_save",
    "scenario_set_status",
    "template_delete",
    "template_save",
    "template_uses",
    "validate_scenario",
]
