"""Scenario pages: the list, the scenario page with its steps, held backlogs and measured
lift, the create/edit form, message templates (with a preview on a real customer) and offers.

Who may do what: marketers (and admins) build and run scenarios. Analysts may read the list
and each scenario's page — definitions and lift are aggregates, with no customer's personal
data — but change nothing. Operators work on calls and do not see these pages.

What was made by mistake can be deleted, once 「削除してよい」 is ticked: a stopped or draft
scenario nobody entered, and a template or offer no step uses. A scenario with an enrollment
keeps its history and lift;
a used template's or offer's page lists the steps that use it instead.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.contrib import messages
from django.db.models import Count
from django.http import Http404, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role, User
from kizuna.campaigns.automation import triggers
from kizuna.campaigns.automation.lift import ScenarioLift, scenario_lift
from kizuna.campaigns.automation.models import (
    Backlog,
    DispatchStatus,
    Enrollment,
    EnrollmentStatus,
    ExitRule,
    MessageTemplate,
    Offer,
    OfferKind,
    Scenario,
    ScenarioStatus,
    Segment,
    StepAnchor,
    StepDispatch,
    TickLog,
    TriggerKind,
)
from kizuna.campaigns.automation.selectors import enrollment_counts, timing_label
from kizuna.campaigns.automation.services import (
    CurrentMembers,
    PausedEntrants,
    ScenarioError,
    backlog_confirm,
    backlog_discard,
    current_members_on_activation,
    entrants_while_paused,
    executed_step_keys,
    holdout_locked,
    offer_delete,
    offer_save,
    offer_uses,
    purpose_problems,
    purpose_problems_of,
    scenario_activate,
    scenario_archive,
    scenario_delete,
    scenario_history,
    scenario_history_message,
    scenario_pause,
    scenario_save,
    scenario_unarchive,
    template_delete,
    template_queues,
    template_save,
    template_uses,
    waiting_messages,
)
from kizuna.campaigns.automation.templating import (
    MAX_RENDERED,
    TemplateRenderError,
    compile_template,
    customer_contexts,
    render_check,
    sample_context,
)
from kizuna.campaigns.models import Channel, DeliverySettings, Purpose
from kizuna.campaigns.outbox import QueueFilter, outbox_cancel, queue_newest_id
from kizuna.campaigns.unsubscribe import fill_unsubscribe_url, unsubscribe_url
from kizuna.customers.models import Customer
from kizuna.customers.selectors import customer_search
from kizuna.web.http import HtmxHttpRequest, confirmed_delete, int_or_text, wants_fragment
from kizuna.web.templatetags.kizuna import jdatetime

EDIT_ROLES = (Role.MARKETER,)
VIEW_ROLES = (Role.MARKETER, Role.ANALYST)


# --- reading the scenario form ----------------------------------------------------------------


def _param_value(param: triggers.Param, data: QueryDict) -> Any:
    name = f"param-{param.name}"
    if param.kind == "int":
        raw = data.get(name, "")
        return int_or_text(raw) if raw.strip() else None
    if param.kind == "bool":
        return name in data
    if param.kind == "choices":
        return [v for v in data.getlist(name) if v]
    return data.get(name) or None


STEP_FIELDS = ("key", "anchor", "offset_days", "send_time", "repeat_monthly", "channel",
               "template", "offer", "condition")  # fmt: skip


def spec_from_post(data: QueryDict) -> dict[str, Any]:
    """The ScenarioSpec the form describes; numbers that are not numbers are kept as typed."""
    kind = data.get("trigger_kind", "")
    trigger: dict[str, Any] = {"kind": kind}
    spec_trigger = triggers.TRIGGERS.get(kind)
    for param in spec_trigger.params if spec_trigger else ():
        value = _param_value(param, data)
        if value not in (None, "", []):
            trigger[param.name] = value
    steps = []
    for index in data.getlist("step"):
        prefix = f"step-{index}-"
        step: dict[str, Any] = {name: data.get(prefix + name, "") for name in STEP_FIELDS}
        step["offset_days"] = int_or_text(step["offset_days"] or "0")
        step["repeat_monthly"] = int_or_text(step["repeat_monthly"] or "0")
        step["send_time"] = step["send_time"] or None
        step["offer"] = step["offer"] or None
        step["condition"] = step["condition"] or None
        steps.append(step)
    return {
        "key": data.get("key", "").strip(),
        "name": data.get("name", ""),
        "description": data.get("description", ""),
        "trigger": trigger,
        "audience": data.get("audience") or None,
        "holdout_percent": int_or_text(data.get("holdout_percent", "10")),
        "purpose": data.get("purpose", Purpose.MARKETING),
        "exit_on": data.getlist("exit_on"),
        "first_use_days": int_or_text(data.get("first_use_days", "3")),
        "attribution_days": int_or_text(data.get("attribution_days", "30")),
        "steps": steps,
    }


def spec_of(scenario: Scenario) -> dict[str, Any]:
    from kizuna.campaigns.automation.yaml_io import scenario_entry

    return scenario_entry(scenario)


def _new_spec() -> dict[str, Any]:
    # No template chosen for the first step: the first by name may need an offer (or suit
    # another channel), and the form then could not be saved as it was shown.
    return {
        "key": "",
        "name": "",
        "description": "",
        "trigger": {"kind": TriggerKind.FIRST_PURCHASE.value},
        "audience": None,
        "holdout_percent": 10,
        "purpose": Purpose.MARKETING.value,
        "exit_on": [ExitRule.PURCHASE.value],
        "first_use_days": 3,
        "attribution_days": 30,
        "steps": [_blank_step(1, "")],
    }


def _blank_step(number: int, template: str) -> dict[str, Any]:
    return {
        "key": f"step-{number}",
        "anchor": StepAnchor.TRIGGER.value,
        "offset_days": 0,
        "send_time": "10:00",
        "repeat_monthly": 0,
        "channel": Channel.EMAIL.value,
        "template": template,
        "offer": None,
        "condition": None,
    }


def apply_form_action(spec: dict[str, Any], action: str) -> dict[str, Any]:
    verb, _, arg = action.partition(":")
    steps: list[dict[str, Any]] = spec["steps"]
    if verb == "add-step":
        template = steps[-1]["template"] if steps else ""
        taken = {s["key"] for s in steps}
        number = len(steps) + 1
        while f"step-{number}" in taken:
            number += 1
        steps.append(_blank_step(number, template))
    elif verb == "remove-step" and arg.isdigit() and int(arg) < len(steps):
        del steps[int(arg)]
    return spec


# --- showing the scenario form ----------------------------------------------------------------


@dataclass(frozen=True)
class Option:
    value: str
    label: str
    selected: bool = False
    disabled: bool = False


def _options(pairs: list[tuple[str, str]], selected: Any, *, blank: str = "") -> list[Option]:
    chosen = {str(v) for v in selected} if isinstance(selected, list) else {str(selected or "")}
    options = [Option("", blank, "" in chosen)] if blank else []
    return options + [Option(str(v), str(label), str(v) in chosen) for v, label in pairs]


def form_context(spec: dict[str, Any], *, scenario: Scenario | None) -> dict[str, Any]:
    kind = spec["trigger"].get("kind", "")
    trigger = triggers.TRIGGERS.get(kind)
    trigger_options = [
        Option(
            t.kind.value,
            t.label if t.available() else f"{t.label}(準備中)",
            t.kind.value == kind,
            not t.available(),
        )
        for t in triggers.TRIGGERS.values()
    ]
    params = []
    for param in trigger.params if trigger else ():
        value = spec["trigger"].get(param.name, param.default)
        choices = param.choices() if param.choices else []
        params.append(
            {
                "param": param,
                "value": "" if value is None else value,
                "options": _options(choices, value, blank="指定しない"),
            }
        )
    segments = list(Segment.objects.order_by("name").values_list("key", "name"))
    templates = list(MessageTemplate.objects.order_by("name").values_list("key", "name"))
    offers = list(Offer.objects.order_by("name").values_list("key", "name"))
    # Their 識別名 is what their history points at: shown, not changeable (scenario_save
    # refuses a change too, for a form posted without this).
    executed = executed_step_keys(scenario)
    steps = []
    for index, step in enumerate(spec["steps"]):
        steps.append(
            {
                "index": index,
                "values": step,
                "executed": step.get("key") in executed,
                "anchors": _options(list(StepAnchor.choices), step.get("anchor")),
                "channels": _options(list(Channel.choices), step.get("channel")),
                "templates": _options(templates, step.get("template"), blank="選んでください"),
                "offers": _options(offers, step.get("offer"), blank="なし"),
                "conditions": _options(segments, step.get("condition"), blank="なし(全員)"),
            }
        )
    return {
        "spec": spec,
        "scenario": scenario,
        "trigger": trigger,
        "trigger_options": trigger_options,
        "params": params,
        "audiences": _options(segments, spec.get("audience"), blank="全員(絞り込まない)"),
        "purposes": _options(list(Purpose.choices), spec.get("purpose")),
        "exits": _options(list(ExitRule.choices), spec.get("exit_on") or []),
        "steps": steps,
        "has_templates": bool(templates),
        # Shown before saving, not only as scenario_save's refusal after it.
        "holdout_locked": holdout_locked(scenario),
    }


def _form_page(
    request: HtmxHttpRequest,
    spec: dict[str, Any],
    *,
    scenario: Scenario | None,
    errors: list[str] | None = None,
    status: int = 200,
    opened: str | None = None,
) -> HttpResponse:
    context = {
        **form_context(spec, scenario=scenario),
        "errors": errors or [],
        # The version the form was opened on travels with it through every re-draw, so a
        # save can tell whether someone saved the scenario in the meantime.
        "opened": opened if opened is not None else request.POST.get("opened", _version(scenario)),
    }
    return render(request, "web/scenarios/form.html", context, status=status)


def _version(saved: Scenario | MessageTemplate | None) -> str:
    """When a scenario or template was last saved, as the edit form carries it."""
    return saved.updated_at.isoformat() if saved is not None else ""


def _saved_meanwhile(saved: Scenario | MessageTemplate, opened: str, what: str) -> str | None:
    """Why a save would overwrite a save made after this form was opened (in another tab, or
    by a colleague), or None. Saving the whole form again would silently drop that change —
    a step added there, a text rewritten — so the marketer is told and the second press of
    保存する overwrites knowingly."""
    if opened == _version(saved):
        return None
    return (
        f"この{what}は、この画面を開いた後に別の画面で保存されています"
        f"({jdatetime(saved.updated_at)})。このまま保存するとその変更は失われます。"
        f"別のタブで{what}を開いて確かめ、上書きしてよければもう一度「保存する」を押してください。"
    )


# --- describing a scenario --------------------------------------------------------------------


def trigger_label(scenario: Scenario) -> str:
    trigger = triggers.TRIGGERS.get(scenario.trigger_kind)
    if trigger is None:
        return scenario.trigger_kind
    parts = []
    for param in trigger.params:
        value = scenario.trigger_params.get(param.name)
        if value in (None, "", [], False):
            continue
        if param.choices:
            names = dict(param.choices())
            shown = (
                "・".join(names.get(str(v), str(v)) for v in value)
                if isinstance(value, list)
                else names.get(str(value), str(value))
            )
        else:
            shown = "はい" if value is True else str(value)
        parts.append(f"{param.label}: {shown}")
    return trigger.label + (f"({'、'.join(parts)})" if parts else "")


@dataclass(frozen=True)
class TickProblem:
    """A scenario's error in the latest scheduler tick, for the marketer: what it means and
    what to do (`lead`), and the details (the template's own messages, or the error)."""

    at: dt.datetime
    lead: str
    details: list[str]
    technical: bool


def tick_problems() -> dict[str, TickProblem]:
    """Each scenario that failed in the latest finished scheduler tick, by key.

    The scheduler records a failing scenario in the tick's report and goes on with the others
    (scheduler.ScenarioReport.error); without this, a scenario whose every tick fails looks
    稼働中 with a scheduler that ran 完了. A scenario that ran fine since, or is paused (and
    so not in the tick), shows nothing."""
    log = (
        TickLog.objects.exclude(status=TickLog.Status.RUNNING)
        # `now` is indexed, and is when the tick started (or the moment given to --now)
        .order_by("-now")
        .only("started_at", "report")
        .first()
    )
    report = log.report if log is not None else None
    if log is None or not isinstance(report, dict):
        return {}
    problems: dict[str, TickProblem] = {}
    for entry in report.get("scenarios") or []:
        if not isinstance(entry, dict) or not entry.get("error"):
            continue
        problems[str(entry.get("key"))] = _tick_problem(log.started_at, str(entry["error"]))
    return problems


TEMPLATE_FAILURE = "TemplateRenderError: "


def _tick_problem(at: dt.datetime, error: str) -> TickProblem:
    # The report holds "ExceptionName: message"; a template's message is Japanese already.
    if error.startswith(TEMPLATE_FAILURE):
        return TickProblem(
            at=at,
            lead=(
                "テンプレートを表示できないため、このシナリオのメッセージは送られていません。"
                "メッセージテンプレートを直すと、次の実行(毎分)で再開します。"
            ),
            details=error.removeprefix(TEMPLATE_FAILURE).splitlines(),
            technical=False,
        )
    return TickProblem(
        at=at,
        lead=(
            "このシナリオの処理中にエラーが起きたため、メッセージは送られていません。"
            "続くようなら、システム管理者に次の内容を伝えてください。"
        ),
        details=[error],
        technical=True,
    )


# --- views: scenarios -------------------------------------------------------------------------


@allow_roles(*VIEW_ROLES)
@never_cache
@require_GET
def scenario_list(request: HtmxHttpRequest) -> HttpResponse:
    """The scenarios; their enrollment counts come after the page (scenario_counts)."""
    # Archived ones are put away: listed only on their own tab (アーカイブ(N件)).
    archived = request.GET.get("archived") == "1"
    listed = Scenario.objects.select_related("audience").order_by("name", "pk")
    if archived:
        listed = listed.filter(status=ScenarioStatus.ARCHIVED)
    else:
        listed = listed.exclude(status=ScenarioStatus.ARCHIVED)
    scenarios = list(listed)
    archived_count = (
        len(scenarios)
        if archived
        else Scenario.objects.filter(status=ScenarioStatus.ARCHIVED).count()
    )
    problems = tick_problems()
    # 取引連絡 ones stored before a rule refused them (one query for all, not one per row).
    to_fix = purpose_problems_of(scenarios)
    rows = [
        {
            "scenario": s,
            "trigger": trigger_label(s),
            "problem": problems.get(s.key),
            "purpose_problems": to_fix.get(s.pk, []),
            "purpose_title": "\n".join(to_fix.get(s.pk, [])),
        }
        for s in scenarios
    ]
    backlogs = list(
        Backlog.objects.filter(status=Backlog.Status.PENDING).select_related("scenario")
    )
    return render(
        request,
        "web/scenarios/list.html",
        {
            "rows": rows,
            "backlogs": backlogs,
            "can_edit": _can_edit(request),
            "archived": archived,
            "archived_count": archived_count,
        },
    )


@allow_roles(*VIEW_ROLES)
@never_cache
@require_GET
def scenario_counts(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """One list row's two enrollment counts (treated, holdout) as its two table cells, loaded
    after the list, one request per row. Counting the whole enrollment table in one GROUP BY
    takes most of a second at a million customers and held the list back; one scenario's
    count reads only its own enrollments, found through the (scenario, status) index, so small
    scenarios show at once and the largest holds back only its own row."""
    scenario = get_object_or_404(Scenario, pk=pk)
    counts = enrollment_counts(scenario.pk)
    return HttpResponse(
        format_html(
            '<td class="num">{}</td><td class="num">{}</td>',
            f"{counts.get(False, 0):,}",
            f"{counts.get(True, 0):,}",
        )
    )


def _can_edit(request: HtmxHttpRequest) -> bool:
    user = request.user
    return isinstance(user, User) and user.has_role(Role.ADMIN, *EDIT_ROLES)


@dataclass(frozen=True)
class LiftRow:
    label: str
    kind: str  # "rate" or "yen"
    treated_n: int
    holdout_n: int
    treated: float
    holdout: float
    diff: float
    low: float
    high: float
    relative: float | None
    enough: bool
    significant: bool


def lift_rows(lift: ScenarioLift) -> list[LiftRow]:
    """The four lift metrics as table rows: rates in %, money in yen."""
    rows = [
        LiftRow(
            label=label,
            kind="rate",
            treated_n=metric.treated_n,
            holdout_n=metric.holdout_n,
            treated=metric.treated_rate * 100,
            holdout=metric.holdout_rate * 100,
            diff=metric.diff * 100,
            low=metric.low * 100,
            high=metric.high * 100,
            relative=metric.relative,
            enough=metric.enough_data,
            significant=metric.significant,
        )
        for label, metric in (
            (f"購入率({lift.attribution_days}日以内)", lift.conversion),
            ("リピート率(90日以内に2回以上)", lift.repeat),
        )
    ]
    rows += [
        LiftRow(
            label=label,
            kind="yen",
            treated_n=mean.treated_n,
            holdout_n=mean.holdout_n,
            treated=mean.treated_mean,
            holdout=mean.holdout_mean,
            diff=mean.diff,
            low=mean.low,
            high=mean.high,
            relative=mean.relative,
            enough=mean.enough_data,
            significant=mean.significant,
        )
        for label, mean in (
            (f"1人あたり売上({lift.attribution_days}日以内)", lift.revenue),
            ("90日LTV", lift.ltv90),
        )
    ]
    return rows


@allow_roles(*VIEW_ROLES)
@never_cache
@require_GET
def scenario_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    scenario = get_object_or_404(Scenario.objects.select_related("audience"), pk=pk)
    steps = list(scenario.steps.select_related("template", "offer", "condition"))
    dispatch_counts: dict[tuple[int, str], int] = {
        (row["step_id"], row["status"]): row["n"]
        for row in StepDispatch.objects.filter(step__scenario=scenario)
        .order_by()
        .values("step_id", "status")
        .annotate(n=Count("pk"))
    }
    rules = DeliverySettings.load()
    quiet = (rules.quiet_start, rules.quiet_end)
    step_rows = [
        {
            "step": step,
            "timing": timing_label(step, scenario, quiet=quiet),
            "queued": dispatch_counts.get((step.pk, DispatchStatus.QUEUED), 0),
            "held_out": dispatch_counts.get((step.pk, DispatchStatus.HELD_OUT), 0),
            "skipped": dispatch_counts.get((step.pk, DispatchStatus.SKIPPED), 0),
            "pending": dispatch_counts.get((step.pk, DispatchStatus.PENDING_CONFIRMATION), 0),
        }
        for step in steps
    ]
    can_edit = _can_edit(request)
    statuses = dict(
        Enrollment.objects.filter(scenario=scenario)
        .order_by()
        .values_list("status")
        .annotate(n=Count("pk"))
        .values_list("status", "n")
    )
    problems = purpose_problems(scenario)
    context = {
        "scenario": scenario,
        "trigger": trigger_label(scenario),
        "exit_labels": [ExitRule(e).label for e in scenario.exit_on if e in ExitRule.values],
        "steps": step_rows,
        "enrollments": {
            "active": statuses.get(EnrollmentStatus.ACTIVE, 0),
            "completed": statuses.get(EnrollmentStatus.COMPLETED, 0),
            "exited": statuses.get(EnrollmentStatus.EXITED, 0),
        },
        "backlog": Backlog.objects.filter(scenario=scenario, status=Backlog.Status.PENDING).first(),
        "last_tick": TickLog.objects.order_by("-started_at").first(),
        "problem": tick_problems().get(scenario.key),
        "purpose_problems": problems,
        # Offer steps and promotional triggers go out as 販促; a holdout is only not sent.
        "sent_as_marketing": len(problems) > (1 if scenario.holdout_percent else 0),
        "can_edit": can_edit,
        # Only editors see the 削除 card, so only they pay for the history check.
        "cannot_delete": _cannot_delete(scenario) if can_edit else "",
    }
    return render(request, "web/scenarios/detail.html", context)


def _cannot_delete(scenario: Scenario) -> str:
    """Why the scenario cannot be deleted, or "" for one that recorded nothing."""
    history = scenario_history(scenario)
    return scenario_history_message(scenario, history) if history else ""


NO_HOLDOUT_WARNING = (
    "ホールドアウトが0%のため、このシナリオの効果(購入率・売上の差)は計測できません。"
    "比べる相手(送らないお客様)がいないので、待っても判定は出ません。"
    "効果を見るには、ホールドアウトを1%以上(通常は10%)にしてください。"
)


def _save_scenario(request: HtmxHttpRequest, scenario: Scenario | None) -> HttpResponse:
    spec = spec_from_post(request.POST)
    if scenario is not None and (
        conflict := _saved_meanwhile(scenario, request.POST.get("opened", ""), "シナリオ")
    ):
        opened = _version(scenario)
        return _form_page(
            request, spec, scenario=scenario, errors=[conflict], status=409, opened=opened
        )
    before = _step_plans(scenario)
    try:
        saved = scenario_save(scenario=scenario, spec=spec, acting_user=request.user)
    except ScenarioError as exc:
        return _form_page(request, spec, scenario=scenario, errors=exc.messages, status=400)
    messages.success(request, f"シナリオ「{saved.name}」を保存しました。")
    # Messages are timed and rendered when queued: those waiting keep the step as it was.
    after = _step_plans(saved)
    changed = sorted(key for key, plan in before.items() if after.get(key, plan) != plan)
    if changed:
        queue = QueueFilter(scenario_id=saved.pk, step_keys=tuple(changed))
        waiting = waiting_messages([queue])
        if waiting.pending:
            messages.warning(
                request,
                f"変更したステップ({'・'.join(changed)})の送信待ち{waiting.pending:,}件は、"
                "変更前のタイミングと内容のまま送信されます。送らない場合は、「停止する」で"
                "送信待ちの取り消しを選んでください。",
            )
    if saved.holdout_percent == 0 and saved.purpose == Purpose.MARKETING:
        # Allowed (a shop may want everyone to get it), but the lift is then unmeasurable.
        messages.warning(request, NO_HOLDOUT_WARNING)
    # (取引連絡 with a holdout is refused by validate_scenario: the holdout would never get it.)
    return redirect("scenarios:detail", pk=saved.pk)


def _step_plans(scenario: Scenario | None) -> dict[str, tuple[Any, ...]]:
    """Each step's timing, channel and template by key: what a queued message was made from."""
    if scenario is None:
        return {}
    fields = ("anchor", "offset_days", "send_time", "repeat_monthly", "channel", "template_id",
              "offer_id")  # fmt: skip
    return {key: tuple(plan) for key, *plan in scenario.steps.values_list("key", *fields)}


@allow_roles(*VIEW_ROLES)
@never_cache
@require_GET
def scenario_lift_part(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The scenario page's lift table, loaded after the page: at a million customers a large
    scenario's lift takes seconds to compute, and the rest of the page should not wait."""
    scenario = get_object_or_404(Scenario, pk=pk)
    lift = scenario_lift(scenario, now=timezone.now())
    no_holdout = scenario.holdout_percent == 0
    context = {
        "scenario": scenario,
        "lift": lift,
        "lift_rows": lift_rows(lift),
        # Nobody is held out, so nobody ever will be: waiting cannot make the lift measurable
        # and the page must not say データ不足 as if it could.
        "unmeasurable": no_holdout and not lift.enrolled_holdout,
        # Held out before the change: their group stops growing.
        "holdout_stopped": no_holdout and bool(lift.enrolled_holdout),
        # Only editors have the 稼働させる button the empty state may point to.
        "can_edit": _can_edit(request),
    }
    return render(request, "web/scenarios/_lift.html", context)


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def scenario_create(request: HtmxHttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _save_scenario(request, None)
    return _form_page(request, _new_spec(), scenario=None)


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def scenario_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    scenario = get_object_or_404(Scenario, pk=pk)
    if scenario.status == ScenarioStatus.ARCHIVED:
        messages.error(
            request, "アーカイブしたシナリオは編集できません。元に戻してから編集してください。"
        )
        return redirect("scenarios:detail", pk=pk)
    if request.method == "POST":
        return _save_scenario(request, scenario)
    return _form_page(request, spec_of(scenario), scenario=scenario)


@allow_roles(*EDIT_ROLES)
@never_cache
@require_POST
def scenario_form_refresh(request: HtmxHttpRequest) -> HttpResponse:
    """Re-draw the form after "ステップを追加"/"削除" or a change of trigger, keeping all input."""
    spec = apply_form_action(spec_from_post(request.POST), request.POST.get("action", ""))
    pk = request.POST.get("scenario", "")
    scenario = Scenario.objects.filter(pk=pk).first() if pk.isdigit() else None
    if wants_fragment(request):
        context = form_context(spec, scenario=scenario)
        return render(request, "web/scenarios/_form_body.html", context)
    return _form_page(request, spec, scenario=scenario)


@allow_roles(*EDIT_ROLES)
@require_POST
def scenario_activate_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Start a scenario. One that would enroll everyone already in its segment at once (セグメ
    ントに入った with 稼働開始時点の該当者も対象にする) first shows how many that is, and starts
    only when that page is confirmed: one click must not send a coupon to hundreds."""
    scenario = get_object_or_404(Scenario.objects.select_related("audience"), pk=pk)
    current = (
        current_members_on_activation(scenario, now=timezone.now())
        if scenario.status != ScenarioStatus.ACTIVE
        else None
    )
    # Resuming a paused 「セグメントに入った」 scenario: everyone who entered the segment while
    # it was stopped looks new to its next check. Asked, when there are any: send to them too
    # ("send"), or record them as members already there ("skip").
    paused = (
        entrants_while_paused(scenario, now=timezone.now())
        if scenario.status == ScenarioStatus.PAUSED
        else None
    )
    choice = request.POST.get("paused_entrants")
    needs_confirmation = (current is not None and request.POST.get("confirmed") != "1") or (
        paused is not None and paused.count > 0 and choice not in ("send", "skip")
    )
    if needs_confirmation:
        first = scenario.steps.order_by("position", "pk").first()
        context = {
            "scenario": scenario,
            "current": current,
            "paused": paused,
            "first_timing": timing_label(first, scenario) if first else "",
        }
        return render(request, "web/scenarios/activate_confirm.html", context)
    # None came in while stopped (as counted): recorded anyway, so that is still true.
    skip = paused is not None and choice != "send"
    resumed = scenario.activated_at is not None
    try:
        scenario_activate(scenario=scenario, acting_user=request.user, skip_paused_entrants=skip)
    except ScenarioError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        message = _activated_message(scenario, current, resumed=resumed, paused=paused, skip=skip)
        messages.success(request, message)
    return redirect("scenarios:detail", pk=pk)


def _activated_message(
    scenario: Scenario,
    current: CurrentMembers | None,
    *,
    resumed: bool,
    paused: PausedEntrants | None = None,
    skip: bool = False,
) -> str:
    """What starting the scenario does, as it will happen."""
    if paused is not None:
        if skip:
            return (
                "稼働を再開しました。停止中にセグメントに入ったお客様は対象にせず、"
                "これ以降に新しく該当したお客様から対象になります。"
            )
        return (
            f"稼働を再開しました。次回のスケジューラ実行で、停止中にセグメントに入った"
            f"{paused.count:,}人がエントリーします。最初のステップはタイミングが来た人から送信されます。"
            "これ以降に新しく該当したお客様も対象になります。"
        )
    if current is not None:
        held = (
            f"(うち約{current.held_out:,}人はホールドアウトで送りません)"
            if current.held_out
            else ""
        )
        return (
            f"稼働を開始しました。次回のスケジューラ実行で、今セグメントに該当する{current.count:,}人"
            f"がエントリーします{held}。最初のステップはタイミングが来た人から送信されます。"
            "これ以降に新しく該当したお客様も対象になります。"
        )
    if scenario.trigger_kind == TriggerKind.SEGMENT_ENTERED and scenario.trigger_checked_at is None:
        return (
            "稼働を開始しました。今セグメントに該当しているお客様は対象にならず、"
            "これ以降に新しく該当したお客様から対象になります。"
        )
    if not resumed:
        return "稼働を開始しました。これ以降のきっかけから対象になります。"
    return (
        "稼働を再開しました。停止中に起きたきっかけは対象にならず、これ以降のきっかけから対象になります。"
        "すでにエントリーしているお客様の、停止中に送信予定が過ぎたメッセージは次回のスケジューラ実行で送られます"
        "(予定から大きく遅れたものは送らずに「確認待ちのメッセージ」に入り、送るかどうかを確認できます)。"
    )


@allow_roles(*EDIT_ROLES)
@require_POST
def scenario_pause_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Stop a scenario. Stopping does not take back what it already queued (送信待ち): when
    there is any, a page first asks whether to cancel those too or let them go as planned —
    a 停止しました after which hundreds of mails still go out is not what the marketer meant,
    and the queue page that can cancel them is for admins only."""
    scenario = get_object_or_404(Scenario, pk=pk)
    was = scenario.status
    queue = QueueFilter(scenario_id=scenario.pk)
    choice = request.POST.get("waiting")
    waiting = waiting_messages([queue]) if was == ScenarioStatus.ACTIVE else None
    if waiting is not None and waiting.pending and choice not in ("cancel", "keep"):
        return render(
            request,
            "web/scenarios/pause_confirm.html",
            {"scenario": scenario, "waiting": waiting},
        )
    scenario = scenario_pause(scenario=scenario, acting_user=request.user)
    if waiting is None:
        # A draft or an already stopped scenario: nothing was running, nothing changed.
        messages.info(
            request,
            f"このシナリオは{scenario.get_status_display()}のため、停止するものはありません。",
        )
    elif choice == "cancel" and waiting.pending:
        cause = f"シナリオ「{scenario.name}」の停止により"
        messages.success(request, "停止しました。" + _cancel_waiting(request, [queue], cause))
    elif waiting.pending:
        messages.success(
            request, f"停止しました。送信待ちの{waiting.pending:,}件は予定どおり送信されます。"
        )
    else:
        messages.success(request, "停止しました。新しいエントリーと送信は行われません。")
    return redirect("scenarios:detail", pk=pk)


def _cancel_waiting(request: HtmxHttpRequest, queues: list[QueueFilter], cause: str) -> str:
    """Cancel the waiting messages `queues` select, up to the newest the confirmation counted,
    and say how many: those a worker took meanwhile are sent, and the message says so."""
    posted = int_or_text(request.POST.get("up_to_id", ""))
    up_to_id = posted if isinstance(posted, int) else queue_newest_id()
    done = sum(
        outbox_cancel(acting_user=request.user, queue=queue, up_to_id=up_to_id, cause=cause)
        for queue in queues
    )
    left = waiting_messages(queues, up_to_id=up_to_id)
    message = f"送信待ちの{done:,}件を取り消しました。"
    if left.sending:
        message += f"送信中の{left.sending:,}件はすでに送信が始まっているため取り消せません。"
    return message


@allow_roles(*EDIT_ROLES)
@require_POST
def scenario_archive_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    scenario = get_object_or_404(Scenario, pk=pk)
    if request.POST.get("sure") != "1":
        messages.error(
            request,
            "アーカイブするには「アーカイブしてよい」にチェックを入れてから押してください。",
        )
        return redirect("scenarios:detail", pk=pk)
    try:
        scenario_archive(scenario=scenario, acting_user=request.user)
    except ScenarioError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(
            request,
            f"シナリオ「{scenario.name}」をアーカイブしました。一覧の「アーカイブ」から見られます。",
        )
    return redirect("scenarios:detail", pk=pk)


@allow_roles(*EDIT_ROLES)
@require_POST
def scenario_unarchive_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    scenario = get_object_or_404(Scenario, pk=pk)
    was = scenario.status
    scenario_unarchive(scenario=scenario, acting_user=request.user)
    if was == ScenarioStatus.ARCHIVED:
        messages.success(
            request, "元に戻しました(停止中です)。再開するには「稼働させる」を押してください。"
        )
    else:
        messages.info(request, "このシナリオはアーカイブされていません。")
    return redirect("scenarios:detail", pk=pk)


@allow_roles(*EDIT_ROLES)
@require_POST
def scenario_delete_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return confirmed_delete(
        request,
        Scenario.objects.filter(pk=pk).first(),
        what="シナリオ",
        delete=lambda scenario: scenario_delete(scenario=scenario, acting_user=request.user),
        refused=ScenarioError,
        back=reverse("scenarios:detail", args=[pk]),
        listing="scenarios:list",
    )


@allow_roles(*EDIT_ROLES)
@require_POST
def backlog_decide(request: HtmxHttpRequest, pk: int, decision: str) -> HttpResponse:
    backlog = get_object_or_404(Backlog, pk=pk)
    try:
        if decision == "confirm":
            backlog_confirm(backlog=backlog, acting_user=request.user)
            messages.success(
                request,
                f"{backlog.size:,}件の送信を承認しました。次回のスケジューラ実行で送信キューに入ります。",
            )
        elif request.POST.get("sure") != "1":
            # Discarding cannot be undone: one click on the wrong button must not do it.
            messages.error(
                request,
                "破棄するには「破棄してよい」にチェックを入れてから押してください"
                "(破棄したメッセージは元に戻せません)。",
            )
        else:
            backlog_discard(backlog=backlog, acting_user=request.user)
            messages.success(request, f"{backlog.size:,}件を破棄しました。送信されません。")
    except ScenarioError as exc:
        messages.error(request, " ".join(exc.messages))
    return redirect("scenarios:detail", pk=backlog.scenario_id)


# --- views: templates -------------------------------------------------------------------------


@allow_roles(*EDIT_ROLES)
@never_cache
@require_GET
def template_list(request: HtmxHttpRequest) -> HttpResponse:
    templates = MessageTemplate.objects.annotate(used=Count("steps")).order_by("name", "pk")
    return render(request, "web/scenarios/templates.html", {"templates": templates})


def _template_values(request: HtmxHttpRequest, template: MessageTemplate | None) -> dict[str, str]:
    # `customer` is who the preview shows, not part of the template: kept across a refused
    # save so the marketer need not look the customer up again.
    if request.method == "POST":
        fields = ("key", "name", "subject", "text", "html", "customer")
        return {k: request.POST.get(k, "") for k in fields}
    if template is None:
        return {"key": "", "name": "", "subject": "", "text": "", "html": "", "customer": ""}
    return {
        "key": template.key,
        "name": template.name,
        "subject": template.subject,
        "text": template.text,
        "html": template.html,
        "customer": "",
    }


def _template_page(
    request: HtmxHttpRequest,
    template: MessageTemplate | None,
    errors: list[str] | None = None,
    *,
    status: int = 400,
    opened: str | None = None,
) -> HttpResponse:
    context = {
        "template": template,
        "values": _template_values(request, template),
        "errors": errors or [],
        "context_keys": TEMPLATE_VARIABLES,
        # A body longer than any message may render is refused on save anyway; capped in the
        # browser too, so a huge paste is cut there instead of overflowing Django's request
        # size limit (a 400 page that loses everything typed).
        "max_chars": MAX_RENDERED,
        "opened": opened if opened is not None else request.POST.get("opened", _version(template)),
        "uses": template_uses(template) if template is not None else [],
    }
    return render(
        request, "web/scenarios/template_form.html", context, status=status if errors else 200
    )


TEMPLATE_VARIABLES = (
    ("{{ name }}", "お名前(姓 名)"),
    ("{{ family_name }}", "姓"),
    ("{{ product }}", "きっかけの商品(カゴ落ち・閲覧・定期)"),
    ("{{ last_product }}", "最後に購入した商品"),
    ("{{ last_order_date|jdate }}", "最終購入日"),
    ("{{ points_balance|comma }}", "ポイント残高"),
    ("{{ points_expiring|comma }}", "失効予定のポイント(最も近い期限の分)"),
    ("{{ points_expiry_date|jdate }}", "ポイントの有効期限"),
    ("{{ next_delivery_date|jdate }}", "次回お届け予定日(定期)"),
    ("{% for r in recommendations %}{{ r.name }}{% endfor %}", "おすすめ商品(併買)"),
    ("{{ offer.label }} {{ offer.code }}", "オファー(割引・クーポンコード)"),
    ("{{ offer.expires_on|jdate }}", "オファーの有効期限"),
)


def _save_template(request: HtmxHttpRequest, template: MessageTemplate | None) -> HttpResponse:
    values = _template_values(request, template)
    if template is not None and (
        conflict := _saved_meanwhile(template, request.POST.get("opened", ""), "テンプレート")
    ):
        return _template_page(request, template, [conflict], status=409, opened=_version(template))
    try:
        saved = template_save(
            template=template,
            key=values["key"].strip(),
            name=values["name"],
            subject=values["subject"],
            text=values["text"],
            html=values["html"],
            acting_user=request.user,
        )
    except ScenarioError as exc:
        return _template_page(request, template, exc.messages)
    messages.success(request, f"テンプレート「{saved.name}」を保存しました。")
    # Messages are rendered when queued: those waiting keep the text from before this save.
    waiting = waiting_messages(template_queues(saved))
    if waiting.pending:
        url = reverse("scenarios:template_cancel_waiting", args=[saved.pk])
        messages.warning(
            request,
            format_html(
                '送信待ちの{}件は保存前の内容のまま送信されます。<a href="{}?up_to_id={}">'
                "送信待ちの{}件を取り消す</a>",
                f"{waiting.pending:,}",
                url,
                waiting.up_to_id,
                f"{waiting.pending:,}",
            ),
        )
    return redirect("scenarios:template_edit", pk=saved.pk)


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def template_create(request: HtmxHttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _save_template(request, None)
    return _template_page(request, None)


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def template_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    template = get_object_or_404(MessageTemplate, pk=pk)
    if request.method == "POST":
        return _save_template(request, template)
    return _template_page(request, template)


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def template_cancel_waiting(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """Cancel the waiting messages rendered from this template before it was saved (they keep
    the old text): a page with their count first, then the cancel, audited with the cause.
    `up_to_id` is the newest message when the template was saved, so nothing queued after
    the save — already with the new text — is counted or cancelled."""
    template = get_object_or_404(MessageTemplate, pk=pk)
    queues = template_queues(template)
    if request.method == "POST":
        cause = f"テンプレート「{template.name}」の変更により"
        messages.success(request, _cancel_waiting(request, queues, cause))
        return redirect("scenarios:template_edit", pk=pk)
    posted = int_or_text(request.GET.get("up_to_id", ""))
    waiting = waiting_messages(queues, up_to_id=posted if isinstance(posted, int) else None)
    context = {"template": template, "waiting": waiting}
    return render(request, "web/scenarios/template_cancel_confirm.html", context)


@allow_roles(*EDIT_ROLES)
@require_POST
def template_delete_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return confirmed_delete(
        request,
        MessageTemplate.objects.filter(pk=pk).first(),
        what="テンプレート",
        delete=lambda template: template_delete(template=template, acting_user=request.user),
        refused=ScenarioError,
        back=reverse("scenarios:template_edit", args=[pk]),
        listing="scenarios:templates",
    )


PREVIEW_MATCHES = 5


def _preview_customer(typed: str) -> tuple[Customer | None, list[str]]:
    """The customer a template preview is shown for: a customer ID, or anything the customer
    search finds exactly one customer by (e-mail, phone, cart member ID, order number, name).
    Nothing typed, or no single match, gives the made-up customer, with a note saying why."""
    typed = typed.strip()
    if not typed:
        return None, []
    number = int_or_text(typed)
    if isinstance(number, int):
        by_id = Customer.objects.filter(pk=number, merged_into__isnull=True).first()
        if by_id is not None:
            return by_id, []
    found = [c for c in customer_search(typed, limit=PREVIEW_MATCHES) if c.merged_into_id is None]
    if len(found) == 1:
        return found[0], []
    if not found:
        return None, [f"「{typed}」に当てはまるお客様は見つかりません。架空のお客様で表示します。"]
    shown = "、".join(f"#{c.pk} {c.full_name}" for c in found[: PREVIEW_MATCHES - 1])
    more = " ほか" if len(found) >= PREVIEW_MATCHES else ""
    return None, [
        f"「{typed}」に当てはまるお客様が複数います({shown}{more})。顧客ID・メールアドレス・"
        "電話番号で1人に絞ってください。架空のお客様で表示します。"
    ]


@allow_roles(*EDIT_ROLES)
@never_cache
@require_POST
def template_preview(request: HtmxHttpRequest) -> HttpResponse:
    """The template as it is in the form, rendered for a real customer (or a made-up one)."""
    if not wants_fragment(request):
        raise Http404("このURLは画面の中から使われます")
    customer, notes = _preview_customer(request.POST.get("customer", ""))
    sample = sample_context(timezone.localdate())
    context = dict(sample)
    if customer is not None:
        context.update(customer_contexts([customer.pk], today=timezone.localdate())[customer.pk])
        context["product"] = sample["product"]
    rendered: dict[str, str] | None = None
    problems: list[str] = []
    try:
        compiled = compile_template(
            subject=request.POST.get("subject", ""),
            text=request.POST.get("text", ""),
            html=request.POST.get("html", ""),
        )
    except TemplateRenderError as exc:
        problems.extend(exc.messages)
    else:
        try:
            # The worker puts each recipient's own one-click link in at sending; the preview
            # shows where it goes rather than the raw placeholder.
            rendered = fill_unsubscribe_url(
                compiled.render(context), unsubscribe_url("お客様ごとの配信停止リンク")
            )
        except TemplateRenderError as exc:
            problems.extend(exc.messages)
        try:
            # What 保存する will refuse, said before it is pressed.
            render_check(compiled)
        except TemplateRenderError as exc:
            problems += [m for m in exc.messages if m not in problems]
    # Always 200: htmx swaps only a successful answer into the page, and the problems are
    # what the marketer needs to see in the preview.
    return render(
        request,
        "web/scenarios/_template_preview.html",
        {"rendered": rendered, "notes": notes, "problems": problems, "customer": customer},
    )


# --- views: offers ----------------------------------------------------------------------------


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def offer_list(request: HtmxHttpRequest) -> HttpResponse:
    """The offers, and a form to add one (or change one: ?edit=<id>)."""
    edit_id = request.POST.get("offer") or request.GET.get("edit") or ""
    offer = Offer.objects.filter(pk=edit_id).first() if edit_id.isdigit() else None
    errors: list[str] = []
    values = {
        "key": offer.key if offer else "",
        "name": offer.name if offer else "",
        "kind": offer.kind if offer else OfferKind.YEN_OFF.value,
        "value": str(offer.value) if offer else "",
        "code": offer.code if offer else "",
        "valid_days": str(offer.valid_days) if offer else "14",
    }
    if request.method == "POST":
        values = {k: request.POST.get(k, "") for k in values}
        try:
            saved = offer_save(
                offer=offer,
                key=values["key"].strip(),
                name=values["name"],
                kind=values["kind"],
                value=int_or_text(values["value"]),  # type: ignore[arg-type]
                code=values["code"],
                valid_days=int_or_text(values["valid_days"]),  # type: ignore[arg-type]
                acting_user=request.user,
            )
        except ScenarioError as exc:
            errors = exc.messages
        else:
            messages.success(request, f"オファー「{saved.name}」を保存しました。")
            return redirect("scenarios:offers")
    context = {
        "offers": Offer.objects.annotate(used=Count("steps")).order_by("name", "pk"),
        "offer": offer,
        "values": values,
        "kinds": _options(list(OfferKind.choices), values["kind"]),
        "errors": errors,
        "uses": offer_uses(offer) if offer is not None else [],
    }
    return render(request, "web/scenarios/offers.html", context, status=400 if errors else 200)


@allow_roles(*EDIT_ROLES)
@require_POST
def offer_delete_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return confirmed_delete(
        request,
        Offer.objects.filter(pk=pk).first(),
        what="オファー",
        delete=lambda offer: offer_delete(offer=offer, acting_user=request.user),
        refused=ScenarioError,
        back=f"{reverse('scenarios:offers')}?edit={pk}",
        listing="scenarios:offers",
    )
