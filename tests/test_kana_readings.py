"""A customer's readings (フリガナ セイ/メイ) hold kana only, by every route in: a reading in
kanji, digits or letters is never found by a kana search and prints as nonsense on postal and
DM lists, so the customer service refuses it, naming the field, and each route reports that as
it reports a bad postal code."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError

from kizuna.accounts.models import Role, User
from kizuna.commerce.importers import ImportOptions, ImportResult, run_import
from kizuna.commerce.models import Order
from kizuna.core import jp, webhooks
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import Customer, Identity
from kizuna.customers.selectors import customer_search
from kizuna.customers.services import customer_create, customer_update
from kizuna.demo import duplicates as demo_duplicates
from kizuna.demo.names import ERAS, FAMILY_NAMES
from tests.factories import make_customer, make_user
from tests.test_api_common import ApiClient, assert_error, full_access_client
from tests.test_webhooks import deliver, order_event

pytestmark = pytest.mark.django_db

FAMILY_REFUSED = "フリガナ(セイ)はカタカナ(またはひらがな)で入力してください"
GIVEN_REFUSED = "フリガナ(メイ)はカタカナ(またはひらがな)で入力してください"


@pytest.fixture
def operator() -> User:
    return make_user(Role.OPERATOR, "op-kana")


# --- the customer service ---------------------------------------------------------------------


@pytest.mark.parametrize("reading", ["山田", "123", "Yamada", "ヤマダ1"])
def test_create_refuses_a_reading_that_is_not_kana_and_writes_nothing(
    operator: User, reading: str
) -> None:
    with pytest.raises(ValidationError) as excinfo:
        customer_create(
            acting_user=operator, profile={"family_name": "山田", "family_kana": reading}
        )
    assert excinfo.value.message_dict == {"family_kana": [FAMILY_REFUSED]}
    assert not Customer.objects.exists()
    assert not AuditLog.objects.exists()


def test_update_refuses_a_given_reading_that_is_not_kana(operator: User) -> None:
    customer = make_customer()
    with pytest.raises(ValidationError) as excinfo:
        customer_update(customer=customer, changes={"given_kana": "花子"}, acting_user=operator)
    assert excinfo.value.message_dict == {"given_kana": [GIVEN_REFUSED]}
    customer.refresh_from_db()
    assert customer.given_kana == "ハナコ"


def test_readings_in_any_kana_script_are_stored_as_katakana_and_found(operator: User) -> None:
    customer = customer_create(
        acting_user=operator,
        profile={"family_name": "スミス", "family_kana": "ｽﾐｽ", "given_kana": "じょん・ぽーる"},
    )
    customer.refresh_from_db()
    assert (customer.family_kana, customer.given_kana) == ("スミス", "ジョン・ポール")
    assert [c.pk for c in customer_search("すみす", limit=10)] == [customer.pk]


def test_an_empty_reading_is_still_allowed(operator: User) -> None:
    customer = customer_create(
        acting_user=operator, profile={"family_name": "山田", "family_kana": "", "given_kana": " "}
    )
    customer_update(customer=customer, changes={"family_kana": ""}, acting_user=operator)
    customer.refresh_from_db()
    assert (customer.family_kana, customer.given_kana) == ("", "")


# --- the API and webhooks ---------------------------------------------------------------------


@pytest.fixture
def api(db: None) -> ApiClient:
    return full_access_client()


@pytest.mark.parametrize(
    ("field", "reading", "message"),
    [("family_kana", "山田", FAMILY_REFUSED), ("given_kana", "123", GIVEN_REFUSED)],
)
def test_the_api_refuses_a_reading_that_is_not_kana_as_it_refuses_a_bad_postal_code(
    api: ApiClient, field: str, reading: str, message: str
) -> None:
    response = api.post(
        "/api/v1/customers",
        {
            "identities": {"email": "hanako@example.jp"},
            "profile": {"family_name": "山田", field: reading},
        },
    )
    error = assert_error(response, 422, "invalid_data")
    assert error["fields"] == {f"profile.{field}": message}
    assert not Customer.objects.exists()


def test_the_api_patch_refuses_a_reading_in_letters(api: ApiClient) -> None:
    customer = make_customer()
    response = api.patch(f"/api/v1/customers/{customer.pk}", {"given_kana": "Hanako"})
    error = assert_error(response, 422, "invalid_data")
    assert error["fields"] == {"given_kana": GIVEN_REFUSED}
    customer.refresh_from_db()
    assert customer.given_kana == "ハナコ"


def test_a_webhook_order_with_a_reading_in_kanji_names_the_field_inside_data() -> None:
    _, secret = webhooks.webhook_source_create(
        name="EC-CUBE本店", slug="eccube", acting_user=Actor.system("test-admin")
    )
    event = order_event(
        customer={
            "identities": {"email": "new@example.jp"},
            "profile": {"family_name": "佐藤", "family_kana": "佐藤"},
        }
    )
    error = assert_error(deliver(secret, event), 422, "invalid_data")
    assert error["fields"] == {"data.customer.profile.family_kana": FAMILY_REFUSED}
    assert not Order.objects.exists()


# --- CSV imports ------------------------------------------------------------------------------


def _errors(result: ImportResult) -> list[tuple[int, str, str]]:
    return [(error.line, error.column, error.reason) for error in result.errors]


def _eccube_members(tmp_path: Path, rows: list[list[str]]) -> Path:
    path = tmp_path / "会員.csv"
    with path.open("w", encoding="cp932", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["会員ID", "お名前(姓)", "お名前(名)", "お名前(セイ)", "お名前(メイ)"])
        writer.writerows(rows)
    return path


def test_an_eccube_member_with_a_reading_in_kanji_is_a_row_error_against_its_column(
    tmp_path: Path,
) -> None:
    # given EC-CUBE members: one good (half-width kana), one whose セイ was typed in kanji
    path = _eccube_members(
        tmp_path, [["1", "山田", "花子", "ﾔﾏﾀﾞ", "ﾊﾅｺ"], ["2", "佐藤", "一郎", "佐藤", "イチロウ"]]
    )
    # when imported (leniently, as by default)
    result = run_import(path, ImportOptions(kind="customers"))
    # then the second row is reported with its line, column and reason, and not stored
    assert _errors(result) == [(3, "お名前(セイ)", FAMILY_REFUSED)]
    assert (result.status, result.customers["created"]) == ("rejected_rows", 1)
    assert list(Identity.objects.values_list("value", flat=True)) == ["1"]
    assert Customer.objects.get().family_kana == "ヤマダ"


def test_strict_mode_refuses_a_file_with_a_reading_in_digits(tmp_path: Path) -> None:
    path = _eccube_members(
        tmp_path,
        [["1", "山田", "花子", "ヤマダ", "ハナコ"], ["2", "佐藤", "一郎", "サトウ", "123"]],
    )
    result = run_import(path, ImportOptions(kind="customers", strict=True))
    assert result.status == "refused"
    assert _errors(result) == [(3, "お名前(メイ)", GIVEN_REFUSED)]
    assert not Customer.objects.exists()


def test_an_eccube_order_with_a_reading_in_letters_is_rejected_with_its_column(
    tmp_path: Path,
) -> None:
    header = [
        "注文番号",
        "受注日",
        "お名前(姓)",
        "お名前(セイ)",
        "商品コード",
        "商品名",
        "価格",
        "個数",
    ]
    path = tmp_path / "受注.csv"
    with path.open("w", encoding="cp932", newline="") as out:
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(header)
        writer.writerow(
            ["1001", "2026-05-01 10:00:00", "髙橋", "ﾀｶﾊｼ", "SK-01", "美容液", "1800", "1"]
        )
        writer.writerow(
            ["1002", "2026-05-01 11:00:00", "鈴木", "Suzuki", "SK-01", "美容液", "1800", "1"]
        )
    result = run_import(path, ImportOptions(kind="orders"))
    assert _errors(result) == [(3, "お名前(セイ)", FAMILY_REFUSED)]
    assert list(Order.objects.values_list("number", flat=True)) == ["1001"]


def test_a_one_column_reading_of_a_generic_file_is_checked_per_half(tmp_path: Path) -> None:
    # given a generic customers file whose フリガナ holds both readings in one column
    mapping = tmp_path / "customers.yml"
    mapping.write_text(
        "kind: customers\ncolumns:\n  email: メール\n  full_name: 氏名\n  full_kana: フリガナ\n",
        encoding="utf-8",
    )
    path = tmp_path / "customers.csv"
    path.write_text(
        "氏名,メール,フリガナ\n"
        "髙橋 花子,hanako@example.jp,たかはし はなこ\n"
        "鈴木 一郎,ichiro@example.jp,スズキ 一郎\n",
        encoding="utf-8",
    )
    result = run_import(path, ImportOptions(kind="customers", format="generic", mapping=mapping))
    assert _errors(result) == [(3, "フリガナ", GIVEN_REFUSED)]
    hanako = Customer.objects.get()
    assert (hanako.family_kana, hanako.given_kana) == ("タカハシ", "ハナコ")


# --- what the demo and tests generate ---------------------------------------------------------


def test_every_demo_name_has_a_reading_the_service_takes() -> None:
    names = [*FAMILY_NAMES, *(n for era in ERAS for n in (*era.female, *era.male))]
    refused = [name for name in names if not _taken(name.kana)]
    assert refused == []


def test_the_demo_misheard_readings_stay_kana() -> None:
    rng = random.Random(7)
    names = [*FAMILY_NAMES, *(n for era in ERAS for n in (*era.female, *era.male))]
    typos = [demo_duplicates._typo(rng, name.kana) for name in names for _ in range(5)]
    assert [t for t in typos if t is not None and not _taken(t)] == []


def _taken(reading: str) -> bool:
    try:
        return bool(jp.normalize_reading(reading))
    except jp.NormalisationError:
        return False
