"""Editing a customer's 基本情報 from the customer page (「基本情報を編集」), and adding or
removing an e-mail address or phone number (「メールアドレス・電話番号を追加」, 削除).

A customer who moves, marries or finds a typo in their name calls the contact center; the
operator corrects the record on the spot. The form sends only the fields the operator changed
to kizuna.customers.services.customer_update, which normalises and checks them as on every
other route (postal code, prefecture, reading in kana, birthday) and records each change in the
audit log and on the timeline. Fields the operator left alone are not sent: a value stored
before a rule existed does not block correcting another field.

The form carries the record's version (customers.selectors.record_version): when someone else
changed the customer after the form was opened, nothing is saved and the operator is shown the
current values, instead of the later save silently undoing the other change.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import messages
from django.core.exceptions import ValidationError
from django.db import transaction
from django.http import Http404, HttpResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_http_methods

from kizuna.accounts.access import allow_roles
from kizuna.accounts.models import Role
from kizuna.core import jp
from kizuna.customers.models import (
    IDENTITY_NEWEST_FIRST,
    REMOVABLE_IDENTITY_KINDS,
    Customer,
    Gender,
    IdentityKind,
)
from kizuna.customers.selectors import record_version
from kizuna.customers.services import customer_update, identity_add, is_erased
from kizuna.customers.services import identity_remove as identity_remove_service
from kizuna.web.customer_forms import customer_or_404, survivor_redirect
from kizuna.web.formtokens import issue_form_token, sent_before
from kizuna.web.http import HtmxHttpRequest, errors_onto, posted

# The contact center corrects records (and admins); marketers read the page only.
EDIT_ROLES = (Role.OPERATOR,)
NOTES_MAX = 2000
STALE_VERSION = (
    "この顧客の情報は、この画面を開いたあとに別の操作で変更されました。"
    "保存していません。下に今の内容を表示したので、確かめてからもう一度変更してください。"
)


def _length(field: str) -> int:
    max_length: int | None = getattr(Customer._meta.get_field(field), "max_length", None)
    assert max_length is not None  # noqa: S101 - every text field here has one
    return max_length


def _text(field: str, label: str, *, required: bool = False, help_text: str = "") -> forms.Field:
    limit = _length(field)
    return forms.CharField(
        label=label,
        required=required,
        max_length=limit,
        help_text=help_text,
        error_messages={
            "required": f"{label}を入力してください",
            "max_length": f"{label}は{limit}文字以内で入力してください",
        },
    )


class ProfileForm(forms.Form):
    family_name = _text("family_name", "姓", required=True)
    given_name = _text("given_name", "名")
    family_kana = _text("family_kana", "セイ", help_text="カタカナ(ひらがなでも入力できます)")
    given_kana = _text("given_kana", "メイ")
    company = _text("company", "会社名")
    postal_code = forms.CharField(
        label="郵便番号",
        required=False,
        max_length=10,
        help_text="例: 150-0001(ハイフンはあってもなくても構いません)",
        error_messages={"max_length": "郵便番号は7桁の数字で入力してください"},
    )
    prefecture = forms.TypedChoiceField(
        label="都道府県",
        required=False,
        choices=[("", "—"), *jp.PREFECTURE_CHOICES],
        coerce=int,
        empty_value=None,
        error_messages={"invalid_choice": "都道府県を一覧から選んでください"},
    )
    address1 = _text("address1", "住所1(市区町村・番地)")
    address2 = _text("address2", "住所2(建物名・部屋番号)")
    birthday = forms.DateField(
        label="生年月日",
        required=False,
        widget=forms.DateInput(attrs={"type": "date"}),
        error_messages={"invalid": "生年月日は 1985-04-12 の形で入力してください"},
    )
    gender = forms.ChoiceField(
        label="性別",
        choices=Gender.choices,
        error_messages={"invalid_choice": "性別を一覧から選んでください"},
    )
    notes = forms.CharField(
        label="メモ",
        required=False,
        max_length=NOTES_MAX,
        widget=forms.Textarea(attrs={"rows": 4}),
        help_text="応対で気をつけること、お客様のご要望など。",
        error_messages={"max_length": f"メモは{NOTES_MAX:,}文字以内で入力してください"},
    )


# The profile fields this form edits: the form's own fields. Identities (e-mail, phone) are
# matched and merged on, and are not edited here; acquisition channel and registration come
# from the cart.
EDITABLE = tuple(ProfileForm.base_fields)


def _initial(customer: Customer) -> dict[str, Any]:
    initial = {name: getattr(customer, name) for name in EDITABLE}
    # As staff write it (920-3395), like the customer page; left alone, it is not sent.
    initial["postal_code"] = jp.format_postal_code(customer.postal_code)
    return initial


def _changes(form: ProfileForm) -> dict[str, Any]:
    """The fields the operator changed, as the service takes them (empty text stays "")."""
    return {name: form.cleaned_data[name] for name in form.changed_data}


def _save(request: HtmxHttpRequest, customer: Customer, form: ProfileForm, version: str) -> bool:
    """Apply the form under the customer's row lock if the record is still at `version`;
    False with errors on the form when it is not, or when the service refuses a value."""
    with transaction.atomic():
        locked = Customer.objects.select_for_update().get(pk=customer.pk)
        if version != record_version(locked):
            form.add_error(None, STALE_VERSION)
            return False
        changes = _changes(form)
        if not changes:
            messages.info(request, "変更された項目がないため、保存しませんでした。")
            return True
        try:
            customer_update(customer=locked, changes=changes, acting_user=request.user)
        except ValidationError as exc:
            errors_onto(form, exc)
            return False
    labels = "、".join(str(form.fields[name].label) for name in changes)
    messages.success(request, f"基本情報を変更しました({labels})。")
    return True


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def customer_edit(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """GET: the form with the stored values. POST: save the changed fields, back to the page."""
    customer = customer_or_404(pk)
    if moved := survivor_redirect(request, customer, "web:customer_edit"):
        return moved
    detail = reverse("web:customer_detail", args=[pk])
    if is_erased(customer):
        messages.error(request, "この顧客の個人データは削除(匿名化)済みのため、変更できません。")
        return redirect(detail)
    form = ProfileForm(posted(request), initial=_initial(customer))
    # The version the form was opened at (hidden in the form), kept across a refused save.
    version = str(request.POST.get("version", "")) if request.method == "POST" else ""
    if request.method == "POST" and form.is_valid():
        if _save(request, customer, form, version):
            return redirect(detail + "#profile")
        if STALE_VERSION in form.non_field_errors():
            # The operator has now seen the current values: sent again, the form saves.
            customer.refresh_from_db()
            version = ""
    context = {
        "customer": customer,
        "form": form,
        "version": version or record_version(customer),
        "stale": STALE_VERSION in form.non_field_errors(),
    }
    return render(request, "web/customers/edit.html", context, status=400 if form.errors else 200)


# --- a new e-mail address or phone number ----------------------------------------------------

IDENTITY_TOKENS_SESSION_KEY = "identity_form_tokens"
IDENTITY_STALE = (
    "この画面を開いてから時間が経ったため、受け付けませんでした。もう一度入力してください。"
)
IDENTITY_ALREADY_SENT = "このフォームはすでに送信済みです。識別子は一度だけ登録されています。"


class IdentityForm(forms.Form):
    kind = forms.ChoiceField(
        label="種類",
        choices=[
            (IdentityKind.EMAIL.value, "メールアドレス"),
            (IdentityKind.PHONE.value, "電話番号"),
        ],
        error_messages={"invalid_choice": "種類を一覧から選んでください"},
    )
    value = forms.CharField(
        label="メールアドレス・電話番号",
        max_length=jp.EMAIL_MAX_LENGTH,
        help_text="例: hanako@example.jp、090-1234-5678",
        error_messages={
            "required": "メールアドレスか電話番号を入力してください",
            "max_length": f"{jp.EMAIL_MAX_LENGTH}文字以内で入力してください",
        },
    )


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def identity_new(request: HtmxHttpRequest, pk: int) -> HttpResponse:
    """A customer tells the contact center a new address or number: it is added to the record
    (`identity_add`: normalised, audited) and, being the newest, is where messages go from now
    on (campaigns.consent_checks reads a customer's identities newest first). The old one stays
    as history and still finds the customer in search."""
    customer = customer_or_404(pk)
    if moved := survivor_redirect(request, customer, "web:identity_new"):
        return moved
    form = IdentityForm(posted(request))
    back = reverse("web:customer_detail", args=[pk]) + "#identities"
    if sent_before(request, form, IDENTITY_TOKENS_SESSION_KEY, IDENTITY_STALE):
        messages.info(request, IDENTITY_ALREADY_SENT)
        return redirect(back)
    if request.method == "POST" and form.is_valid():
        kind = IdentityKind(form.cleaned_data["kind"])
        try:
            identity_add(
                customer=customer,
                kind=kind,
                value=form.cleaned_data["value"],
                acting_user=request.user,
                source="コールセンター",
            )
        except ValidationError as exc:
            for error in exc.messages:
                form.add_error("value", error)
        else:
            messages.success(request, f"{kind.label}を登録しました。")
            return redirect(back)
    context = {
        "customer": customer,
        "form": form,
        "form_token": issue_form_token(request, IDENTITY_TOKENS_SESSION_KEY),
    }
    status = 400 if form.errors else 200
    return render(request, "web/customers/identity_new.html", context, status=status)


# --- removing one ------------------------------------------------------------------------------

IDENTITY_REMOVED_BEFORE = "このフォームはすでに送信済みです。識別子は削除されています。"


@allow_roles(*EDIT_ROLES)
@never_cache
@require_http_methods(["GET", "POST"])
def identity_remove(request: HtmxHttpRequest, pk: int, identity_pk: int) -> HttpResponse:
    """GET: what removing the address or number changes (where messages go next). POST: remove
    it (`identity_remove`, audited). The undo of an address typed wrong, or the end of one
    the customer no longer has; adding it again is the undo of this."""
    customer = customer_or_404(pk)
    if moved := survivor_redirect(request, customer, "web:identity_remove", identity_pk):
        return moved
    back = reverse("web:customer_detail", args=[pk]) + "#identities"
    identity = customer.identities.filter(pk=identity_pk).first()
    form = forms.Form(posted(request))
    if sent_before(request, form, IDENTITY_TOKENS_SESSION_KEY, IDENTITY_STALE):
        messages.info(request, IDENTITY_REMOVED_BEFORE)
        return redirect(back)
    if identity is None:
        if request.method != "POST":
            raise Http404("この識別子は見つかりません")
        # Removed (or the record erased) while the confirmation was open.
        messages.error(request, "この識別子はすでに削除されているか、別の顧客に移っています。")
        return redirect(back)
    if request.method == "POST" and form.is_valid():
        try:
            identity_remove_service(identity=identity, acting_user=request.user)
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
        else:
            label = IdentityKind(identity.kind).label
            messages.success(
                request, f"{label}「{identity.display_value or identity.value}」を削除しました。"
            )
        return redirect(back)
    others = customer.identities.filter(kind=identity.kind).exclude(pk=identity.pk)
    context = {
        "customer": customer,
        "identity": identity,
        "removable": identity.kind in REMOVABLE_IDENTITY_KINDS,
        # The one messages go to once this is gone: the newest left of its kind.
        "next_newest": others.order_by(*IDENTITY_NEWEST_FIRST).first(),
        "form_token": issue_form_token(request, IDENTITY_TOKENS_SESSION_KEY),
    }
    return render(request, "web/customers/identity_remove.html", context)
