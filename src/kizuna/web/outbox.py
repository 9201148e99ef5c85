"""配信状況: the delivery monitor for staff.

Queue counts by channel and status, recent failures and skips with their reasons, the
suppression list (add/remove), the print/warehouse/call lists with their downloads, the
送信キュー (the messages themselves, filtered and paged; admins cancel waiting ones and send
failed ones again), and, for admins, the sending rules and the "sending paused" switch. Views
validate and call kizuna.campaigns.services / suppression / outbox; the reads come from
kizuna.campaigns.selectors and kizuna.campaigns.outbox.queue_page.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator
from django.http import HttpRequest, HttpResponse, QueryDict
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role, User
from kizuna.campaigns import channels, selectors
from kizuna.campaigns.automation.models import Scenario
from kizuna.campaigns.automation.selectors import scenario_choices
from kizuna.campaigns.models import (
    Channel,
    DeliveryList,
    DeliverySettings,
    OutboxStatus,
    Suppression,
    SuppressionKind,
    SuppressionReason,
)
from kizuna.campaigns.outbox import (
    WAITING,
    Cursor,
    QueueFilter,
    outbox_cancel,
    outbox_retry,
    queue_count,
    queue_newest_id,
    queue_page,
)
from kizuna.campaigns.sender import current_sender
from kizuna.campaigns.services import (
    ReopenRefusedError,
    delivery_list_close,
    delivery_list_export,
    delivery_list_reopen,
    delivery_settings_update,
    sending_pause,
)
from kizuna.campaigns.suppression import suppression_add, suppression_remove
from kizuna.core import jp
from kizuna.core.paging import Paginator
from kizuna.core.spreadsheet import XLSX_TYPE
from kizuna.web.http import HtmxHttpRequest, wants_fragment
from kizuna.web.templatetags.kizuna import jdatetime, phone

# Marketers run campaigns; operators work the call lists. Analysts see no personal data.
VIEW_ROLES = (Role.MARKETER, Role.OPERATOR)
MANAGE_ROLES = (Role.MARKETER,)
PER_PAGE = 20
CONTENT_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": XLSX_TYPE,
}


def _user(request: HttpRequest) -> User:
    # The access middleware let only logged-in staff this far.
    return cast(User, request.user)


def _is_admin(request: HttpRequest) -> bool:
    return _user(request).has_role(Role.ADMIN.value)


def _manages(request: HttpRequest) -> bool:
    return _user(request).has_role(Role.ADMIN.value, Role.MARKETER.value)


def _visible_lists(request: HttpRequest) -> Any:
    lists = selectors.delivery_lists()
    if not _manages(request):
        # The contact center needs its call lists, not the shop's address lists.
        lists = lists.filter(channel=Channel.CALL)
    return lists


class SettingsForm(forms.Form):
    quiet_start = forms.TimeField(
        label="送信しない時間帯(開始)",
        widget=forms.TimeInput(attrs={"type": "time"}),
        error_messages={
            "required": "開始時刻を入力してください。",
            "invalid": "時刻は 21:00 の形で入力してください。",
        },
    )
    quiet_end = forms.TimeField(
        label="送信しない時間帯(終了)",
        widget=forms.TimeInput(attrs={"type": "time"}),
        help_text="開始と終了を同じ時刻にすると、時間帯の制限はなくなります。",
        error_messages={
            "required": "終了時刻を入力してください。",
            "invalid": "時刻は 08:00 の形で入力してください。",
        },
    )
    cap_messages = forms.IntegerField(
        label="販促の上限(通)",
        min_value=1,
        max_value=50,
        error_messages={
            "required": "上限の通数を入力してください。",
            "min_value": "1通以上にしてください。",
            "max_value": "50通以下にしてください。",
            "invalid": "数字で入力してください。",
        },
    )
    cap_days = forms.IntegerField(
        label="上限を数える期間(日)",
        min_value=1,
        max_value=90,
        error_messages={
            "required": "期間を入力してください。",
            "min_value": "1日以上にしてください。",
            "max_value": "90日以下にしてください。",
            "invalid": "数字で入力してください。",
        },
    )
    sender_name = forms.CharField(
        label="送信者名",
        max_length=100,
        required=False,
        help_text="空欄なら環境設定 KIZUNA_SENDER_NAME を使います。",
    )
    sender_address = forms.CharField(
        label="送信者の住所",
        max_length=200,
        required=False,
        help_text="空欄なら KIZUNA_SENDER_ADDRESS を使います。",
    )
    sender_contact = forms.CharField(
        label="苦情・問い合わせ先",
        max_length=200,
        required=False,
        help_text="電話番号やメールアドレス。空欄なら KIZUNA_SENDER_CONTACT を使います。",
    )


class SuppressionForm(forms.Form):
    kind = forms.ChoiceField(label="種類", choices=SuppressionKind.choices)
    address = forms.CharField(
        label="宛先",
        max_length=254,
        error_messages={"required": "宛先を入力してください。", "max_length": "宛先が長すぎます。"},
    )
    detail = forms.CharField(label="メモ", max_length=500, required=False)


def _settings_form(row: DeliverySettings) -> SettingsForm:
    return SettingsForm(
        initial={
            name: getattr(row, name)
            for name in (
                "quiet_start",
                "quiet_end",
                "cap_messages",
                "cap_days",
                "sender_name",
                "sender_address",
                "sender_contact",
            )
        }
    )


def _shown_address(row: Suppression) -> str:
    """The address as staff write it: a phone number as 090-1234-5678, not as stored (+81…)."""
    return phone(row.address) if row.kind == SuppressionKind.PHONE else row.address


# A phone number, or the start of one, typed the domestic way: "090-1234", "０３（１２３４）".
_DOMESTIC_PHONE_RE = re.compile(r"0\d[\d\s()\-‐−ー]*")


def _suppression_search(query: str) -> Any:
    """The rows whose address contains the query; a phone number typed the domestic way also
    finds its stored +81 form, which shares no prefix with it."""
    rows = selectors.suppressions(query)
    text = jp.nfkc(query)
    if _DOMESTIC_PHONE_RE.fullmatch(text):
        digits = re.sub(r"\D", "", text)
        rows = rows | selectors.suppressions("+81" + digits[1:])
    return rows


def _page(request: HttpRequest, rows: Any, param: str = "page") -> Any:
    return Paginator(rows, PER_PAGE).get_page(request.GET.get(param))


@dataclass(frozen=True)
class ChannelSetup:
    label: str
    ready: bool
    detail: str


def channel_setup() -> list[ChannelSetup]:
    """How e-mail, LINE and SMS are connected, for the admin: a channel without its provider is
    never chosen as the best channel, and messages sent to it directly wait until it is set."""
    backend = settings.EMAIL_BACKEND
    if backend.endswith("smtp.EmailBackend"):
        mail = f"SMTPサーバー {settings.EMAIL_HOST}:{settings.EMAIL_PORT}"
    elif backend.endswith("filebased.EmailBackend"):
        mail = f"送らずにファイルに保存({settings.EMAIL_FILE_PATH})"
    else:
        mail = f"Djangoのメール設定 {backend.rsplit('.', 2)[-2]}"
    unset = (
        "最適チャネルでは使いません。このチャネルを指定したメッセージは設定されるまで送信待ちです"
    )
    rows = [ChannelSetup("メール", True, mail)]
    for label, kind, setting in (
        ("LINE", "line", "KIZUNA_LINE_CHANNEL_TOKEN"),
        ("SMS", "sms", "KIZUNA_SMS_API_URL"),
    ):
        ready = channels.configured(kind)
        rows.append(ChannelSetup(label, ready, "接続済み" if ready else f"{unset}({setting})"))
    return rows


def _dashboard_context(request: HttpRequest, **extra: Any) -> dict[str, Any]:
    row = DeliverySettings.load()
    context: dict[str, Any] = {
        # Only when asked for (the "queue" card loads it after the page): it reads the whole
        # outbox, about a second at a million customers.
        "counts": selectors.queue_counts() if request.GET.get("part") == "counts" else None,
        "config": row,
        "sender": current_sender(row),
        "problems": _page(request, selectors.recent_problems()),
        "lists": _page(request, _visible_lists(request), "lists"),
        "reopenable": selectors.reopenable_lists(),
        "is_admin": _is_admin(request),
        "manages": _manages(request),
        "settings_form": _settings_form(row),
        "channel_setup": channel_setup() if _is_admin(request) else [],
        "suppression_form": SuppressionForm(),
    }
    context.update(extra)
    return context


@allow_roles(*VIEW_ROLES)
@never_cache
@require_GET
def dashboard(request: HtmxHttpRequest) -> HttpResponse:
    if wants_fragment(request) and request.GET.get("part") == "counts":
        return render(request, "web/outbox/_counts.html", {"counts": selectors.queue_counts()})
    context = _dashboard_context(request)
    if wants_fragment(request) and request.GET.get("part") == "problems":
        return render(request, "web/outbox/_problems.html", context)
    return render(request, "web/outbox/index.html", context)


@allow_roles()
@require_POST
def pause(request: HttpRequest) -> HttpResponse:
    paused = request.POST.get("paused") == "1"
    sending_pause(paused=paused, acting_user=_user(request))
    messages.success(
        request,
        "送信を一時停止しました。処理中のメッセージの次から止まります。"
        if paused
        else "送信を再開しました。",
    )
    return redirect("outbox:dashboard")


@allow_roles()
@never_cache
@require_POST
def update_settings(request: HttpRequest) -> HttpResponse:
    form = SettingsForm(request.POST)
    if form.is_valid():
        try:
            delivery_settings_update(changes=form.cleaned_data, acting_user=_user(request))
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            messages.success(request, "配信設定を保存しました。")
            return redirect("outbox:dashboard")
    context = _dashboard_context(request, settings_form=form)
    return render(request, "web/outbox/index.html", context, status=400)


@allow_roles(*MANAGE_ROLES)
@never_cache
def suppressions(request: HttpRequest) -> HttpResponse:
    form = SuppressionForm()
    if request.method == "POST":
        if request.POST.get("action") == "remove":
            pk = request.POST.get("id", "")
            row = Suppression.objects.filter(pk=pk).first() if pk.isdigit() else None
            if row is None:
                # A second tab or the back button: the row is gone already.
                messages.info(request, "この宛先はすでに配信停止リストから外されています。")
                return redirect("outbox:suppressions")
            suppression_remove(suppression=row, acting_user=_user(request))
            messages.success(request, f"{_shown_address(row)} を配信停止リストから外しました。")
            return redirect("outbox:suppressions")
        form = SuppressionForm(request.POST)
        if form.is_valid():
            try:
                row, created = suppression_add(
                    kind=SuppressionKind(form.cleaned_data["kind"]),
                    address=form.cleaned_data["address"],
                    reason=SuppressionReason.MANUAL,
                    detail=form.cleaned_data["detail"],
                    acting_user=_user(request),
                )
            except ValidationError as exc:
                form.add_error("address", "; ".join(exc.messages))
            else:
                messages.success(
                    request,
                    f"{_shown_address(row)} を配信停止リストに追加しました。"
                    if created
                    else f"{_shown_address(row)} はすでに配信停止リストにあります。",
                )
                return redirect("outbox:suppressions")
    query = request.GET.get("q", "").strip()[:100]
    page = _page(request, _suppression_search(query))
    return render(
        request,
        "web/outbox/suppressions.html",
        {"form": form, "page": page, "query": query},
        status=400 if form.errors else 200,
    )


@allow_roles(*VIEW_ROLES)
@never_cache
@require_GET
def download_list(request: HttpRequest, pk: int, file_format: str) -> HttpResponse:
    delivery_list = get_object_or_404(DeliveryList, pk=pk)
    if not _manages(request) and delivery_list.channel != Channel.CALL:
        raise PermissionDenied
    if file_format not in CONTENT_TYPES:
        return HttpResponse("形式は csv か xlsx を指定してください。", status=400)
    name, data = delivery_list_export(
        delivery_list=delivery_list, file_format=file_format, acting_user=_user(request)
    )
    response = HttpResponse(data, content_type=CONTENT_TYPES[file_format])
    response["Content-Disposition"] = f'attachment; filename="{name}"'
    return response


def _list_to_change(request: HttpRequest, pk: int) -> tuple[DeliveryList, str]:
    """The list to close or reopen, and its name as in the table ("架電リスト #3", "郵送DM #1");
    operators change call lists only."""
    delivery_list = get_object_or_404(DeliveryList, pk=pk)
    if not _manages(request) and delivery_list.channel != Channel.CALL:
        raise PermissionDenied
    return delivery_list, f"{delivery_list.get_channel_display()} #{delivery_list.pk}"


@allow_roles(*VIEW_ROLES)
@require_POST
def close_list(request: HttpRequest, pk: int) -> HttpResponse:
    delivery_list, name = _list_to_change(request, pk)
    if delivery_list.closed_at is not None:
        # A second tab or the back button: say who closed it and when, not "closed" again.
        messages.info(
            request,
            f"{name} は {jdatetime(delivery_list.closed_at)} に {delivery_list.closed_by} が"
            "締め済みです。",
        )
        return redirect("outbox:dashboard")
    delivery_list_close(delivery_list=delivery_list, acting_user=_user(request))
    messages.success(
        request,
        f"{name} を締めました。これ以降のメッセージは新しいリストに入ります。"
        "早すぎた場合は、次のメッセージが入るまで「締めを取り消す」で戻せます。",
    )
    return redirect("outbox:dashboard")


@allow_roles(*VIEW_ROLES)
@require_POST
def reopen_list(request: HttpRequest, pk: int) -> HttpResponse:
    """Undo a 締め (delivery_list_reopen): for the same people who may close the list."""
    delivery_list, name = _list_to_change(request, pk)
    try:
        delivery_list_reopen(delivery_list=delivery_list, acting_user=_user(request))
    except ReopenRefusedError as exc:
        messages.error(request, f"{name}: {exc}")
    else:
        messages.success(
            request, f"{name} の締めを取り消しました。メッセージは再びこのリストに入ります。"
        )
    return redirect("outbox:dashboard")


# --- 送信キュー: the messages themselves ------------------------------------------------------

QUEUE_PER_PAGE = 50
# The status choice → the statuses it reads. "waiting" is what a worker will still send.
QUEUE_STATUSES: dict[str, tuple[str, ...]] = {
    "waiting": WAITING,
    OutboxStatus.PENDING.value: (OutboxStatus.PENDING.value,),
    OutboxStatus.CLAIMED.value: (OutboxStatus.CLAIMED.value,),
    OutboxStatus.FAILED.value: (OutboxStatus.FAILED.value,),
    OutboxStatus.SKIPPED.value: (OutboxStatus.SKIPPED.value,),
    OutboxStatus.SENT.value: (OutboxStatus.SENT.value,),
    "all": tuple(OutboxStatus.values),
}
QUEUE_STATUS_CHOICES = [
    ("waiting", "未送信(送信待ち・送信処理中)"),
    (OutboxStatus.PENDING.value, "送信待ち"),
    (OutboxStatus.CLAIMED.value, "送信処理中"),
    (OutboxStatus.FAILED.value, "失敗"),
    (OutboxStatus.SKIPPED.value, "送信見送り・取り消し"),
    (OutboxStatus.SENT.value, "送信済"),
    ("all", "すべて"),
]
ACTION_WORDS = {"cancel": "取り消し", "retry": "再送"}
_CURSOR_RE = re.compile(r"(\d{1,20})\.(\d{1,20})")


# A typed year such as 0001 or 9999 is a valid date but not a day the queue can hold: the day
# after 9999-12-31, or a Tokyo midnight of 0001-01-01 in UTC, is outside the calendar (a 500).
QUEUE_FIRST_DAY, QUEUE_LAST_DAY = dt.date(2000, 1, 1), dt.date(2999, 12, 31)
_DAY_OUTSIDE = (
    f"日付は {QUEUE_FIRST_DAY:%Y-%m-%d}〜{QUEUE_LAST_DAY:%Y-%m-%d} の間で入力してください。"
)


def _due_day(label: str) -> forms.DateField:
    return forms.DateField(
        label=label,
        required=False,
        widget=forms.DateInput(
            attrs={"type": "date", "min": f"{QUEUE_FIRST_DAY}", "max": f"{QUEUE_LAST_DAY}"}
        ),
        error_messages={"invalid": "日付は 2026-11-24 の形で入力してください。"},
        validators=[
            MinValueValidator(QUEUE_FIRST_DAY, _DAY_OUTSIDE),
            MaxValueValidator(QUEUE_LAST_DAY, _DAY_OUTSIDE),
        ],
    )


class QueueFilterForm(forms.Form):
    status = forms.ChoiceField(label="状態", choices=QUEUE_STATUS_CHOICES, required=False)
    channel = forms.ChoiceField(
        label="チャネル", choices=[("", "すべて"), *Channel.choices], required=False
    )
    scenario = forms.TypedChoiceField(
        label="シナリオ", coerce=int, required=False, empty_value=None
    )
    due_from = _due_day("送信予定日(から)")
    due_to = _due_day("送信予定日(まで)")

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        scenarios = scenario_choices()
        cast(forms.TypedChoiceField, self.fields["scenario"]).choices = [
            ("", "すべて"),
            *scenarios,
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        start, end = data.get("due_from"), data.get("due_to")
        if start and end and start > end:
            # Otherwise the list is simply empty, as if nothing were queued in those days.
            self.add_error("due_from", "開始日が終了日より後になっています。")
        return data

    def queue(self) -> QueueFilter:
        """The filter from the valid fields; a field that cannot be used is left out of the
        list (and its error is shown). Cancelling or resending everything matching refuses a
        filter with such a field (see `_unusable`), since leaving it out widens the filter."""
        self.is_valid()
        data = getattr(self, "cleaned_data", {})
        start, end = data.get("due_from"), data.get("due_to")
        return QueueFilter(
            statuses=QUEUE_STATUSES[data.get("status") or "waiting"],
            channel=data.get("channel") or "",
            scenario_id=data.get("scenario"),
            due_from=_tokyo_midnight(start) if start else None,
            due_before=_tokyo_midnight(end + dt.timedelta(days=1)) if end else None,
        )


def _tokyo_midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time.min, tzinfo=timezone.get_current_timezone())


def _cursor(value: str | None) -> Cursor | None:
    match = _CURSOR_RE.fullmatch(value or "")
    if match is None:
        return None
    micros, pk = int(match[1]), int(match[2])
    try:
        at = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(microseconds=micros)
    except OverflowError:
        return None
    return at, pk


def _cursor_text(cursor: Cursor | None) -> str | None:
    if cursor is None:
        return None
    at, pk = cursor
    micros = (at - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)) // dt.timedelta(microseconds=1)
    return f"{micros}.{pk}"


def _filter_query(data: QueryDict) -> str:
    """The filter part of a query string (no cursor, no action): where actions return to."""
    kept = QueryDict(mutable=True)
    for name in QueueFilterForm.base_fields:
        value = data.get(name, "")
        if value:
            kept[name] = value
    return kept.urlencode()


def _queue_url(query: str) -> str:
    url = reverse("outbox:queue")
    return f"{url}?{query}" if query else url


@allow_roles(*MANAGE_ROLES)
@never_cache
@require_GET
def queue(request: HttpRequest) -> HttpResponse:
    form = QueueFilterForm(request.GET)
    queue_filter = form.queue()
    page = queue_page(
        queue_filter,
        size=QUEUE_PER_PAGE,
        after=_cursor(request.GET.get("after")),
        before=_cursor(request.GET.get("before")),
    )
    now = timezone.now()
    scenario_ids = {m.scenario_id for m in page.rows if m.scenario_id is not None}
    scenario_names = dict(Scenario.objects.filter(pk__in=scenario_ids).values_list("pk", "name"))
    rows = []
    for m in page.rows:
        # A claim whose lease ran out belongs to no live worker: it may be cancelled.
        expired = (
            m.status == OutboxStatus.CLAIMED and m.lease_until is not None and m.lease_until < now
        )
        rows.append(
            {
                "message": m,
                "scenario_name": scenario_names.get(m.scenario_id or 0),
                "expired": expired,
                "cancellable": m.status == OutboxStatus.PENDING or expired,
                "retryable": m.status == OutboxStatus.FAILED,
            }
        )
    filters = _filter_query(request.GET)
    base = _queue_url(filters)
    joiner = "&" if filters else "?"
    after, before = _cursor_text(page.after), _cursor_text(page.before)
    context = {
        "form": form,
        "rows": rows,
        "can_act": _is_admin(request),
        "any_cancellable": any(r["cancellable"] for r in rows),
        "any_retryable": any(r["retryable"] for r in rows),
        "may_cancel_matching": any(s in WAITING for s in queue_filter.statuses),
        "may_retry_matching": OutboxStatus.FAILED.value in queue_filter.statuses,
        "filters": filters,
        "hidden": list(QueryDict(filters).items()),
        "first_url": base,
        "next_url": f"{base}{joiner}after={after}" if after else None,
        "previous_url": f"{base}{joiner}before={before}" if before else None,
        "paged": bool(request.GET.get("after") or request.GET.get("before")),
        "ascending": queue_filter.ascending,
        "filtered": bool(filters),
        "config": DeliverySettings.load(),
    }
    return render(request, "web/outbox/queue.html", context)


def _action(value: str | None) -> str:
    return value if value in ACTION_WORDS else "cancel"


@allow_roles()
@never_cache
@require_GET
def queue_confirm(request: HttpRequest) -> HttpResponse:
    """The confirmation of a cancel or retry of every message matching the filter: how many,
    counted now, up to the newest message now (one queued later is not touched)."""
    action = _action(request.GET.get("action"))
    form = QueueFilterForm(request.GET)
    queue_filter = form.queue()
    filters = _filter_query(request.GET)
    if form.errors:
        return _unusable(request, filters)
    up_to_id = queue_newest_id()
    count = queue_count(queue_filter, action=action, up_to_id=up_to_id)
    return render(
        request,
        "web/outbox/queue_confirm.html",
        {
            "action": action,
            "word": ACTION_WORDS[action],
            "form": form,
            "status_label": dict(QUEUE_STATUS_CHOICES)[
                form.cleaned_data.get("status") or "waiting"
            ],
            "count": count,
            "up_to_id": up_to_id,
            "hidden": [(name, value) for name, value in QueryDict(filters).items()],
            "back_url": _queue_url(filters),
        },
    )


@allow_roles()
@require_POST
def queue_action(request: HttpRequest) -> HttpResponse:
    action = _action(request.POST.get("action"))
    filters = _filter_query(request.POST)
    back = _queue_url(filters)
    run = outbox_cancel if action == "cancel" else outbox_retry
    if request.POST.get("scope") == "matching":
        up_to = request.POST.get("up_to_id", "")
        if not up_to.isdigit():
            messages.error(request, "確認画面から操作してください。")
            return redirect(back)
        form = QueueFilterForm(request.POST)
        queue_filter = form.queue()
        if form.errors:
            return _unusable(request, filters)
        done = run(acting_user=_user(request), queue=queue_filter, up_to_id=int(up_to))
        asked = None
    else:
        ids = [int(pk) for pk in request.POST.getlist("ids") if pk.isdigit()][:QUEUE_PER_PAGE]
        if not ids:
            messages.error(request, "メッセージを選んでください。")
            return redirect(back)
        done = run(acting_user=_user(request), message_ids=ids)
        asked = len(ids)
    (messages.success if done else messages.info)(request, _action_result(action, done, asked))
    return redirect(back)


def _unusable(request: HttpRequest, filters: str) -> HttpResponse:
    """Back to the list, which names the unusable field: acting on "everything matching"
    without it would cancel or resend more than the admin asked for."""
    messages.error(
        request, "使えない条件があります。条件を直してから、まとめて取り消し・再送してください。"
    )
    return redirect(_queue_url(filters))


def _action_result(action: str, done: int, asked: int | None) -> str:
    if action == "cancel":
        said = f"{done:,}件を取り消しました。これらは送信されません。"
        left = "送信処理中・送信済みなどのため取り消せませんでした"
    else:
        said = f"{done:,}件を送信待ちに戻しました。ワーカーが順に送ります。"
        left = "失敗の状態ではないため戻しませんでした"
    if done == 0:
        return f"{ACTION_WORDS[action]}できるメッセージはありませんでした({left})。"
    if asked is not None and asked > done:
        return f"{said}(選んだうち{asked - done:,}件は{left})"
    return said
