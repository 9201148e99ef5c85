"""Shopify's orders export: UTF-8 with BOM, order fields on the first row of each order only."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.utils import timezone

from kizuna.commerce.importers import ImportOptions, ImportResult, run_import
from kizuna.commerce.importers.decoding import WAVE_DASH
from kizuna.commerce.importers.shopify import province
from kizuna.commerce.models import Order, OrderReversal, OrderStatus, Product, ProductKind
from kizuna.commerce.services import product_code_key, product_ensure
from kizuna.customers.models import ConsentChannel, ConsentMethod, Identity, IdentityKind
from kizuna.customers.selectors import customer_search

pytestmark = pytest.mark.django_db
SHOPIFY = Path(__file__).parent / "data" / "ingest" / "shopify_orders_bom.csv"


def run(**options: object) -> ImportResult:
    return run_import(SHOPIFY, ImportOptions(kind="orders", **options))  # type: ignore[arg-type]


def test_the_golden_file_is_utf8_with_a_bom() -> None:
    assert SHOPIFY.read_bytes().startswith(b"\xef\xbb\xbf")


def test_a_shopify_export_imports_its_orders_and_line_items() -> None:
    result = run()
    assert (result.status, result.format, result.encoding) == ("ok", "shopify", "utf-8")
    assert result.orders["created"] == 3
    order = Order.objects.get(number="#1001")
    # the second line item's row carries only Lineitem columns; it still belongs to #1001
    lines = sorted(
        order.lines.values_list("product__code", "product_name", "unit_price", "quantity")
    )
    assert lines == [
        ("BS-01", f"美容液{WAVE_DASH}夜用{WAVE_DASH}", 3980, 1),  # written with U+301C
        ("BS-02", f"化粧水{WAVE_DASH}朝用{WAVE_DASH}", 2980, 2),  # written with U+FF5E
    ]
    assert (order.shipping_fee, order.discount, order.total) == (600, 500, 3980 + 5960 - 500 + 600)
    assert order.ordered_at == timezone.make_aware(dt.datetime(2026, 5, 1, 10, 23, 45))
    assert order.source == "Shopify"


def test_fulfilment_and_cancellation_become_order_states() -> None:
    run()
    shipped = Order.objects.get(number="#1001")
    assert shipped.status == OrderStatus.SHIPPED
    assert shipped.shipments.get().shipped_on == dt.date(2026, 5, 2)
    assert Order.objects.get(number="#1002").status == OrderStatus.RECEIVED
    cancelled = Order.objects.get(number="#1003")
    assert cancelled.status == OrderStatus.CANCELLED
    reversal = cancelled.reversals.get()
    assert reversal.kind == OrderReversal.Kind.CANCEL
    assert reversal.occurred_at == timezone.make_aware(dt.datetime(2026, 5, 4, 12, 0))


def test_billing_details_make_the_customer() -> None:
    run()
    hanako = Order.objects.get(number="#1001").customer
    # Shopify writes Billing Name as "first last"
    assert (hanako.family_name, hanako.given_name) == ("髙橋", "花子")
    assert (hanako.prefecture, hanako.postal_code) == (13, "1500002")  # JP-13
    assert hanako.address1 == "渋谷区渋谷2-1-1"
    assert hanako.identities.get(kind=IdentityKind.PHONE).value == "+819011112222"
    assert Order.objects.get(number="#1002").customer.prefecture == 27  # "Osaka"
    assert Order.objects.get(number="#1003").customer.prefecture == 26  # "Kyōto"


def test_accepts_marketing_records_consent_with_evidence() -> None:
    run(consent_wording="shopify-2026")
    hanako = Identity.objects.get(kind=IdentityKind.EMAIL, value="hanako@example.jp").customer
    consent = hanako.consents.get(channel=ConsentChannel.EMAIL)
    assert consent.granted
    assert (consent.method, consent.source_form, consent.wording_version) == (
        ConsentMethod.IMPORT,
        "Shopify",
        "shopify-2026",
    )
    assert consent.granted_at == timezone.make_aware(dt.datetime(2026, 5, 1, 10, 23, 45))
    guest = Identity.objects.get(kind=IdentityKind.EMAIL, value="guest@example.com").customer
    assert not guest.consents.exists()  # Accepts Marketing: no


def test_a_line_item_without_sku_is_still_a_product() -> None:
    run()
    line = Order.objects.get(number="#1002").lines.get()
    assert line.product_name == "ギフトカード ¥5,000"
    # the code keeps the name's long-vowel mark (not ギフトカ-ド, a word nobody wrote)
    assert line.product.code == "SHOPIFY:ギフトカード ¥5,000"


def test_a_product_stored_under_its_older_code_is_still_matched_on_reimport() -> None:
    # given the export imported before product codes kept ー: the code was stored as
    # SHOPIFY:ギフトカ-ド ¥5,000 (segments and triggers name products by that code)
    run()
    Product.objects.filter(code="SHOPIFY:ギフトカード ¥5,000").update(
        code="SHOPIFY:ギフトカ-ド ¥5,000"
    )
    products = Product.objects.count()
    # when the same export is imported again
    again = run()
    # then nothing is new: the order is unchanged, and no second gift-card product appears
    assert (again.orders["created"], again.orders["updated"], again.orders["unchanged"]) == (
        0,
        0,
        3,
    )
    assert Product.objects.count() == products
    # and a new order of that product joins the product already stored
    Order.objects.filter(number="#1002").delete()
    assert run().orders["created"] == 1
    line = Order.objects.get(number="#1002").lines.get()
    assert line.product.code == "SHOPIFY:ギフトカ-ド ¥5,000"
    assert Product.objects.count() == products


def test_one_product_by_code_finds_the_older_form_too() -> None:
    # product_ensure (the subscriptions API) matches codes as the order writes do
    older = Product.objects.create(code="ワ-ド-01", name="ワード", price=0, kind=ProductKind.MAIN)
    assert product_ensure(code="ワード-01", name="x", price=0, kind=ProductKind.MAIN) == older
    new = product_ensure(code="セーター", name="セーター", price=0, kind=ProductKind.MAIN)
    assert new.code == "セーター"
    assert Product.objects.count() == 2


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("SHOPIFY:ギフトカード", "SHOPIFY:ギフトカード"),
        ("ｷﾞﾌﾄｶｰﾄﾞ", "ギフトカード"),  # half-width kana and its ｰ, as NFKC reads them
        ("らーめん", "らーめん"),
        ("ワーーイ", "ワーーイ"),
        ("KZー0001", "KZ-0001"),  # an IME's minus after a letter is still a hyphen
        ("BS－０１", "BS-01"),
        ("カ－ド", "カ-ド"),  # a full-width minus is a hyphen wherever it is
    ],
)
def test_product_codes_keep_the_long_vowel_mark_of_a_kana_word(given: str, stored: str) -> None:
    assert product_code_key(given) == stored


def test_the_name_order_can_be_overridden() -> None:
    run(name_order="family_first")
    customer = Order.objects.get(number="#1001").customer
    assert (customer.family_name, customer.given_name) == ("花子", "髙橋")


def test_reimport_changes_nothing() -> None:
    run()
    again = run()
    assert (again.orders["created"], again.orders["unchanged"], again.consents_granted) == (0, 3, 0)


@pytest.mark.parametrize(
    ("written", "code"),
    [("JP-13", 13), ("Tokyo", 13), ("Tōkyō", 13), ("東京都", 13), ("Hokkaido", 1), ("JP-47", 47)],
)
def test_province_spellings(written: str, code: int) -> None:
    assert province(written) == code


def test_an_order_number_typed_without_its_hash_finds_the_shopify_order() -> None:
    # given Shopify's export imported: its order numbers are stored as exported (#1001)
    run()
    hanako = Order.objects.get(number="#1001").customer
    # when the shop searches for the number as it reads it, with or without the #
    # then both find the order's customer
    assert customer_search("1001", limit=10) == [hanako]
    assert customer_search("#1001", limit=10) == [hanako]
    assert customer_search("＃１００１", limit=10) == [hanako]  # typed with a Japanese IME
