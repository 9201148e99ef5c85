"""Settings → API keys and webhook senders: for admins only.

A key's secret (and a webhook sender's signing secret) is shown once; only its hash (for keys)
is kept, so it cannot be shown again. The creating POST does not answer with the secret: it
keeps it in the session and redirects (POST/redirect/GET) to a page that shows it and takes it
out of the session, so the browser's Back or reload never asks to send the form again, and a
second look says the secret was shown already. Revoking is a POST from the list after an
explicit confirmation.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils import timezone
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from kizuna.accounts.access import allow_roles
from kizuna.accounts.apikeys import api_key_create, api_key_revoke
from kizuna.accounts.models import ApiKey, ApiScope
from kizuna.core import webhooks
from kizuna.core.models import WebhookSource
from kizuna.core.paging import Paginator
from kizuna.web.formtokens import issue_form_token, sent_before
from kizuna.web.http import posted

PER_PAGE = 50
# The create forms this session was given (see kizuna.web.formtokens): a reload of the page that
# shows a new secret sends the POST again, and must not make a second key or sender.
FORM_TOKENS_SESSION_KEY = "apikeys_form_tokens"
ALREADY_SENT = "このフォームはすでに送信済みです。キーの一覧を確かめてください。"
# The secret just created, until its page shows it: {"kind": "key" | "source", "id", "secret"}.
NEW_SECRET_SESSION_KEY = "apikeys_new_secret"  # noqa: S105 - a session key's name
ALREADY_SHOWN = {
    "key": (
        "このキーはすでに表示しました。控えが残らないため、もう一度表示することはできません。"
        "わからなくなった場合は、新しいキーを作って古いキーを失効させてください。"
    ),
    "source": (
        "この秘密鍵はすでに表示しました。もう一度表示することはできません。"
        "わからなくなった場合は、送信元を新しく追加して古い送信元を失効させてください。"
    ),
}
STALE_FORM = (
    "この画面を開いてから時間が経ったため、受け付けませんでした。"
    "お手数ですが、もう一度入力して送信してください。"
)


class ApiKeyForm(forms.Form):
    name = forms.CharField(
        label="名前(用途)",
        max_length=100,
        help_text="例: カート連携、LINE連携。一覧でキーを見分けるために使います。",
        error_messages={
            "required": "名前を入力してください。",
            "max_length": "名前は100文字以内で入力してください。",
        },
    )
    scopes = forms.MultipleChoiceField(
        label="権限",
        choices=[(scope.value, f"{scope.label}({scope.value})") for scope in ApiScope],
        widget=forms.CheckboxSelectMultiple,
        help_text="連携に必要な権限だけを選んでください。",
        error_messages={
            "required": "権限を1つ以上選んでください。",
            "invalid_choice": "選べない権限が含まれています。",
        },
    )


class WebhookSourceForm(forms.Form):
    name = forms.CharField(
        label="名前",
        max_length=100,
        help_text="例: EC-CUBE本店",
        error_messages={
            "required": "名前を入力してください。",
            "max_length": "名前は100文字以内で入力してください。",
        },
    )
    slug = forms.SlugField(
        label="識別名(半角英数字とハイフン)",
        max_length=50,
        help_text="受信URLの一部になります。例: eccube-main",
        error_messages={
            "required": "識別名を入力してください。",
            "invalid": "識別名は半角英数字・ハイフン・アンダースコアで入力してください。",
            "max_length": "識別名は50文字以内で入力してください。",
        },
    )


def webhook_urls(request: HttpRequest, source: WebhookSource) -> dict[str, str]:
    base = f"/api/v1/webhooks/{source.slug}"
    return {
        "orders": request.build_absolute_uri(f"{base}/orders"),
        "customers": request.build_absolute_uri(f"{base}/customers"),
        # For the mail service (ESP): bounces and complaints put the address on suppression.
        "email_events": request.build_absolute_uri(f"{base}/email-events"),
    }


def signing_facts() -> dict[str, Any]:
    """What the sender's page says about signing, from the values the check itself uses."""
    return {
        "timestamp_header": webhooks.TIMESTAMP_HEADER,
        "signature_header": webhooks.SIGNATURE_HEADER,
        "window_minutes": webhooks.TOLERANCE_SECONDS // 60,
        "secret_prefix": webhooks.SECRET_PREFIX,
        "docs_url": reverse("api-v1:openapi-view"),
    }


def _revoke(request: HttpRequest) -> None:
    action = request.POST.get("action")
    target = str(request.POST.get("id", ""))
    if not target.isdigit():
        messages.error(request, "対象が指定されていません。")
        return
    if action == "revoke_key":
        api_key = get_object_or_404(ApiKey, pk=int(target))
        api_key_revoke(api_key=api_key, acting_user=request.user)
        messages.success(request, f"APIキー「{api_key.name}」を失効させました。")
    elif action == "revoke_source":
        source = get_object_or_404(WebhookSource, pk=int(target))
        webhooks.webhook_source_revoke(source=source, acting_user=request.user)
        messages.success(request, f"Webhook送信元「{source.name}」を失効させました。")
    else:
        messages.error(request, "操作が正しくありません。")


@allow_roles()
@never_cache
@require_http_methods(["GET", "POST"])
def index(request: HttpRequest) -> HttpResponse:
    if request.method == "POST":
        _revoke(request)
        return redirect("apikeys:index")
    keys = ApiKey.objects.select_related("created_by", "revoked_by").order_by(
        "revoked_at", "-created_at", "-id"
    )
    sources = WebhookSource.objects.select_related("created_by").order_by(
        "revoked_at", "-created_at", "-id"
    )
    source_page = Paginator(sources, PER_PAGE).get_page(request.GET.get("sources"))
    context: dict[str, Any] = {
        "keys": Paginator(keys, PER_PAGE).get_page(request.GET.get("page")),
        "sources": source_page,
        "source_rows": [{"source": s, "urls": webhook_urls(request, s)} for s in source_page],
        "api_docs_url": reverse("api-v1:openapi-view"),
        "now": timezone.now(),  # whether a replaced secret is still accepted
    }
    return render(request, "web/apikeys/index.html", context)


def _already_sent(request: HttpRequest) -> HttpResponse:
    messages.info(request, ALREADY_SENT)
    return redirect("apikeys:index")


def _form_page(request: HttpRequest, form: forms.Form, kind: str) -> HttpResponse:
    context = {
        "form": form,
        "kind": kind,
        "form_token": issue_form_token(request, FORM_TOKENS_SESSION_KEY),
    }
    return render(request, "web/apikeys/form.html", context)


@allow_roles()
@never_cache
@require_http_methods(["GET", "POST"])
def create_key(request: HttpRequest) -> HttpResponse:
    form = ApiKeyForm(posted(request))
    if sent_before(request, form, FORM_TOKENS_SESSION_KEY, STALE_FORM):
        return _already_sent(request)
    if request.method == "POST" and form.is_valid():
        try:
            api_key, secret = api_key_create(
                name=form.cleaned_data["name"],
                scopes=form.cleaned_data["scopes"],
                acting_user=request.user,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _show_once(request, "key", api_key.pk, secret)
    return _form_page(request, form, "key")


@allow_roles()
@never_cache
@require_http_methods(["GET", "POST"])
def create_source(request: HttpRequest) -> HttpResponse:
    form = WebhookSourceForm(posted(request))
    if sent_before(request, form, FORM_TOKENS_SESSION_KEY, STALE_FORM):
        return _already_sent(request)
    if request.method == "POST" and form.is_valid():
        try:
            source, secret = webhooks.webhook_source_create(
                name=form.cleaned_data["name"],
                slug=form.cleaned_data["slug"],
                acting_user=request.user,
            )
        except ValidationError as exc:
            form.add_error(None, exc)
        else:
            return _show_once(request, "source", source.pk, secret)
    return _form_page(request, form, "source")


def _show_once(request: HttpRequest, kind: str, pk: int, secret: str) -> HttpResponse:
    request.session[NEW_SECRET_SESSION_KEY] = {"kind": kind, "id": pk, "secret": secret}
    return redirect("apikeys:created" if kind == "key" else "apikeys:source_created")


def _take_secret(request: HttpRequest, kind: str) -> tuple[int, str] | None:
    """The secret created for this page, taken out of the session: shown once only."""
    new = request.session.get(NEW_SECRET_SESSION_KEY)
    if not isinstance(new, dict) or new.get("kind") != kind:
        return None
    del request.session[NEW_SECRET_SESSION_KEY]
    return int(new["id"]), str(new["secret"])


def _already_shown(request: HttpRequest, kind: str) -> HttpResponse:
    title = "APIキーを作りました" if kind == "key" else "Webhook送信元を追加しました"
    context = {"title": title, "message": ALREADY_SHOWN[kind]}
    return render(request, "web/apikeys/shown.html", context)


@allow_roles()
@never_cache
@require_http_methods(["GET"])
def created_key(request: HttpRequest) -> HttpResponse:
    taken = _take_secret(request, "key")
    if taken is None:  # a reload, Back, or a bookmark
        return _already_shown(request, "key")
    pk, secret = taken
    api_key = get_object_or_404(ApiKey, pk=pk)
    return render(request, "web/apikeys/created.html", {"api_key": api_key, "secret": secret})


@allow_roles()
@never_cache
@require_http_methods(["GET"])
def created_source(request: HttpRequest) -> HttpResponse:
    taken = _take_secret(request, "source")
    if taken is None:
        return _already_shown(request, "source")
    pk, secret = taken
    source = get_object_or_404(WebhookSource, pk=pk)
    context = {
        "source": source,
        "secret": secret,
        "urls": webhook_urls(request, source),
        "signing": signing_facts(),
        "now": timezone.now(),
    }
    return render(request, "web/apikeys/source_created.html", context)


@allow_roles()
@never_cache
@require_http_methods(["GET", "POST"])
def rotate_source(request: HttpRequest, pk: int) -> HttpResponse:
    """秘密鍵を再発行: a confirmation page, then the new secret shown once; the old secret is
    still accepted for a day so the cart can be switched without losing deliveries."""
    source = get_object_or_404(WebhookSource, pk=pk, revoked_at__isnull=True)
    if request.method == "POST":
        try:
            source, secret = webhooks.webhook_source_rotate(source=source, acting_user=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return redirect("apikeys:index")
        return _show_once(request, "source", source.pk, secret)
    grace_hours = int(webhooks.ROTATION_GRACE.total_seconds() // 3600)
    context = {"source": source, "grace_hours": grace_hours}
    return render(request, "web/apikeys/rotate_confirm.html", context)
