"""基本情報を編集: the contact center corrects a customer's name, reading, address, birthday
and notes from the customer page — checked as on every route, audited, never overwriting a
change someone else made after the form was opened."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role, User
from kizuna.campaigns.consent_checks import Audience
from kizuna.campaigns.models import Channel
from kizuna.core.models import AuditLog
from kizuna.customers import privacy
from kizuna.customers.merge import customer_merge
from kizuna.customers.models import Customer, Identity, IdentityKind, TimelineEvent
from kizuna.customers.selectors import customer_search
from kizuna.customers.services import customer_update
from tests.factories import add_identity, make_customer
from tests.pages import form_token

pytestmark = pytest.mark.django_db
ClientFor = Callable[[Role], Client]


def url(customer: Customer) -> str:
    return reverse("web:customer_edit", args=[customer.pk])


def opened(client: Client, customer: Customer) -> dict[str, Any]:
    """The form as the browser sends it back untouched: every field with its shown value."""
    page = client.get(url(customer)).content.decode()
    data: dict[str, Any] = {}
    for name, value in re.findall(r'<input[^>]*name="(\w+)"[^>]*value="([^"]*)"', page):
        data[name] = value
    for name, body in re.findall(r'<textarea[^>]*name="(\w+)"[^>]*>(.*?)</textarea>', page, re.S):
        data[name] = body.strip("\n")
    for name, options in re.findall(r'<select name="(\w+)"[^>]*>(.*?)</select>', page, re.S):
        chosen = re.search(r'<option value="([^"]*)"[^>]*selected', options)
        data[name] = chosen.group(1) if chosen else ""
    data.pop("csrfmiddlewaretoken", None)
    return data


def test_an_operator_corrects_the_address_and_it_is_audited(client_for: ClientFor) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    assert (
        url(customer)
        in operator.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    )
    data = opened(operator, customer)
    data.update(postal_code="０６０ー０００１", prefecture="1", address1="札幌市中央区北一条西2-1")
    response = operator.post(url(customer), data, follow=True)
    page = response.content.decode()
    assert "基本情報を変更しました(郵便番号、都道府県、住所1(市区町村・番地))" in page
    customer.refresh_from_db()
    assert (customer.postal_code, customer.prefecture) == ("0600001", 1)
    audit = AuditLog.objects.get(action="customer.update", customer_id=customer.pk)
    assert audit.changes["address1"] == ["渋谷区渋谷2-1-1", "札幌市中央区北一条西2-1"]
    assert set(audit.changes) == {"postal_code", "prefecture", "address1"}
    assert TimelineEvent.objects.filter(
        customer=customer, title__startswith="顧客情報を変更"
    ).exists()


def test_a_bad_value_is_refused_by_its_field_and_the_input_is_kept(client_for: ClientFor) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    data = opened(operator, customer)
    data.update(family_kana="山田", postal_code="12", address1="新しい住所1-2-3")
    response = operator.post(url(customer), data)
    assert response.status_code == 400
    page = response.content.decode()
    # every bad field at once, not the first only
    assert "フリガナ(セイ)はカタカナ(またはひらがな)で入力してください" in page
    assert "郵便番号は7桁" in page
    assert 'value="新しい住所1-2-3"' in page
    customer.refresh_from_db()
    assert customer.address1 == "渋谷区渋谷2-1-1"
    assert not AuditLog.objects.filter(action="customer.update").exists()


def test_the_postal_code_is_shown_as_written_and_not_sent_when_left_alone(
    client_for: ClientFor,
) -> None:
    customer = make_customer(postal_code="1500002")
    operator = client_for(Role.OPERATOR)
    data = opened(operator, customer)
    assert data["postal_code"] == "150-0002"
    data.update(notes="折り返しは午前中")
    operator.post(url(customer), data)
    audit = AuditLog.objects.get(action="customer.update", customer_id=customer.pk)
    assert set(audit.changes) == {"notes"}


def test_a_field_left_alone_is_not_checked_again(client_for: ClientFor) -> None:
    """A reading stored before readings were checked does not block fixing the address."""
    customer = make_customer()
    Customer.objects.filter(pk=customer.pk).update(family_kana="山田")
    operator = client_for(Role.OPERATOR)
    data = opened(operator, customer)
    data.update(address2="サクラハイツ101")
    operator.post(url(customer), data)
    customer.refresh_from_db()
    assert customer.address2 == "サクラハイツ101"


def test_a_change_made_meanwhile_is_not_overwritten(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    customer = make_customer(notes="")
    operator = client_for(Role.OPERATOR)
    data = opened(operator, customer)
    # Someone else changes the record after the form was opened...
    customer_update(
        customer=customer, changes={"notes": "不在時は置き配"}, acting_user=users[Role.ADMIN]
    )
    data.update(notes="夜間の電話は不可")
    response = operator.post(url(customer), data)
    page = response.content.decode()
    assert response.status_code == 400
    assert "別の操作で変更されました" in page
    assert "不在時は置き配" in page  # shown as it is now
    assert "夜間の電話は不可" in page  # what the operator typed, kept
    customer.refresh_from_db()
    assert customer.notes == "不在時は置き配"
    # ...and sent again from that page, it saves.
    again = opened(operator, customer) | {"notes": "夜間の電話は不可"}
    operator.post(url(customer), again)
    customer.refresh_from_db()
    assert customer.notes == "夜間の電話は不可"


def test_a_future_birthday_and_an_empty_family_name_are_refused(client_for: ClientFor) -> None:
    customer = make_customer()
    operator = client_for(Role.OPERATOR)
    data = opened(operator, customer)
    tomorrow = dt.date.today() + dt.timedelta(days=2)
    data.update(birthday=tomorrow.isoformat(), family_name="")
    page = operator.post(url(customer), data).content.decode()
    assert "姓を入力してください" in page
    data["family_name"] = "山田"
    page = operator.post(url(customer), data).content.decode()
    assert "生年月日は1900年1月1日から今日までの日付にしてください" in page
    customer.refresh_from_db()
    assert customer.birthday is None


def test_merged_and_erased_records_are_not_edited(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    survivor, absorbed = make_customer(), make_customer(given_name="はな")
    customer_merge(survivor=survivor, absorbed=absorbed, acting_user=users[Role.ADMIN])
    operator = client_for(Role.OPERATOR)
    page = operator.get(url(absorbed), follow=True).content.decode()
    assert f"顧客ID {survivor.pk} に統合されています" in page
    erased = make_customer()
    privacy.customer_erase(customer=erased, acting_user=users[Role.ADMIN], reason="受付番号 9")
    page = operator.get(url(erased), follow=True).content.decode()
    assert "削除(匿名化)済みのため、変更できません" in page
    assert (
        url(erased)
        not in operator.get(reverse("web:customer_detail", args=[erased.pk])).content.decode()
    )


def test_marketers_read_the_page_but_have_no_edit_button(client_for: ClientFor) -> None:
    customer = make_customer()
    marketer = client_for(Role.MARKETER)
    page = marketer.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert url(customer) not in page
    assert marketer.get(url(customer)).status_code == 403


# --- メールアドレス・電話番号を追加 ------------------------------------------------------------


def add(client: Client, customer: Customer, kind: str, value: str):  # type: ignore[no-untyped-def]
    new = reverse("web:identity_new", args=[customer.pk])
    return client.post(new, {"kind": kind, "value": value, "form_token": form_token(client, new)})


def test_a_new_address_is_added_audited_and_is_where_mail_goes_now(
    client_for: ClientFor,
) -> None:
    customer = make_customer()
    add_identity(customer, IdentityKind.EMAIL, "old@example.jp")
    operator = client_for(Role.OPERATOR)
    detail = operator.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert reverse("web:identity_new", args=[customer.pk]) in detail
    response = add(operator, customer, "email", "Hanako.New@Example.JP")
    assert response.status_code == 302
    assert Identity.objects.filter(customer=customer, value="hanako.new@example.jp").exists()
    assert AuditLog.objects.filter(action="identity.add", customer_id=customer.pk).exists()
    audience = Audience.load([customer.pk])
    assert audience.address(customer, Channel.EMAIL, {}) == "hanako.new@example.jp"
    assert [c.pk for c in customer_search("old@example.jp", limit=5)] == [customer.pk]


def test_a_bad_or_taken_address_is_refused_on_the_field(client_for: ClientFor) -> None:
    customer, other = make_customer(), make_customer(given_name="太郎")
    add_identity(other, IdentityKind.PHONE, "+819012345678")
    operator = client_for(Role.OPERATOR)
    page = add(operator, customer, "phone", "090-1234-5678").content.decode()
    assert "この識別子は別の顧客に登録されています" in page
    page = add(operator, customer, "email", "hanako@@example").content.decode()
    assert 'value="hanako@@example"' in page
    assert not Identity.objects.filter(customer=customer).exists()


# --- 削除 (an address typed wrong, or no longer the customer's) ----------------------------------


def remove(client: Client, customer: Customer, identity: Identity):  # type: ignore[no-untyped-def]
    page = reverse("web:identity_remove", args=[customer.pk, identity.pk])
    return client.post(page, {"form_token": form_token(client, page)})


def test_a_mistyped_new_address_is_removed_and_mail_goes_to_the_old_one_again(
    client_for: ClientFor,
) -> None:
    customer = make_customer()
    add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp")
    operator = client_for(Role.OPERATOR)
    add(operator, customer, "email", "hanako@exmaple.jp")
    typo = Identity.objects.get(value="hanako@exmaple.jp")
    detail = operator.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert reverse("web:identity_remove", args=[customer.pk, typo.pk]) in detail
    # the confirmation says where mail goes once it is gone
    page = operator.get(reverse("web:identity_remove", args=[customer.pk, typo.pk]))
    assert "これからのメールは" in page.content.decode()
    assert "hanako@example.jp" in page.content.decode()

    url = reverse("web:identity_remove", args=[customer.pk, typo.pk])
    token = form_token(operator, url)
    response = operator.post(url, {"form_token": token})

    assert response.status_code == 302
    assert not Identity.objects.filter(pk=typo.pk).exists()
    audience = Audience.load([customer.pk])
    assert audience.address(customer, Channel.EMAIL, {}) == "hanako@example.jp"
    entry = AuditLog.objects.get(action="identity.remove", customer_id=customer.pk)
    assert entry.changes["value"] == ["hanako@exmaple.jp", None]
    assert entry.actor_label == "operator-user"
    # a second click of the same form removes nothing more and says so
    again = operator.post(url, {"form_token": token}, follow=True)
    assert "すでに送信済み" in again.content.decode()
    assert Identity.objects.filter(customer=customer).count() == 1


def test_the_last_address_warns_and_ids_from_other_systems_stay(client_for: ClientFor) -> None:
    customer = make_customer()
    only = add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp")
    member = add_identity(customer, IdentityKind.CART_MEMBER, "M-100")
    operator = client_for(Role.OPERATOR)
    page = operator.get(reverse("web:identity_remove", args=[customer.pk, only.pk]))
    assert "メールは届かなくなります" in page.content.decode()
    # a cart member ID would come back with the cart's next import: it has no 削除 link or form
    detail = operator.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert reverse("web:identity_remove", args=[customer.pk, member.pk]) not in detail
    # and a POST made anyway (with a token of the same forms) is refused by the service
    token = form_token(operator, reverse("web:identity_new", args=[customer.pk]))
    page_url = reverse("web:identity_remove", args=[customer.pk, member.pk])
    refused = operator.post(page_url, {"form_token": token}, follow=True)
    assert "連携元のシステムが付けるため削除できません" in refused.content.decode()
    assert Identity.objects.filter(pk=member.pk).exists()
    # and marketers, who read the page only, see no 削除 link at all
    marketer = client_for(Role.MARKETER)
    detail = marketer.get(reverse("web:customer_detail", args=[customer.pk])).content.decode()
    assert reverse("web:identity_remove", args=[customer.pk, only.pk]) not in detail


def test_an_erased_record_keeps_nothing_to_remove_and_takes_no_change(
    client_for: ClientFor,
) -> None:
    customer = make_customer()
    address = add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp")
    operator = client_for(Role.OPERATOR)
    page = reverse("web:identity_remove", args=[customer.pk, address.pk])
    token = form_token(operator, page)
    privacy.customer_erase(
        customer=customer,
        reason="本人の請求",
        acting_user=User.objects.get(username="operator-user"),
    )
    response = operator.post(page, {"form_token": token}, follow=True)
    assert "すでに削除されているか" in response.content.decode()
    assert not AuditLog.objects.filter(action="identity.remove").exists()
