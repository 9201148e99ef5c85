"""Segment pages: the list, the htmx rule builder with a live count and a sample of members,
and the CSV export.

The rule tree travels in the form as one set of fields per node, keyed by the node's path
("0" is the root group, "0.2" its third child, "0.2.0" that one's first child…):

    node=<path>  kind-<path>=group|condition
    op-<path>=and|or                       (groups)
    field-<path>, operator-<path>, value-<path>[, value-<path>-low/-high/-from/-to],
    products-<path>                        (conditions)

Every builder button ("条件を追加", "グループを追加", "削除") posts the whole form with
`action=<verb>:<path>`; the server applies it and answers with the builder again (the whole
page when JavaScript is off), so nothing typed is ever lost. Segments show customers' names,
so only marketers and admins use these pages.

A segment no scenario uses can be deleted from its page, once 「削除してよい」 is ticked; the
page of one that is used lists the scenarios that use it, and where, instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import (
    Http404,
    HttpResponse,
    QueryDict,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.campaigns.automation import segments as rules_engine
from kizuna.campaigns.automation.models import Scenario, ScenarioStatus, Segment, TriggerKind
from kizuna.campaigns.automation.segments import (
    OPERATORS,
    Condition,
    SegmentError,
    Shape,
    segment_customers,
    segment_delete,
    segment_export_rows,
    segment_save,
    segment_uses,
    validate_rules,
)
from kizuna.campaigns.automation.triggers import segment_newcomers
from kizuna.core.spreadsheet import XLSX_TYPE, csv_lines, xlsx_bytes
from kizuna.customers.models import Customer
from kizuna.web.http import HtmxHttpRequest, confirmed_delete, int_or_text, wants_fragment

SEGMENT_ROLES = (Role.MARKETER,)
SAMPLE_SIZE = 20


# --- the tree in the form ---------------------------------------------------------------------


def _condition_from(data: QueryDict, path: str) -> dict[str, Any]:
    node: dict[str, Any] = {
        "field": data.get(f"field-{path}", ""),
        "operator": data.get(f"operator-{path}", ""),
    }
    shape = OPERATORS.get(node["operator"], ("", Shape.NONE))[1]
    if shape == Shape.CHOICES:
        node["value"] = data.getlist(f"value-{path}")
    elif shape in (Shape.NUMBER, Shape.DAYS):
        node["value"] = int_or_text(data.get(f"value-{path}", ""))
    elif shape == Shape.RANGE:
        node["value"] = [
            int_or_text(data.get(f"value-{path}-low", "")),
            int_or_text(data.get(f"value-{path}-high", "")),
        ]
    elif shape == Shape.DATE_RANGE:
        node["value"] = [data.get(f"value-{path}-from", ""), data.get(f"value-{path}-to", "")]
    products = [p for p in data.getlist(f"products-{path}") if p]
    if products:
        node["products"] = products
    return node


def rules_from_post(data: QueryDict) -> dict[str, Any]:
    """The rule tree the form describes (see the module docstring)."""
    nodes: dict[str, dict[str, Any]] = {}
    root: dict[str, Any] = {"op": "and", "rules": []}
    for path in data.getlist("node"):
        if data.get(f"kind-{path}") == "group":
            node: dict[str, Any] = {"op": data.get(f"op-{path}", "and"), "rules": []}
        else:
            node = _condition_from(data, path)
        if path == "0":
            root = node if "rules" in node else root
            nodes[path] = root
            continue
        parent = nodes.get(path.rsplit(".", 1)[0])
        if parent is not None and "rules" in parent:
            parent["rules"].append(node)
            nodes[path] = node
    return root


def _locate(tree: dict[str, Any], path: str) -> tuple[dict[str, Any] | None, int]:
    """(parent group, index) of the node at `path`; the root has no parent."""
    parts = path.split(".")[1:]
    node, parent, index = tree, None, -1
    for part in parts:
        if not part.isdigit() or "rules" not in node or int(part) >= len(node["rules"]):
            return None, -1
        parent, index = node, int(part)
        node = node["rules"][index]
    return parent, index


def _node_at(tree: dict[str, Any], path: str) -> dict[str, Any] | None:
    parent, index = _locate(tree, path)
    if path == "0":
        return tree
    return parent["rules"][index] if parent is not None else None


def apply_action(tree: dict[str, Any], action: str) -> dict[str, Any]:
    """Apply one builder button to the tree."""
    verb, _, path = action.partition(":")
    if verb == "remove" and path != "0":
        parent, index = _locate(tree, path)
        if parent is not None:
            del parent["rules"][index]
    elif verb in ("add-condition", "add-group"):
        group = _node_at(tree, path)
        if group is not None and "rules" in group:
            new: dict[str, Any] = (
                {"field": "", "operator": "", "value": None}
                if verb == "add-condition"
                else {"op": "or", "rules": [{"field": "", "operator": "", "value": None}]}
            )
            group["rules"].append(new)
    return tree


# --- the tree as the template shows it --------------------------------------------------------


@dataclass
class Choice:
    value: str
    label: str
    selected: bool = False


@dataclass
class NodeView:
    path: str
    kind: str
    depth: int
    op: str = "and"
    children: list[NodeView] = field(default_factory=list)
    field_key: str = ""
    operator: str = ""
    shape: str = ""
    unit: str = ""
    help: str = ""
    operators: list[Choice] = field(default_factory=list)
    choices: list[Choice] = field(default_factory=list)
    value: Any = None
    low: Any = ""
    high: Any = ""
    with_products: bool = False
    products: list[Choice] = field(default_factory=list)
    field_groups: list[FieldGroup] = field(default_factory=list)


@dataclass(frozen=True)
class FieldGroup:
    label: str
    fields: list[Choice]


def field_groups(registry: dict[str, Condition], selected: str) -> list[FieldGroup]:
    groups: dict[str, list[Choice]] = {}
    for condition in registry.values():
        groups.setdefault(condition.group, []).append(
            Choice(condition.key, condition.label, condition.key == selected)
        )
    return [FieldGroup(label, fields) for label, fields in groups.items()]


def _view(node: dict[str, Any], path: str, depth: int, ctx: dict[str, Any]) -> NodeView:
    if "rules" in node:
        view = NodeView(path=path, kind="group", depth=depth, op=node.get("op", "and"))
        view.children = [
            _view(child, f"{path}.{i}", depth + 1, ctx) for i, child in enumerate(node["rules"])
        ]
        return view
    registry: dict[str, Condition] = ctx["registry"]
    condition = registry.get(str(node.get("field")))
    view = NodeView(
        path=path, kind="condition", depth=depth, field_key=str(node.get("field") or "")
    )
    view.field_groups = field_groups(registry, view.field_key)
    if condition is None:
        return view
    operator = node.get("operator") if node.get("operator") in condition.operators else ""
    operator = operator or condition.operators[0]
    view.operator = operator
    view.unit, view.help = condition.unit, condition.help
    view.operators = [
        Choice(op, OPERATORS[op][0].replace("N", "n"), op == operator) for op in condition.operators
    ]
    view.shape = OPERATORS[operator][1].value
    value = node.get("value")
    if view.shape == Shape.CHOICES:
        chosen = {str(v) for v in value} if isinstance(value, list) else set()
        view.choices = [Choice(k, label, k in chosen) for k, label in condition.choice_list()]
    elif view.shape in (Shape.RANGE, Shape.DATE_RANGE) and isinstance(value, list):
        view.low, view.high = [*value, "", ""][:2]
    else:
        view.value = "" if value is None else value
    if condition.with_products:
        view.with_products = True
        picked = set(node.get("products") or [])
        view.products = [Choice(k, label, k in picked) for k, label in ctx["products"]]
    return view


def builder_context(tree: dict[str, Any]) -> dict[str, Any]:
    registry = rules_engine.conditions()
    ctx = {"registry": registry, "products": rules_engine.product_choices()}
    return {
        "root": _view(tree, "0", 0, ctx),
        "analytics_note": None
        if rules_engine.analytics_snapshot()
        else rules_engine.ANALYTICS_PENDING_NOTE,
    }


# --- preview ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Preview:
    errors: list[str]
    count: int | None
    sample: list[dict[str, Any]]
    description: str


def _chosen(tree: dict[str, Any]) -> bool:
    """Whether any condition of the tree has its field chosen: a new form's one empty
    condition shows the hint, not an error about a choice nobody has made yet."""
    return any(
        _chosen(rule) if "rules" in rule else bool(rule.get("field"))
        for rule in tree.get("rules") or []
        if isinstance(rule, dict)
    )


def preview_for(tree: dict[str, Any]) -> Preview | None:
    if not _chosen(tree):
        return None
    errors = validate_rules(tree)
    if errors:
        return Preview(errors, None, [], "")
    members = segment_customers(tree, now=timezone.now())
    prefectures = dict(Customer._meta.get_field("prefecture").choices or [])
    statuses = dict(Customer._meta.get_field("member_status").choices or [])
    sample = [
        {
            "pk": pk,
            "name": f"{family} {given}".strip(),
            "prefecture": prefectures.get(prefecture, ""),
            "registered_at": registered_at,
            "status": statuses.get(status, status),
        }
        for pk, family, given, prefecture, registered_at, status in members.order_by(
            "-pk"
        ).values_list(
            "pk", "family_name", "given_name", "prefecture", "registered_at", "member_status"
        )[:SAMPLE_SIZE]
    ]
    return Preview([], members.count(), sample, rules_engine.describe(tree))


# --- views ------------------------------------------------------------------------------------


def _page(
    request: HtmxHttpRequest,
    *,
    segment: Segment | None,
    tree: dict[str, Any],
    values: dict[str, str],
    errors: list[str] | None = None,
    status: int = 200,
) -> HttpResponse:
    context = {
        "segment": segment,
        "uses": segment_uses(segment) if segment is not None else [],
        "values": values,
        "errors": errors or [],
        "preview": preview_for(tree),
        **builder_context(tree),
    }
    return render(request, "web/segments/form.html", context, status=status)


def _values(request: HtmxHttpRequest, segment: Segment | None) -> dict[str, str]:
    if request.method == "POST":
        return {
            "key": request.POST.get("key", "").strip(),
            "name": request.POST.get("name", ""),
            "description": request.POST.get("description", ""),
        }
    if segment is None:
        return {"key": "", "name": "", "description": ""}
    return {"key": segment.key, "name": segment.name, "description": segment.description}


@allow_roles(*SEGMENT_ROLES)
@never_cache
@require_GET
def segment_list(request: HtmxHttpRequest) -> HttpResponse:
    rows = [
        {"segment": s, "description": rules_engine.describe(s.rules)}
        for s in Segment.objects.order_by("name", "pk")
    ]
    return render(request, "web/segments/list.html", {"rows": rows})


@allow_roles(*SEGMENT_ROLES)
@never_cache
@require_GET
def segment_count(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """The member count of one saved segment (loaded after the list, one request per row)."""
    segment = get_object_or_404(Segment, pk=pk)
    try:
        count = segment_customers(segment.rules, now=timezone.now()).count()
    except SegmentError:
        return HttpResponse('<span class="muted">条件を見直してください</span>')
    return HttpResponse(f"{count:,}人")


@dataclass(frozen=True)
class _Entering:
    scenario: Scenario
    count: int


def _entering_running_scenarios(segment: Segment, tree: dict[str, Any]) -> list[_Entering]:
    """For each running 「セグメントに入った」 scenario on `segment`, how many customers the
    rules `tree` would add to the segment (at most: its audience and who may enter narrow it
    at the next run). Widening the rules is an entry for all of them at once, as activating
    with current members is; [] when the rules are not valid (the save reports them)."""
    if validate_rules(tree):
        return []
    # Not yet evaluated once: its first run records the members then (activation asked).
    running = Scenario.objects.filter(
        status=ScenarioStatus.ACTIVE,
        trigger_kind=TriggerKind.SEGMENT_ENTERED,
        trigger_params__segment=segment.key,
        trigger_checked_at__isnull=False,
    ).order_by("pk")
    now = timezone.now()
    found = [_Entering(s, segment_newcomers(s, tree, now=now).count()) for s in running]
    return [entering for entering in found if entering.count]


def _save(request: HtmxHttpRequest, segment: Segment | None) -> HttpResponse:
    tree = rules_from_post(request.POST)
    values = _values(request, segment)
    if segment is not None and request.POST.get("confirmed") != "1":
        entering = _entering_running_scenarios(segment, tree)
        if entering:
            # Everything posted goes back with the confirmation, so 保存する saves exactly it.
            posted = [
                (name, value)
                for name, items in request.POST.lists()
                if name not in ("csrfmiddlewaretoken", "confirmed")
                for value in items
            ]
            context = {"segment": segment, "entering": entering, "posted": posted}
            return render(request, "web/segments/save_confirm.html", context)
    try:
        saved = segment_save(
            segment=segment,
            key=values["key"],
            name=values["name"],
            description=values["description"],
            rules=tree,
            acting_user=request.user,
        )
    except SegmentError as exc:
        return _page(
            request, segment=segment, tree=tree, values=values, errors=exc.messages, status=400
        )
    messages.success(request, f"セグメント「{saved.name}」を保存しました。")
    return redirect("segments:edit", pk=saved.pk)


@allow_roles(*SEGMENT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def segment_create(request: HtmxHttpRequest) -> HttpResponse:
    if request.method == "POST":
        return _save(request, None)
    tree = {"op": "and", "rules": [{"field": "", "operator": "", "value": None}]}
    return _page(request, segment=None, tree=tree, values=_values(request, None))


@allow_roles(*SEGMENT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def segment_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    segment = get_object_or_404(Segment, pk=pk)
    if request.method == "POST":
        return _save(request, segment)
    return _page(request, segment=segment, tree=segment.rules, values=_values(request, segment))


@allow_roles(*SEGMENT_ROLES)
@require_POST
def segment_delete_view(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    return confirmed_delete(
        request,
        Segment.objects.filter(pk=pk).first(),
        what="セグメント",
        delete=lambda segment: segment_delete(segment=segment, acting_user=request.user),
        refused=SegmentError,
        back=reverse("segments:edit", args=[pk]),
        listing="segments:list",
    )


@allow_roles(*SEGMENT_ROLES)
@never_cache
@require_POST
def segment_builder(request: HtmxHttpRequest) -> HttpResponse:
    """Apply a builder button; the builder fragment for htmx, else the whole page."""
    tree = apply_action(rules_from_post(request.POST), request.POST.get("action", ""))
    if wants_fragment(request):
        context = {
            **builder_context(tree),
            "preview": preview_for(tree),
            "oob": True,
        }
        return render(request, "web/segments/_builder.html", context)
    pk = request.POST.get("segment")
    segment = Segment.objects.filter(pk=pk).first() if pk and pk.isdigit() else None
    return _page(request, segment=segment, tree=tree, values=_values(request, segment))


@allow_roles(*SEGMENT_ROLES)
@never_cache
@require_POST
def segment_preview(request: HtmxHttpRequest) -> HttpResponse:
    """The live count and the first members for the rules as they are in the form."""
    if not wants_fragment(request):
        raise Http404("このURLは画面の中から使われます")
    tree = rules_from_post(request.POST)
    return render(request, "web/segments/_preview.html", {"preview": preview_for(tree)})


@allow_roles(*SEGMENT_ROLES)
@never_cache
@require_POST
def segment_export(request: HtmxHttpRequest, pk: int) -> HttpResponse | StreamingHttpResponse:
    """The members as CSV (streamed) or as an Excel file, which keeps the leading zeros of
    phone numbers and postal codes that Excel drops when it opens a CSV. The export is
    recorded in the audit log first (D3)."""
    segment = get_object_or_404(Segment, pk=pk)
    file_format = "xlsx" if request.POST.get("format") == "xlsx" else "csv"
    rows = segment_export_rows(
        segment=segment, now=timezone.now(), acting_user=request.user, file_format=file_format
    )
    try:
        header = next(rows)  # runs the count and the audit before the response starts
    except ValidationError as exc:
        messages.error(request, " ".join(exc.messages))
        return redirect("segments:edit", pk=segment.pk)
    stamp = timezone.localtime().strftime("%Y%m%d-%H%M")
    filename = f"segment-{segment.key}-{stamp}.{file_format}"
    response: HttpResponse | StreamingHttpResponse
    if file_format == "xlsx":
        data, _ = xlsx_bytes(header, rows, title=segment.name)
        response = HttpResponse(data, content_type=XLSX_TYPE)
    else:
        response = StreamingHttpResponse(
            csv_lines(_prepend(header, rows)), content_type="text/csv; charset=utf-8"
        )
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    return response


def _prepend(first: list[str], rest: Iterator[list[str]]) -> Iterator[list[str]]:
    yield first
    yield from rest
