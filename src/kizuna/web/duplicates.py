"""The duplicate review queue: staff confirm or reject the pairs identity resolution proposed,
merge them, and take a merge back.

Every change is a POST behind a confirmation page (merge, undo) or a single button whose effect
can be taken back (別人 → 確認待ちに戻す). The work is done by kizuna.customers.merge; these
views only read the input, call it and show the outcome.
"""

from __future__ import annotations

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.customers import merge as merging
from kizuna.customers.models import Customer, DuplicateCandidate, DuplicateStatus
from kizuna.web.http import HtmxHttpRequest, wants_fragment

# Deciding whether two records are one person needs their personal data: the customer screens'
# roles, not analysts.
REVIEW_ROLES = (Role.OPERATOR, Role.MARKETER)

TABS = (
    (DuplicateStatus.OPEN, "確認待ち"),
    (DuplicateStatus.MERGED, "統合済み"),
    (DuplicateStatus.DISMISSED, "別人"),
)


def _status(value: str | None) -> DuplicateStatus:
    return DuplicateStatus(value) if value in DuplicateStatus.values else DuplicateStatus.OPEN


def _back_to_queue(request: HtmxHttpRequest, status: DuplicateStatus) -> HttpResponseRedirect:
    """The queue page the form was sent from (same tab and page), or the tab's first page."""
    back = request.POST.get("next", "")
    if back and url_has_allowed_host_and_scheme(back, allowed_hosts={request.get_host()}):
        return HttpResponseRedirect(back)
    url = reverse("duplicates:queue")
    return HttpResponseRedirect(url if status == DuplicateStatus.OPEN else f"{url}?status={status}")


def _tabs() -> list[tuple[DuplicateStatus, str, int]]:
    counts = merging.queue_counts()
    return [(value, label, counts[value]) for value, label in TABS]


@allow_roles(*REVIEW_ROLES)
@require_GET
def duplicate_queue(request: HtmxHttpRequest) -> HttpResponse:
    status = _status(request.GET.get("status"))
    page, items = merging.duplicate_queue(status=status, page=request.GET.get("page"))
    context = {
        "status": status,
        "tabs": _tabs(),
        "page": page,
        "items": items,
        "here": request.get_full_path(),
    }
    return render(request, "web/duplicates/queue.html", context)


def _pair(candidate: DuplicateCandidate, survivor_id: str | None) -> tuple[Customer, Customer]:
    """(survivor, absorbed) for the chosen id; the older record survives by default."""
    a, b = candidate.customer_a, candidate.customer_b
    if survivor_id == str(b.pk):
        return b, a
    if survivor_id == str(a.pk):
        return a, b
    return (b, a) if (b.registered_at, b.pk) < (a.registered_at, a.pk) else (a, b)


@allow_roles(*REVIEW_ROLES)
@require_http_methods(["GET", "POST"])
def duplicate_merge(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: what the merge would do, to confirm. POST: do it."""
    candidate = get_object_or_404(
        DuplicateCandidate.objects.select_related("customer_a", "customer_b"), pk=pk
    )
    if candidate.status != DuplicateStatus.OPEN:
        live = candidate.merges.filter(undone_at__isnull=True).first()
        if live is not None:
            messages.info(request, "この候補は既に統合されています。")
            return redirect("duplicates:merge_detail", pk=live.pk)
        messages.error(request, f"この候補は既に「{candidate.get_status_display()}」です。")
        return redirect("duplicates:queue")
    chosen = (
        request.POST.get("survivor") if request.method == "POST" else request.GET.get("survivor")
    )
    survivor, absorbed = _pair(candidate, chosen)
    errors: list[str] = []
    if request.method == "POST":
        if chosen != str(survivor.pk):
            errors = ["統合後に残す顧客を選んでください。"]
        else:
            try:
                merge = merging.customer_merge(
                    survivor=survivor, absorbed=absorbed, acting_user=request.user
                )
            except merging.MergeError as exc:
                errors = exc.messages
            else:
                messages.success(
                    request,
                    f"顧客 #{absorbed.pk} を顧客 #{survivor.pk} に統合しました。"
                    "間違いだった場合はこのページから取り消せます。",
                )
                return redirect("duplicates:merge_detail", pk=merge.pk)
    cards = merging.customer_cards([survivor.pk, absorbed.pk])
    context = {
        "candidate": candidate,
        "plan": merging.merge_plan(survivor=survivor, absorbed=absorbed),
        "survivor_card": cards[survivor.pk],
        "absorbed_card": cards[absorbed.pk],
        "points_reason": merging.MERGE_POINTS_REASON,
        "blocked": [
            f"顧客 #{c.pk} は既に顧客 #{c.merged_into_id} に統合されています。"
            for c in (survivor, absorbed)
            if c.merged_into_id is not None
        ],
        "errors": errors,
    }
    return render(
        request, "web/duplicates/merge_confirm.html", context, status=409 if errors else 200
    )


@allow_roles(*REVIEW_ROLES)
@require_POST
def duplicate_dismiss(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    candidate = get_object_or_404(DuplicateCandidate, pk=pk)
    try:
        candidate = merging.duplicate_dismiss(candidate=candidate, acting_user=request.user)
    except merging.MergeError as exc:
        if wants_fragment(request):
            context = {"candidate": candidate, "errors": exc.messages}
            return render(request, "web/duplicates/_decided.html", context, status=409)
        messages.error(request, " ".join(exc.messages))
        return _back_to_queue(request, DuplicateStatus.OPEN)
    if wants_fragment(request):
        context = {"candidate": candidate, "tabs": _tabs(), "status": DuplicateStatus.OPEN}
        return render(request, "web/duplicates/_decided.html", context)
    messages.success(request, f"候補 #{candidate.pk} を「別人」として記録しました。")
    return _back_to_queue(request, DuplicateStatus.OPEN)


@allow_roles(*REVIEW_ROLES)
@require_POST
def duplicate_reopen(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    candidate = get_object_or_404(DuplicateCandidate, pk=pk)
    try:
        merging.duplicate_reopen(candidate=candidate, acting_user=request.user)
    except merging.MergeError as exc:
        messages.error(request, " ".join(exc.messages))
    else:
        messages.success(request, f"候補 #{candidate.pk} を確認待ちに戻しました。")
    return _back_to_queue(request, DuplicateStatus.DISMISSED)


def _merge_or_404(pk: int) -> merging.MergeDetail:
    detail = merging.merge_detail(pk)
    if detail is None:
        raise Http404("統合の記録が見つかりません")
    return detail


@allow_roles(*REVIEW_ROLES)
@require_GET
def merge_detail(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    detail = _merge_or_404(pk)
    blockers = [] if detail.merge.undone_at else merging.undo_blockers(detail.merge)
    return render(
        request, "web/duplicates/merge_detail.html", {"detail": detail, "blockers": blockers}
    )


@allow_roles(*REVIEW_ROLES)
@require_http_methods(["GET", "POST"])
def merge_undo(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: what the undo would give back, to confirm. POST: do it."""
    detail = _merge_or_404(pk)
    errors: list[str] = []
    if request.method == "POST":
        try:
            merging.customer_merge_undo(merge=detail.merge, acting_user=request.user)
        except merging.MergeError as exc:
            errors = exc.messages
        else:
            merge = detail.merge
            messages.success(
                request,
                f"統合を取り消しました。顧客 #{merge.absorbed_id} は元に戻り、"
                "候補は確認待ちに戻りました。",
            )
            return redirect("duplicates:merge_detail", pk=merge.pk)
    blockers = errors or merging.undo_blockers(detail.merge)
    return render(
        request,
        "web/duplicates/undo_confirm.html",
        {"detail": detail, "blockers": blockers},
        status=409 if errors else 200,
    )
