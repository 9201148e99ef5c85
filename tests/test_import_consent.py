"""E-mail consent from an import lands only on the record that holds the address, so that no
import — alone or followed by a merge of the duplicates it proposed — subscribes someone who
unsubscribed (特定電子メール法; RELIABILITY S6, S7)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from django.utils import timezone

from kizuna.campaigns.consent_checks import OPTED_OUT, Audience
from kizuna.campaigns.models import Channel
from kizuna.commerce.importers import ImportOptions, ImportResult, run_import
from kizuna.commerce.models import Order
from kizuna.core.audit import Actor
from kizuna.customers.merge import customer_merge
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentMethod,
    Customer,
    DuplicateCandidate,
    Identity,
    IdentityKind,
)
from kizuna.customers.resolution import customer_resolve
from tests.factories import grant_consent, withdraw_consent

pytestmark = pytest.mark.django_db

SYSTEM = Actor.system("test")
STAFF = Actor(user_id=None, label="operator-1")
ADDRESS = "oota_h53@example.jp"
CUSTOMERS_MAPPING = """\
kind: customers
columns:
  member_id: 会員ID
  email: メール
  phone: 電話
  family_name: 姓
  given_name: 名
  email_opt_in: メルマガ
"""
ORDERS_MAPPING = """\
kind: orders
columns:
  order_number: 受注番号
  ordered_at: 受注日時
  product_code: 商品番号
  unit_price: 単価
  quantity: 数量
  member_id: 会員ID
  email: メール
  full_name: 氏名
  email_opt_in: メルマガ
"""


@pytest.fixture
def unsubscribed() -> Customer:
    """#53, a member who subscribed on the shop's form and later left through the
    unsubscribe link of a newsletter."""
    customer = customer_resolve(
        identities={IdentityKind.CART_MEMBER: "M-53", IdentityKind.EMAIL: ADDRESS},
        profile={"family_name": "太田", "given_name": "浩"},
        acting_user=SYSTEM,
        source="test",
    ).customer
    signed_up = timezone.now() - dt.timedelta(days=400)
    grant_consent(customer, signed_up)
    withdraw_consent(customer, signed_up + dt.timedelta(days=30))
    return customer


def _import(tmp_path: Path, kind: str, mapping: str, csv_text: str) -> ImportResult:
    mapping_file = tmp_path / f"{kind}.yml"
    mapping_file.write_text(mapping, encoding="utf-8")
    csv_file = tmp_path / f"{kind}.csv"
    csv_file.write_text(csv_text, encoding="utf-8")
    options = ImportOptions(kind=kind, format="generic", mapping=mapping_file)
    return run_import(csv_file, options)


def _marketing_problem(customer: Customer) -> tuple[str, str | None]:
    """The address a newsletter would go to, and why it may not (None: it would be sent),
    as the send-time checks see it."""
    customer = Customer.objects.get(pk=customer.pk)
    audience = Audience.load([customer.pk])
    address = audience.address(customer, Channel.EMAIL, {})
    return address, audience.problem(customer, Channel.EMAIL, marketing=True, address=address)


def test_a_customer_csv_then_a_merge_does_not_resubscribe_who_unsubscribed(
    tmp_path: Path, unsubscribed: Customer
) -> None:
    # given #53 unsubscribed, and a customer CSV whose row has their address, another member
    # ID and メルマガ はい (the tester's reproduction)
    result = _import(
        tmp_path,
        "customers",
        CUSTOMERS_MAPPING,
        "会員ID,メール,電話,姓,名,メルマガ,誕生日\n"
        f"QA-M1,{ADDRESS},070-3200-7211,別人,花子,はい,1990-01-01\n",
    )
    # then the row makes a new customer, without the address, proposed as a duplicate…
    assert (result.status, result.customers["created"]) == ("ok", 1)
    newcomer = Identity.objects.get(kind=IdentityKind.CART_MEMBER, value="QA-M1").customer
    assert Identity.objects.get(kind=IdentityKind.EMAIL, value=ADDRESS).customer == unsubscribed
    candidate = DuplicateCandidate.objects.get()
    assert candidate.reason == "同じメールでカート会員IDが異なる"
    # …and with no e-mail consent: the yes was about an address it does not hold
    assert result.consents_granted == 0
    assert not Consent.objects.filter(customer=newcomer).exists()

    # when staff merge the pair keeping the new record
    customer_merge(survivor=newcomer, absorbed=unsubscribed, acting_user=STAFF)

    # then the merged customer holds the address and it is still unsubscribed
    assert _marketing_problem(newcomer) == (ADDRESS, OPTED_OUT)


def test_an_order_csv_row_for_someone_elses_address_records_no_consent(
    tmp_path: Path, unsubscribed: Customer
) -> None:
    result = _import(
        tmp_path,
        "orders",
        ORDERS_MAPPING,
        "受注番号,受注日時,商品番号,単価,数量,会員ID,メール,氏名,メルマガ\n"
        f"W-1,2026-05-01 10:00,G-1,1980,1,QA-M2,{ADDRESS},別人 花子,はい\n",
    )
    assert (result.status, result.orders["created"], result.consents_granted) == ("ok", 1, 0)
    buyer = Order.objects.get(number="W-1").customer
    assert buyer != unsubscribed
    assert not Consent.objects.filter(customer=buyer).exists()
    customer_merge(survivor=buyer, absorbed=unsubscribed, acting_user=STAFF)
    assert _marketing_problem(buyer) == (ADDRESS, OPTED_OUT)


def test_a_known_orders_customer_gets_no_consent_for_an_address_it_does_not_hold(
    tmp_path: Path, unsubscribed: Customer
) -> None:
    # given order W-2 imported for a guest with her own address and no answer to the magazine
    header = "受注番号,受注日時,商品番号,単価,数量,会員ID,メール,氏名,メルマガ\n"
    _import(
        tmp_path,
        "orders",
        ORDERS_MAPPING,
        header + "W-2,2026-05-01 10:00,G-1,1980,1,,guest@example.jp,佐藤 花子,\n",
    )
    # when a later export shows the order with #53's address and はい (an existing order keeps
    # its customer; the address is not attached to her)
    result = _import(
        tmp_path,
        "orders",
        ORDERS_MAPPING,
        header + f"W-2,2026-05-01 10:00,G-1,1980,1,,{ADDRESS},佐藤 花子,はい\n",
    )
    # then nobody is subscribed by it
    assert (result.status, result.consents_granted) == ("ok", 0)
    assert not Consent.objects.filter(customer=Order.objects.get(number="W-2").customer).exists()


def test_the_yes_is_still_recorded_for_the_customer_who_holds_the_address(
    tmp_path: Path,
) -> None:
    # given a member already known by her member ID and address
    known = customer_resolve(
        identities={IdentityKind.CART_MEMBER: "M-7", IdentityKind.EMAIL: "hanako@example.jp"},
        profile={"family_name": "髙橋"},
        acting_user=SYSTEM,
        source="test",
    ).customer
    # when a customer CSV says yes for her (the address written in capitals) and for a new
    # member whose address comes with the row
    result = _import(
        tmp_path,
        "customers",
        CUSTOMERS_MAPPING,
        "会員ID,メール,電話,姓,名,メルマガ\n"
        "M-7,Hanako@Example.jp,,髙橋,花子,はい\n"
        "M-8,jiro@example.jp,,鈴木,次郎,はい\n",
    )
    # then both are subscribed, with the import's evidence
    assert result.consents_granted == 2
    jiro = Identity.objects.get(kind=IdentityKind.EMAIL, value="jiro@example.jp").customer
    for customer in (known, jiro):
        consent = Consent.objects.get(customer=customer, channel=ConsentChannel.EMAIL)
        assert (consent.granted, consent.method) == (True, ConsentMethod.IMPORT)
