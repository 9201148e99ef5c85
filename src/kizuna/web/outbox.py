"""配信状況: the delivery monitor for staff.

Queue counts by channel and status, recent failures and skips with their reasons, the
suppression list (add/remove), the print/warehouse/call lists with their downloads, and, for
admins, the sending rules and the "sending paused" switch. Views validate and call
kizuna.campaigns.services / suppression; the reads come from kizuna.campaigns.selectors.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from django import forms
from django.conf import settings
from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role, User
from kizuna.campaigns import channels, selectors
from kizuna.campaigns.models import (
    Channel,
    DeliveryList,
    DeliverySettings,
    Suppression,
    SuppressionKind,
    SuppressionReason,
)
from kizuna.campaigns.sender import current_sender
from kizuna.campaigns.services import (
    delivery_list_close,
    delivery_list_export,
    delivery_settings_update,
    sending_pause,
)
from kizuna.campaigns.suppression import suppression_add, suppression_remove
from kizuna.core import jp
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


@allow_roles(*VIEW_ROLES)
@require_POST
def close_list(request: HttpRequest, pk: int) -> HttpResponse:
    delivery_list = get_object_or_404(DeliveryList, pk=pk)
    if not _manages(request) and delivery_list.channel != Channel.CALL:
        raise PermissionDenied
    # Named as in the table ("架電リスト #3", "郵送DM #1").
    name = f"{delivery_list.get_channel_display()} #{delivery_list.pk}"
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
        request, f"{name} を締めました。これ以降のメッセージは新しいリストに入ります。"
    )
    return redirect("outbox:dashboard")
