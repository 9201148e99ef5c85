"""The duplicate review queue: staff confirm or reject the pairs identity resolution proposed,
merge them, and take a merge back.

Every change is a POST behind a confirmation page (merge, undo) or a single button whose effect
can be taken back (別人 → 確認待ちに戻す). The work is done by kizuna.customers.merge; these
views only read the input, call it and show the outcome.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

from django.contrib import messages
from django.http import Http404, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_http_methods, require_POST

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.customers import merge as merging
from kizuna.customers.models import Customer, DuplicateCandidate, DuplicateStatus
from kizuna.customers.services import is_erased
from kizuna.web.http import HtmxHttpRequest, wants_fragment

# Deciding whether two records are one person needs their personal data: the customer screens'
# roles, not analysts.
REVIEW_ROLES = (Role.OPERATOR, Role.MARKETER)

TABS = (
    (DuplicateStatus.OPEN, "確認待ち"),
    (DuplicateStatus.MERGED, "統合済み"),
    (DuplicateStatus.DISMISSED, "別人"),
    # Closed by an erasure, not by a reviewer: shown for the record, nothing to do there.
    (DuplicateStatus.ERASED, "削除により対象外"),
)


def _status(value: str | None) -> DuplicateStatus:
    return DuplicateStatus(value) if value in DuplicateStatus.values else DuplicateStatus.OPEN


def _queue_url(status: DuplicateStatus, page: int | None = None) -> str:
    query: dict[str, str | int] = {} if status == DuplicateStatus.OPEN else {"status": status}
    if page is not None:
        query["page"] = page
    url = reverse("duplicates:queue")
    return f"{url}?{urlencode(query)}" if query else url


def _queue_place(value: str | None) -> tuple[DuplicateStatus, int | None] | None:
    """The tab and page of a queue address a page or form carried along (`next`), or None
    when it is not this queue's own address. Only the tab and page are kept and the address is
    written anew, so `next` can lead nowhere else, on this site or off it."""
    if not value:
        return None
    url = urlsplit(value)
    if url.scheme or url.netloc or url.path != reverse("duplicates:queue"):
        return None
    query = QueryDict(url.query)
    page = query.get("page", "")
    return _status(query.get("status")), int(page) if page.isascii() and page.isdigit() else None


def _next(request: HtmxHttpRequest) -> str | None:
    """The queue page the reviewer came from, to go back to (None when not known)."""
    place = _queue_place(request.POST.get("next") or request.GET.get("next"))
    return None if place is None else _queue_url(*place)


def _back_to_queue(request: HtmxHttpRequest, status: DuplicateStatus) -> HttpResponseRedirect:
    """The queue page the reviewer came from (same tab and page; the tab's last page when the
    decision emptied theirs), or the first page of `status`."""
    place = _queue_place(request.POST.get("next") or request.GET.get("next"))
    if place is None:
        return HttpResponseRedirect(_queue_url(status))
    status, page = place
    if page is not None:
        page = max(1, min(page, merging.queue_last_page(status)))
    return HttpResponseRedirect(_queue_url(status, page))


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
        # Sent along with every decision, to come back to this tab and page.
        "here": _queue_url(status, page.number if page.number > 1 else None),
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
        return _back_to_queue(request, DuplicateStatus.OPEN)
    chosen = (
        request.POST.get("survivor") if request.method == "POST" else request.GET.get("survivor")
    )
    survivor, absorbed = _pair(candidate, chosen)
    errors: list[str] = []
    status = 200
    if request.method == "POST":
        if chosen != str(survivor.pk):
            # Not one of the pair (a stale or altered form, or no number at all): bad input,
            # not a conflict with the pair's state. The page shows the default choice again.
            status = 400
            errors = [
                f"残す顧客の指定が、この候補の2件(顧客 #{survivor.pk}・#{absorbed.pk})の"
                "どちらでもないため、統合していません。"
                "残す顧客を下で確かめてから、統合してください。"
            ]
        else:
            try:
                merge = merging.customer_merge(
                    survivor=survivor, absorbed=absorbed, acting_user=request.user
                )
            except merging.MergeError as exc:
                status = 409
                errors = exc.messages
            else:
                done = f"顧客 #{absorbed.pk} を顧客 #{survivor.pk} に統合しました。"
                if _next(request) is not None:
                    messages.success(
                        request, f"{done}間違いだった場合は「統合済み」から取り消せます。"
                    )
                    return _back_to_queue(request, DuplicateStatus.OPEN)
                messages.success(request, f"{done}間違いだった場合はこのページから取り消せます。")
                return redirect("duplicates:merge_detail", pk=merge.pk)
    cards = merging.customer_cards([survivor.pk, absorbed.pk])
    context = {
        "candidate": candidate,
        "matches": merging.candidate_matches(
            candidate, cards[candidate.customer_a_id], cards[candidate.customer_b_id]
        ),
        "plan": merging.merge_plan(survivor=survivor, absorbed=absorbed),
        "survivor_card": cards[survivor.pk],
        "absorbed_card": cards[absorbed.pk],
        "points_reason": merging.MERGE_POINTS_REASON,
        "blocked": [
            f"顧客 #{c.pk} は既に顧客 #{c.merged_into_id} に統合されています。"
            for c in (survivor, absorbed)
            if c.merged_into_id is not None
        ]
        + [
            f"顧客 #{c.pk} は個人データを削除(匿名化)済みのため、統合できません。"
            for c in (survivor, absorbed)
            if is_erased(c)
        ],
        "errors": errors,
        "back": _next(request),
    }
    return render(request, "web/duplicates/merge_confirm.html", context, status=status)


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
        context = {
            "candidate": candidate,
            "tabs": _tabs(),
            "status": DuplicateStatus.OPEN,
            "back": _next(request) or _queue_url(DuplicateStatus.OPEN),
        }
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
    context = {"detail": detail, "blockers": blockers, "back": _next(request)}
    return render(request, "web/duplicates/merge_detail.html", context)


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
            if _next(request) is not None:
                return _back_to_queue(request, DuplicateStatus.MERGED)
            return redirect("duplicates:merge_detail", pk=merge.pk)
    back = _next(request)
    record = reverse("duplicates:merge_detail", args=[pk])
    context = {
        "detail": detail,
        "blockers": errors or merging.undo_blockers(detail.merge),
        "back": back,
        "record": f"{record}?{urlencode({'next': back})}" if back else record,
    }
    return render(
        request, "web/duplicates/undo_confirm.html", context, status=409 if errors else 200
    )
