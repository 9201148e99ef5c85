"""Customers through the API: register, change, read and find with Japanese input variants."""

from __future__ import annotations

from datetime import timedelta

import pytest

from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer, Identity, IdentityKind, TimelineEvent
from kizuna.customers.services import customer_update
from tests.factories import add_identity, make_customer
from tests.test_api_common import ApiClient, assert_error, full_access_client

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


NEW_CUSTOMER = {
    "identities": {"email": "Hanako@Example.JP", "phone": "０９０ー１２３４ー５６７８"},
    "profile": {
        "family_name": "山田",
        "given_name": "花子",
        "family_kana": "やまだ",
        "given_kana": "ﾊﾅｺ",
        "postal_code": "〒１５０－０００２",
        "prefecture": "東京",
        "address1": "渋谷区渋谷2-1-1",
        "birthday": "1985-04-12",
        "gender": "female",
    },
}


def test_register_a_customer_normalises_what_was_typed(api: ApiClient) -> None:
    # when
    response = api.post("/api/v1/customers", NEW_CUSTOMER)
    # then
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["family_kana"] == "ヤマダ"
    # readable in curl: Japanese as UTF-8, not \u escapes
    assert "ヤマダ" in response.content.decode("utf-8")
    assert response["Content-Type"] == "application/json; charset=utf-8"
    assert body["given_kana"] == "ハナコ"
    assert body["postal_code"] == "1500002"
    assert (body["prefecture"], body["prefecture_name"]) == (13, "東京都")
    customer = Customer.objects.get(pk=body["id"])
    assert set(customer.identities.values_list("kind", "value")) == {
        ("email", "hanako@example.jp"),
        ("phone", "+819012345678"),
    }
    assert AuditLog.objects.filter(action="customer.create", customer_id=customer.pk).exists()
    assert AuditLog.objects.get(action="customer.create").actor_label.startswith("api:")
    assert TimelineEvent.objects.filter(customer=customer, title="顧客登録").exists()


def test_an_identity_of_another_customer_is_refused_and_nothing_is_created(
    api: ApiClient,
) -> None:
    # given
    other = make_customer(family_name="佐藤")
    add_identity(other, IdentityKind.EMAIL, "hanako@example.jp")
    # when
    response = api.post("/api/v1/customers", NEW_CUSTOMER)
    # then
    error = assert_error(response, 422, "invalid_data")
    assert error["fields"] == {"identities.email": "この識別子は別の顧客に登録されています"}
    assert Customer.objects.count() == 1


@pytest.mark.parametrize(
    ("identities", "field"),
    [
        ({"email": "not-an-address"}, "identities.email"),
        ({"email": "a@b@example.jp"}, "identities.email"),
        ({"email": "a@.example.jp"}, "identities.email"),
        ({"email": "a..b@example.jp"}, "identities.email"),
        ({"email": '"x"@example.jp'}, "identities.email"),
        ({"email": "<script>@example.jp"}, "identities.email"),
        ({"email": "a" * 244 + "@example.jp"}, "identities.email"),  # 255: SMTP carries 254
        ({"phone": "12"}, "identities.phone"),
        ({"cart_member_id": "   "}, None),
    ],
)
def test_bad_identities_are_named(api: ApiClient, identities: dict[str, str], field: str) -> None:
    body = {"identities": identities, "profile": {"family_name": "山田"}}
    response = api.post("/api/v1/customers", body)
    if field is None:  # blank means "not given", not an error
        assert response.status_code == 201
        return
    error = assert_error(response, 422)
    assert field in error["fields"]
    assert identities[field.split(".")[1]] not in response.content.decode()


def test_a_bad_email_is_refused_in_japanese_and_nothing_is_stored(api: ApiClient) -> None:
    body = {"identities": {"email": "a@b@example.jp"}, "profile": {"family_name": "山田"}}
    error = assert_error(api.post("/api/v1/customers", body), 422)
    assert error["fields"] == {
        "identities.email": "メールアドレスとして読めません(@ が2つ以上あります)"
    }
    assert not Customer.objects.exists()


def test_a_carriers_legacy_address_is_a_customers_email(api: ApiClient) -> None:
    # docomo/au addresses from before 2009 break RFC 5322's dot rules but are delivered
    body = {
        "identities": {"email": "Taro..Yamada.@docomo.ne.jp"},
        "profile": {"family_name": "山田"},
    }
    response = api.post("/api/v1/customers", body)
    assert response.status_code == 201, response.content
    customer = Customer.objects.get(pk=response.json()["id"])
    identity = customer.identities.get(kind=IdentityKind.EMAIL)
    assert (identity.value, identity.display_value) == (
        "taro..yamada.@docomo.ne.jp",
        "Taro..Yamada.@docomo.ne.jp",
    )


def test_family_name_is_required(api: ApiClient) -> None:
    response = api.post("/api/v1/customers", {"profile": {"given_name": "花子"}})
    error = assert_error(response, 422)
    assert error["fields"] == {"profile.family_name": "必須項目です"}


@pytest.mark.parametrize("birthday", ["2999-01-01", "1850-05-05"])
def test_a_birthday_that_cannot_be_one_is_refused(api: ApiClient, birthday: str) -> None:
    # a typo (2999) or the order date in the wrong field would send birthday mail on a wrong
    # day and put the customer in an impossible age segment
    body = {"profile": {"family_name": "山田", "birthday": birthday}}
    response = api.post("/api/v1/customers", body)
    error = assert_error(response, 422)
    assert "今日までの日付" in error["fields"]["profile.birthday"]
    assert not Customer.objects.exists()


def test_patch_changes_only_the_fields_sent_and_is_audited(api: ApiClient) -> None:
    customer = make_customer(given_name="花子", address1="渋谷区渋谷2-1-1")
    response = api.patch(
        f"/api/v1/customers/{customer.pk}", {"address1": "港区南青山1-1-1", "address2": None}
    )
    assert response.status_code == 200, response.content
    customer.refresh_from_db()
    assert (customer.given_name, customer.address1, customer.address2) == (
        "花子",
        "港区南青山1-1-1",
        "",
    )
    audit = AuditLog.objects.get(action="customer.update", customer_id=customer.pk)
    assert audit.changes["address1"] == ["渋谷区渋谷2-1-1", "港区南青山1-1-1"]


def test_patch_with_if_match_is_refused_when_someone_changed_the_customer_since(
    api: ApiClient,
) -> None:
    # given: an integration read the customer, then staff changed the address on the page
    customer = make_customer(address1="渋谷区渋谷2-1-1")
    etag = api.get(f"/api/v1/customers/{customer.pk}")["ETag"]
    customer_update(
        customer=customer, changes={"address1": "港区南青山1-1-1"}, acting_user=Actor.system("t")
    )
    # when: the integration sends its change based on what it read
    stale = api.send(
        "PATCH",
        f"/api/v1/customers/{customer.pk}",
        {"address1": "新宿区西新宿2-8-1"},
        headers={"If-Match": etag},
    )
    # then: refused, the staff's address kept
    error = assert_error(stale, 412)
    assert error["code"] == "precondition_failed"
    customer.refresh_from_db()
    assert customer.address1 == "港区南青山1-1-1"
    # read again, the same change goes through and answers the new version
    fresh = api.get(f"/api/v1/customers/{customer.pk}")["ETag"]
    assert fresh != etag
    applied = api.send(
        "PATCH",
        f"/api/v1/customers/{customer.pk}",
        {"address1": "新宿区西新宿2-8-1"},
        headers={"If-Match": fresh},
    )
    assert applied.status_code == 200, applied.content
    assert applied["ETag"] == api.get(f"/api/v1/customers/{customer.pk}")["ETag"] != fresh
    # without If-Match (or with *) a PATCH applies as it always did
    for headers in ({}, {"If-Match": "*"}):
        plain = api.send(
            "PATCH", f"/api/v1/customers/{customer.pk}", {"address2": "1F"}, headers=headers
        )
        assert plain.status_code == 200, plain.content


def test_patch_cannot_blank_the_family_name(api: ApiClient) -> None:
    customer = make_customer()
    response = api.patch(f"/api/v1/customers/{customer.pk}", {"family_name": None})
    assert_error(response, 422)
    customer.refresh_from_db()
    assert customer.family_name == "山田"


def test_get_returns_the_customer_with_identities(api: ApiClient) -> None:
    customer = make_customer()
    add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp", "Hanako@Example.jp")
    body = api.get(f"/api/v1/customers/{customer.pk}").json()
    assert body["id"] == customer.pk
    assert body["identities"] == [{"kind": "email", "value": "Hanako@Example.jp", "send_to": True}]


def test_identities_name_the_one_messages_go_to_newest_observed_first(api: ApiClient) -> None:
    # given: an old address imported from an old order after the current one was added, so
    # mail goes to the one added first; of two LINE IDs the one added last is the newest
    customer = make_customer()
    current = add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp")
    imported = add_identity(customer, IdentityKind.EMAIL, "hanako@old.example.jp")
    Identity.objects.filter(pk=imported.pk).update(
        observed_at=current.observed_at - timedelta(days=30)
    )
    add_identity(customer, IdentityKind.LINE_USER, "U0001")
    add_identity(customer, IdentityKind.LINE_USER, "U0002")
    add_identity(customer, IdentityKind.PHONE, "+819012345678")
    # when
    got = api.get(f"/api/v1/customers/{customer.pk}").json()
    found = api.get("/api/v1/customers", {"email": "hanako@old.example.jp"}).json()
    # then: the same list read either way
    assert (
        found["results"][0]["identities"]
        == got["identities"]
        == [
            {"kind": "email", "value": "hanako@example.jp", "send_to": True},
            {"kind": "email", "value": "hanako@old.example.jp", "send_to": False},
            {"kind": "line_user", "value": "U0002", "send_to": True},
            {"kind": "line_user", "value": "U0001", "send_to": False},
            {"kind": "phone", "value": "+819012345678", "send_to": False},
        ]
    )


@pytest.mark.parametrize(
    "query",
    [
        {"email": "HANAKO@example.jp"},
        {"phone": "090-1234-5678"},
        {"phone": "+81 90 1234 5678"},
        {"cart_member_id": "Ｍ０００１２３"},
        {"kana": "やまだ"},
        {"kana": "ﾔﾏﾀﾞﾊﾅ"},
        {"kana": "ヤマ", "email": "hanako@example.jp"},
    ],
)
def test_search_finds_the_customer_by_any_written_form(
    api: ApiClient, query: dict[str, str]
) -> None:
    # given
    wanted = make_customer()
    add_identity(wanted, IdentityKind.EMAIL, "hanako@example.jp")
    add_identity(wanted, IdentityKind.PHONE, "+819012345678")
    add_identity(wanted, IdentityKind.CART_MEMBER, "M000123")
    make_customer(family_name="佐藤", family_kana="サトウ")
    # when
    body = api.get("/api/v1/customers", query).json()
    # then
    assert [c["id"] for c in body["results"]] == [wanted.pk]
    assert body["has_more"] is False


def test_search_conditions_combine_with_and(api: ApiClient) -> None:
    hanako = make_customer()
    add_identity(hanako, IdentityKind.EMAIL, "hanako@example.jp")
    make_customer(family_name="山本", family_kana="ヤマモト")
    body = api.get("/api/v1/customers", {"kana": "ヤマモト", "email": "hanako@example.jp"})
    assert body.json()["results"] == []


def test_search_pages_with_has_more(api: ApiClient) -> None:
    for given in ("アイ", "イチ", "ウメ"):
        make_customer(given_kana=given)
    body = api.get("/api/v1/customers", {"kana": "ヤマダ", "limit": 2}).json()
    assert [c["given_kana"] for c in body["results"]] == ["アイ", "イチ"]
    assert body["has_more"] is True


def test_search_without_conditions_is_a_clear_422(api: ApiClient) -> None:
    error = assert_error(api.get("/api/v1/customers"), 422)
    assert "query" in error["fields"]


def test_search_with_an_unreadable_phone_names_the_field(api: ApiClient) -> None:
    error = assert_error(api.get("/api/v1/customers", {"phone": "abc"}), 422)
    assert set(error["fields"]) == {"phone"}
