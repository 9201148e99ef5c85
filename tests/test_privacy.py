"""APPI requests (RELIABILITY D7): what a DPO relies on when a customer asks "what do you hold
about me?" (export) and "delete it" (erasure) — on the customer page, the API and in the data."""

from __future__ import annotations

import datetime as dt
import io
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command
from django.db import DatabaseError, connection, models, transaction
from django.db.models import Q
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import ApiScope, Role
from kizuna.analytics.models import AnalyticsRun, CustomerScore, RunStatus
from kizuna.campaigns.consent_checks import Audience
from kizuna.campaigns.models import (
    Channel,
    OutboxMessage,
    OutboxStatus,
    Purpose,
    Suppression,
    SuppressionKind,
    SuppressionReason,
)
from kizuna.campaigns.outbox import outbox_enqueue
from kizuna.campaigns.suppression import address_hash, suppression_add
from kizuna.commerce.models import Order, OrderReversal, OrderStatus, Shipment
from kizuna.core.append_only import AUDIT_GUARDED_COLUMNS, REDACTED
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog, IdempotencyKey
from kizuna.customers import privacy, resolution
from kizuna.customers.merge import customer_merge, customer_merge_undo
from kizuna.customers.models import (
    BehaviourEvent,
    BehaviourKind,
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
    Customer,
    CustomerMerge,
    DuplicateCandidate,
    DuplicateStatus,
    IdentityKind,
    Tag,
    TimelineEvent,
)
from kizuna.customers.selectors import customer_search
from kizuna.customers.services import consent_grant, customer_create, customer_update, identity_add
from kizuna.loyalty.models import PointEntry
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import points_earn
from kizuna.subscriptions.models import CancelReason
from kizuna.subscriptions.services import subscription_cancel, subscription_create
from kizuna.support.models import ContactChannel, Direction
from kizuna.support.services import contact_record
from tests.factories import make_customer, make_order, make_product
from tests.test_api_common import ApiClient, make_key

pytestmark = pytest.mark.django_db

STAFF = Actor.system("test-staff")
DPO = Actor(user_id=None, label="dpo-admin")

# The person who asks: values distinctive enough that finding one anywhere means a leak.
NAME = ("鈴木", "美穂子")
KANA = ("スズキ", "ミホコ")
EMAIL = "mihoko.suzuki@example.jp"
PHONE_TYPED = "090-3141-5926"
PHONE = "+819031415926"
LINE_ID = "U5f3a9c0ddeadbeef"
ADDRESS = "世田谷区北沢3-5-8"
BUILDING = "北沢ハイツ201"
NOTE = "鈴木様は午前中の連絡を希望"
CONTACT_BODY = "美穂子様より、住所変更のご依頼(北沢ハイツ201)"
PII = (
    *NAME,
    *KANA,
    EMAIL,
    PHONE,
    PHONE_TYPED,
    LINE_ID,
    ADDRESS,
    BUILDING,
    NOTE,
    "美穂子様",
)


@dataclass
class Person:
    customer: Customer
    other: Customer
    order: Order


def _build_person() -> Person:
    # The LINE ID was blocked before it belonged to anyone: its audit row names no customer.
    suppression_add(
        kind=SuppressionKind.LINE_USER,
        address=LINE_ID,
        reason=SuppressionReason.COMPLAINT,
        acting_user=STAFF,
    )
    customer = customer_create(
        acting_user=STAFF,
        profile={
            "family_name": "鈴",
            "given_name": NAME[1],
            "family_kana": KANA[0],
            "given_kana": KANA[1],
            "postal_code": "1550031",
            "prefecture": 13,
            "address1": ADDRESS,
            "address2": BUILDING,
            "birthday": dt.date(1985, 4, 12),
            "gender": "female",
            "notes": NOTE,
        },
        identities={
            IdentityKind.EMAIL: EMAIL,
            IdentityKind.PHONE: PHONE_TYPED,
            IdentityKind.LINE_USER: LINE_ID,
            IdentityKind.CART_MEMBER: "cart-77821",
        },
    )
    # An edit: the audit row holds old → new values of the name.
    customer_update(customer=customer, changes={"family_name": NAME[0]}, acting_user=STAFF)
    customer.refresh_from_db()
    customer.tags.add(Tag.objects.create(name="VIP"))
    consent_grant(
        customer=customer,
        channel=ConsentChannel.EMAIL,
        method=ConsentMethod.WEB_FORM,
        source_form="会員登録フォーム",
        wording_version="v3",
        acting_user=STAFF,
    )
    product = make_product()
    order = make_order(customer, product=product)
    Shipment.objects.create(order=order, shipped_on=dt.date(2026, 5, 2), tracking_number="1234")
    OrderReversal.objects.create(
        order=order, kind="return", occurred_at=timezone.now(), reason=NOTE, refund_amount=100
    )
    subscription = subscription_create(
        customer=customer,
        product=product,
        terms={"unit_price": 3980, "cycle_kind": "days", "cycle_days": 30},
        started_on=dt.date(2026, 5, 1),
        acting_user=STAFF,
    )
    subscription_cancel(
        subscription=subscription, reason=CancelReason.MOVING, note=NOTE, acting_user=STAFF
    )
    points_earn(customer=customer, amount=300, acting_user=STAFF, reason="購入ポイント")
    contact_record(
        customer=customer,
        channel=ContactChannel.PHONE,
        direction=Direction.INBOUND,
        summary=f"{NAME[0]}様 住所変更",
        body=CONTACT_BODY,
        acting_user=STAFF,
    )
    BehaviourEvent.objects.create(
        customer=customer,
        kind=BehaviourKind.PAGE_VIEW,
        occurred_at=timezone.now(),
        url=f"https://shop.example.jp/mypage?email={EMAIL}",
        payload={"form": {"email": EMAIL, "name": NAME[0]}},
    )
    for key, status in (("sent", OutboxStatus.SENT), ("waiting", OutboxStatus.PENDING)):
        message = outbox_enqueue(
            customer=customer,
            channel=Channel.EMAIL,
            purpose=Purpose.MARKETING,
            dedupe_key=f"privacy-{key}",
            content={"subject": f"{NAME[0]}様へ", "text": f"{NAME[1]}様、いつもありがとう"},
            send_after=timezone.now(),
        )
        assert message is not None
        OutboxMessage.objects.filter(pk=message.pk).update(
            status=status,
            address=EMAIL,
            sent_at=timezone.now() if status == OutboxStatus.SENT else None,
        )
    run = AnalyticsRun.objects.create(
        as_of=dt.date(2026, 5, 1), backend="duckdb", status=RunStatus.DONE
    )
    CustomerScore.objects.create(
        run=run, as_of=run.as_of, customer=customer, first_purchase_on=run.as_of,
        last_purchase_on=run.as_of, purchase_count=1, total_spend=4980, avg_spend=4980,
        tenure_days=0, days_since_last=0, r_score=3, f_score=1, m_score=2,
        cpm_segment="first_active", rfm_segment="new",
    )  # fmt: skip
    other = make_customer(family_name="佐藤", given_name="一郎", family_kana="サトウ")
    make_order(other)
    contact_record(
        customer=other,
        channel=ContactChannel.EMAIL,
        direction=Direction.INBOUND,
        summary="佐藤様 返品",
        acting_user=STAFF,
    )
    a, b = sorted([customer, other], key=lambda c: c.pk)
    DuplicateCandidate.objects.create(customer_a=a, customer_b=b, reason="氏名カナと郵便番号が一致")
    # The address was on the suppression list (a bounce) before erasure, in clear.
    suppression_add(
        kind=SuppressionKind.EMAIL,
        address=EMAIL,
        reason=SuppressionReason.BOUNCE,
        acting_user=STAFF,
    )
    # An API answer stored for idempotent replay repeats the customer as created.
    IdempotencyKey.objects.create(
        api_key=make_key(name="カート")[0],
        key="k-1",
        method="POST",
        path="/api/v1/customers",
        body_hash="0" * 64,
        status_code=201,
        response_body=json.dumps(
            {"id": customer.pk, "family_name": NAME[0], "identities": [{"value": EMAIL}]}
        ),
        created_at=timezone.now(),
    )
    return Person(customer=customer, other=other, order=order)


@pytest.fixture
def person() -> Person:
    return _build_person()


# --- which tables: nothing may be forgotten ----------------------------------------------------


def _pointing_at(model: type[models.Model]) -> set[str]:
    """Tables with a foreign key to `model` (reverse relations, hidden "+" ones included)."""
    labels = set()
    for field in model._meta.get_fields(include_hidden=True):
        if isinstance(field, models.ForeignObjectRel) and not field.many_to_many:
            related = cast(type[models.Model], field.related_model)
            # the tags' own link table: tags are cleared through the many-to-many relation
            if not related._meta.auto_created:
                labels.add(related._meta.label)
    return labels


def test_every_table_that_points_at_a_customer_is_exported_and_erased() -> None:
    # A new table with a customer foreign key must be named in HOLDINGS (exported under a key,
    # with a decided erasure); otherwise export would be incomplete and erasure would miss it.
    held = {holding.label for holding in privacy.HOLDINGS}
    pointing = _pointing_at(Customer) - {"customers.Customer"}  # merged_into: the profile
    assert "customers.DuplicateCandidate" in pointing  # hidden ("+") relations are seen too
    assert pointing - held == set()
    assert all(
        h.erasure in {privacy.Erasure.KEEP, privacy.Erasure.ANONYMISE, privacy.Erasure.DELETE}
        for h in privacy.HOLDINGS
    )


def test_every_table_under_a_held_table_is_exported_too() -> None:
    # Rows that belong to a held row (an order's lines) but not to the customer directly must be
    # nested in the export, or be held through a customer key of their own.
    held = {holding.label for holding in privacy.HOLDINGS}
    nested = {
        cast(
            type[models.Model], apps.get_model(h.label)._meta.get_field(name).related_model
        )._meta.label
        for h in privacy.HOLDINGS
        for name, _ in h.nested
    }
    assert nested <= privacy.NESTED_TABLES
    for holding in privacy.HOLDINGS:
        children = _pointing_at(apps.get_model(holding.label))
        assert children - held - privacy.NESTED_TABLES == set(), holding.label


# --- export ------------------------------------------------------------------------------------


def _all_ids(export: dict[str, Any], key: str) -> set[int]:
    return {row["id"] for row in export[key]}


def test_export_holds_every_row_of_the_person_and_nothing_of_another(person: Person) -> None:
    customer, other = person.customer, person.other
    export = privacy.customer_export(customer, DPO)
    for holding in privacy.HOLDINGS:
        expected = set(privacy.holding_rows(holding, [customer.pk]).values_list("pk", flat=True))
        assert _all_ids(export, holding.key) == expected, holding.key
    assert export["customer"]["family_name"] == NAME[0]
    assert export["customer"]["tags"] == ["VIP"]
    (order,) = export["orders"]
    assert order["total"] == person.order.total
    assert [line["amount"] for line in order["lines"]] == [person.order.total]
    assert [s["tracking_number"] for s in order["shipments"]] == ["1234"]
    assert len(order["reversals"]) == 1
    assert len(export["subscriptions"][0]["deliveries"]) == (
        person.customer.subscriptions.get().deliveries.count()
    )
    assert {row["address"] for row in export["suppressions"]} == {EMAIL, LINE_ID}
    assert export["consent_events"][0]["source_form"] == "会員登録フォーム"
    assert export["audit_log"]
    assert all(row["customer_id"] == customer.pk for row in export["audit_log"])
    text = json.dumps(export, ensure_ascii=False)
    for value in ("佐藤", "一郎", "佐藤様 返品"):
        assert value not in text
    assert other.orders.get().number not in text
    # the duplicate candidate names both records: it is about this person too
    assert _all_ids(export, "duplicate_candidates") == {DuplicateCandidate.objects.get().pk}


def test_export_is_json_with_iso_dates_and_stable_keys(person: Person) -> None:
    export = json.loads(json.dumps(privacy.customer_export(person.customer, DPO)))
    assert export["format"] == "kizuna.customer-export"
    assert export["version"] == 1
    assert set(export) == {
        "format", "version", "exported_at", "customer_id", "customer", "merged_records",
        *(h.key for h in privacy.HOLDINGS), "suppressions", "audit_log",
    }  # fmt: skip
    assert export["customer"]["birthday"] == "1985-04-12"
    assert dt.datetime.fromisoformat(export["customer"]["registered_at"]).tzinfo is not None
    assert dt.datetime.fromisoformat(export["exported_at"]).tzinfo is not None


def test_export_is_audited_without_personal_data(person: Person) -> None:
    privacy.customer_export(person.customer, DPO)
    row = AuditLog.objects.get(action="customer.export")
    assert (row.actor_label, row.customer_id) == ("dpo-admin", person.customer.pk)
    recorded = json.dumps(row.changes, ensure_ascii=False)
    assert '\\"orders\\": 1' in recorded
    assert not any(value in recorded for value in PII)


def test_erasure_keeps_an_earlier_exports_row_counts(person: Person) -> None:
    privacy.customer_export(person.customer, DPO)
    exported = AuditLog.objects.get(action="customer.export").changes
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 7")
    assert AuditLog.objects.get(action="customer.export").changes == exported


def test_export_includes_records_merged_into_the_customer(person: Person) -> None:
    absorbed = make_customer(family_name="鈴木", given_name="みほこ")
    make_order(absorbed)
    Customer.objects.filter(pk=absorbed.pk).update(merged_into=person.customer)
    export = privacy.customer_export(person.customer, DPO)
    assert [r["id"] for r in export["merged_records"]] == [absorbed.pk]
    assert {o["customer_id"] for o in export["orders"]} == {person.customer.pk, absorbed.pk}
    absorbed.refresh_from_db()
    with pytest.raises(privacy.PrivacyError, match="統合されています"):
        privacy.customer_export(absorbed, DPO)


# --- erasure -----------------------------------------------------------------------------------


def _pii_left() -> list[tuple[str, str, str]]:
    """(table, column, value) of every one of the person's values still stored somewhere."""
    return [
        (table, column, value)
        for table, column, text in _every_text_in_the_database()
        for value in PII
        if value in text
    ]


def _every_text_in_the_database() -> list[tuple[str, str, str]]:
    """(table, column, value) for every text and JSON value of every table."""
    found = []
    for model in apps.get_models(include_auto_created=True):
        fields = [
            f
            for f in model._meta.concrete_fields
            if isinstance(f, models.CharField | models.TextField | models.JSONField)
        ]
        if not fields:
            continue
        names = [f.attname for f in fields]
        for row in model._base_manager.values_list(*names):
            for name, value in zip(names, row, strict=True):
                if value in (None, "", {}, []):
                    continue
                text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                found.append((model._meta.db_table, name, text))
    return found


def test_erase_leaves_no_personal_value_anywhere_in_the_database(person: Person) -> None:
    # given: the person's values are spread over many tables
    texts = _every_text_in_the_database()
    assert sum(1 for _, _, text in texts if EMAIL in text) >= 5
    # when
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 2026-0042")
    # then: not one table still holds one of them
    assert _pii_left() == []
    customer = Customer.objects.get(pk=person.customer.pk)
    assert customer.birthday is None
    assert customer.prefecture is None
    assert customer.full_name == privacy.ERASED_NAME
    # and the other customer is untouched
    other = Customer.objects.get(pk=person.other.pk)
    assert other.full_name == "佐藤 一郎"
    assert other.contacts.get().summary == "佐藤様 返品"


def test_erase_keeps_orders_amounts_points_and_consent_evidence(person: Person) -> None:
    customer = person.customer
    orders = list(Order.objects.filter(customer=customer).values("number", "total", "subtotal"))
    evidence = list(ConsentEvent.objects.filter(customer=customer).values_list("pk", flat=True))
    balance = points_balance(customer)
    privacy.customer_erase(customer=customer, acting_user=DPO, reason="受付番号 2026-0042")
    assert list(Order.objects.filter(customer=customer).values("number", "total", "subtotal")) == (
        orders
    )
    assert person.order.lines.get().amount == orders[0]["total"]
    assert points_balance(customer) == balance
    kept = ConsentEvent.objects.filter(customer=customer)
    assert set(evidence) <= set(kept.values_list("pk", flat=True))
    # the grant's evidence (when, how, which form and wording) is still there
    assert kept.filter(
        action="grant", source_form="会員登録フォーム", wording_version="v3"
    ).exists()
    # and the erasure withdrew the consent, as evidence too
    assert kept.filter(action="withdraw").exists()
    assert not customer.consents.filter(granted=True).exists()
    assert PointEntry.objects.filter(customer=customer).count() == 1


def test_erase_cancels_waiting_messages_and_scenario_steps(person: Person) -> None:
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 1")
    statuses = dict(
        OutboxMessage.objects.filter(customer=person.customer).values_list("dedupe_key", "status")
    )
    assert statuses == {"privacy-sent": OutboxStatus.SENT, "privacy-waiting": OutboxStatus.SKIPPED}
    sent = OutboxMessage.objects.get(dedupe_key="privacy-sent")
    assert sent.content == {"subject": REDACTED, "text": REDACTED}


def test_erased_address_is_suppressed_by_hash_and_a_later_create_does_not_resubscribe(
    person: Person,
) -> None:
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 1")
    rows = set(Suppression.objects.values_list("kind", "address", "reason"))
    assert (SuppressionKind.EMAIL, address_hash(EMAIL), SuppressionReason.BOUNCE) in rows
    assert (SuppressionKind.LINE_USER, address_hash(LINE_ID), SuppressionReason.COMPLAINT) in rows
    assert (SuppressionKind.PHONE, address_hash(PHONE), SuppressionReason.MANUAL) in rows
    assert not Suppression.objects.filter(address=EMAIL).exists()
    # when: the same address comes back through the API with a fresh consent
    api = ApiClient(make_key(ApiScope.CUSTOMERS_WRITE)[1])
    response = api.post(
        "/api/v1/customers",
        {"identities": {"email": EMAIL.upper()}, "profile": {"family_name": "鈴木"}},
    )
    assert response.status_code == 201
    again = Customer.objects.get(pk=response.json()["id"])
    consent_grant(
        customer=again,
        channel=ConsentChannel.EMAIL,
        method=ConsentMethod.IMPORT,
        source_form="CSV",
        wording_version="import",
        acting_user=STAFF,
    )
    # then: marketing to it is refused at send time
    audience = Audience.load([again.pk])
    address = audience.address(again, Channel.EMAIL, {})
    assert address == EMAIL
    problem = audience.problem(again, Channel.EMAIL, marketing=True, address=address)
    assert problem is not None
    assert "配信停止アドレス" in problem


def test_export_after_erasure_lists_the_hashed_suppressions_of_the_person(
    person: Person,
) -> None:
    # Another person's address on the list, and one added after the erasure: not theirs.
    suppression_add(
        kind=SuppressionKind.EMAIL,
        address="someone.else@example.jp",
        reason=SuppressionReason.BOUNCE,
        acting_user=STAFF,
    )
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 1")
    suppression_add(
        kind=SuppressionKind.EMAIL,
        address="later@example.jp",
        reason=SuppressionReason.MANUAL,
        acting_user=STAFF,
    )
    export = privacy.customer_export(person.customer, acting_user=DPO)
    listed = {(row["kind"], row["address"]) for row in export["suppressions"]}
    assert listed == {
        (SuppressionKind.EMAIL, address_hash(EMAIL)),
        (SuppressionKind.PHONE, address_hash(PHONE)),
        (SuppressionKind.LINE_USER, address_hash(LINE_ID)),
    }


def test_erased_customer_cannot_be_found_by_name_phone_or_email(person: Person) -> None:
    assert customer_search(NAME[0], limit=10)
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 1")
    for query in (NAME[0], "スズキ", EMAIL, PHONE_TYPED, f"{NAME[0]} {NAME[1]}"):
        assert customer_search(query, limit=10) == [], query
    api = ApiClient(make_key(ApiScope.CUSTOMERS_READ)[1])
    for params in ({"email": EMAIL}, {"phone": PHONE_TYPED}, {"kana": "スズキ"}):
        assert api.get("/api/v1/customers", params).json()["results"] == []


def test_erase_is_audited_and_refused_a_second_time(person: Person) -> None:
    report = privacy.customer_erase(
        customer=person.customer, acting_user=DPO, reason="受付番号 2026-0042"
    )
    assert report.customer_ids == [person.customer.pk]
    row = AuditLog.objects.get(action="customer.erase")
    assert (row.actor_label, row.customer_id) == ("dpo-admin", person.customer.pk)
    assert row.changes["reason"] == [None, "受付番号 2026-0042"]
    person.customer.refresh_from_db()
    assert privacy.is_erased(person.customer)
    # the rows that recorded the person's values keep who, when, what and which fields
    update = AuditLog.objects.get(action="customer.update", customer_id=person.customer.pk)
    assert update.changes == {"family_name": [REDACTED, REDACTED]}
    assert update.actor_label == STAFF.label
    with pytest.raises(privacy.PrivacyError, match="既に削除"):
        privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="again")


def test_an_erased_record_takes_no_new_personal_data(person: Person) -> None:
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 2026-0043")
    erased = Customer.objects.get(pk=person.customer.pk)
    with pytest.raises(ValidationError, match="削除\\(匿名化\\)済み"):
        customer_update(customer=erased, changes={"family_name": "鈴木"}, acting_user=STAFF)
    with pytest.raises(ValidationError, match="削除\\(匿名化\\)済み"):
        identity_add(
            customer=erased, kind=IdentityKind.EMAIL, value="back@example.jp", acting_user=STAFF
        )
    with pytest.raises(ValidationError, match="削除\\(匿名化\\)済み"):
        consent_grant(customer=erased, channel=ConsentChannel.EMAIL, method=ConsentMethod.WEB_FORM,
                      source_form="会員登録", wording_version="v3", acting_user=STAFF)  # fmt: skip
    erased.refresh_from_db()
    assert erased.family_name == privacy.ERASED_NAME
    assert not erased.identities.exists()


def test_erase_anonymises_records_merged_into_the_customer_and_refuses_the_absorbed(
    person: Person,
) -> None:
    absorbed = make_customer(family_name="鈴木", given_name="みほこ", notes=NOTE)
    Customer.objects.filter(pk=absorbed.pk).update(merged_into=person.customer)
    with pytest.raises(privacy.PrivacyError, match=f"顧客ID {person.customer.pk}"):
        privacy.customer_erase(customer=absorbed, acting_user=DPO, reason="受付番号 1")
    report = privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付 1")
    assert report.customer_ids == [person.customer.pk, absorbed.pk]
    absorbed.refresh_from_db()
    assert (absorbed.full_name, absorbed.notes) == (privacy.ERASED_NAME, "")


@pytest.mark.parametrize("reason", ["", "   ", "x" * 201])
def test_erase_needs_a_short_reason_and_changes_nothing_without_it(
    person: Person, reason: str
) -> None:
    with pytest.raises(privacy.PrivacyError, match="理由"):
        privacy.customer_erase(customer=person.customer, acting_user=DPO, reason=reason)
    assert Customer.objects.get(pk=person.customer.pk).family_name == NAME[0]


def test_erase_is_refused_while_a_subscription_still_delivers(person: Person) -> None:
    subscription_create(
        customer=person.customer,
        product=make_product(),
        terms={"unit_price": 3980, "cycle_kind": "days", "cycle_days": 30},
        started_on=dt.date(2026, 5, 1),
        acting_user=STAFF,
    )
    with pytest.raises(privacy.PrivacyError, match="定期購入が1件") as refused:
        privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 1")
    # the message says which one, and where staff cancel it
    assert "継続中" in str(refused.value)
    assert "顧客ページの「定期購入」の「解約する」" in str(refused.value)
    assert person.customer.identities.count() == 4


def test_erase_closes_open_duplicate_candidates_as_moot_not_as_different_people(
    person: Person,
) -> None:
    """QA: the erasure recorded the admin as having decided 「別人」 without a dismiss audit
    row. Nobody compared the pair: the erasure closes it, says so, and audits it."""
    candidate = DuplicateCandidate.objects.get()
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 1")
    candidate.refresh_from_db()
    assert (candidate.status, candidate.decided_by) == (
        DuplicateStatus.ERASED,
        privacy.ERASURE_DECIDER,
    )
    assert candidate.get_status_display() == "削除(匿名化)により対象外"
    assert not AuditLog.objects.filter(action="duplicate.dismiss").exists()
    rows = AuditLog.objects.filter(action=privacy.CLOSE_CANDIDATE_ACTION).order_by("customer_id")
    assert [(r.customer_id, r.actor_label, r.changes["status"]) for r in rows] == [
        (pk, "dpo-admin", ["open", "erased"])
        for pk in sorted((person.customer.pk, person.other.pk))
    ]


@pytest.mark.parametrize("side", ["absorbed", "survivor"])
def test_erase_takes_the_name_out_of_an_undone_merge_on_the_other_record(
    person: Person, side: str
) -> None:
    """A merge writes each record's name on the other's timeline, and the survivor's audit rows
    hold what it filled in from the absorbed record. Once undone, the other record is someone
    else's: erasing the person must reach those texts too."""
    # given: her record was merged with 佐藤一郎's by mistake, and the merge taken back
    if side == "absorbed":
        survivor, absorbed = person.other, person.customer
    else:
        survivor, absorbed = person.customer, person.other
    merge = customer_merge(survivor=survivor, absorbed=absorbed, acting_user=STAFF)
    customer_merge_undo(merge=merge, acting_user=STAFF)
    label = CustomerMerge._meta.label
    on_other = TimelineEvent.objects.filter(customer=person.other, ref_entity=label)
    assert any(NAME[1] in title for title in on_other.values_list("title", flat=True))
    # when
    privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 1")
    # then: not one table holds one of her values; his record says a merge happened
    assert _pii_left() == []
    titles = sorted(on_other.values_list("title", flat=True))
    assert titles
    assert all(REDACTED in title or "への統合を取り消し" in title for title in titles), titles
    if side == "absorbed":  # the values the merge filled in on his record, and took back
        filled = AuditLog.objects.get(action="customer.merge", customer_id=person.other.pk)
        assert filled.changes["birthday"] == [None, REDACTED]
        assert filled.changes["notes"] == ["", REDACTED]
    other = Customer.objects.get(pk=person.other.pk)
    assert other.full_name == "佐藤 一郎"


def test_an_import_that_read_the_record_before_its_erasure_proposes_no_pair_with_it(
    person: Person, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The erasure closes the person's open candidates; an import that had already read her
    identities when it ran must not queue a new pair with the anonymous record afterwards."""
    read = resolution._Chunk._read

    def read_then_erase(chunk: Any, keyed: Any) -> None:
        read(chunk, keyed)
        privacy.customer_erase(customer=person.customer, acting_user=DPO, reason="受付番号 1")

    monkeypatch.setattr(resolution._Chunk, "_read", read_then_erase)
    # her e-mail with a new cart member ID: normally a new record and a pair to review
    found = resolution.customer_resolve(
        identities={IdentityKind.CART_MEMBER: "cart-99999", IdentityKind.EMAIL: EMAIL},
        profile={"family_name": "鈴木"},
        acting_user=STAFF,
        source="test",
    )
    assert found.created
    assert not DuplicateCandidate.objects.filter(
        Q(customer_a=found.customer) | Q(customer_b=found.customer)
    ).exists()
    assert not DuplicateCandidate.objects.filter(status=DuplicateStatus.OPEN).exists()


def test_a_record_merged_twice_is_refused_naming_the_record_it_lives_in_now(
    person: Person,
) -> None:
    """QA: `kizuna customers export 1669` (1669 → 5006 → 5026) said to export 5006, which then
    refused and pointed to 5026."""
    first, middle = make_customer(), make_customer()
    Customer.objects.filter(pk=middle.pk).update(merged_into=person.customer)
    Customer.objects.filter(pk=first.pk).update(merged_into=middle)
    first.refresh_from_db()
    said = f"顧客ID {person.customer.pk} に統合されています"
    with pytest.raises(privacy.PrivacyError, match=said):
        privacy.customer_export(first, STAFF)
    with pytest.raises(privacy.PrivacyError, match=said):
        privacy.customer_erase(customer=first, acting_user=DPO, reason="受付番号 1")
    with pytest.raises(CommandError, match=said):
        call_command("customers", "export", str(first.pk), stdout=io.StringIO())


# --- the audit log's one exception: redaction --------------------------------------------------


def _audit(changes: dict[str, Any]) -> AuditLog:
    return AuditLog.objects.create(
        at=timezone.now(),
        actor_label="t",
        action="customer.update",
        entity="customers.Customer",
        entity_id="1",
        customer_id=1,
        changes=changes,
    )


def _sql_update(row: AuditLog, column: str, value: Any) -> None:
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE core_auditlog SET {column} = %s WHERE id = %s", [value, row.pk])  # noqa: S608


def test_the_audit_log_admits_a_redaction() -> None:
    row = _audit({"family_name": ["鈴木", "佐藤"], "prefecture": [None, 13]})
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE core_auditlog SET changes = %s WHERE id = %s",
            [
                json.dumps({"family_name": [REDACTED, "佐藤"], "prefecture": [None, REDACTED]}),
                row.pk,
            ],
        )
    row = AuditLog.objects.get(pk=row.pk)
    assert row.changes == {"family_name": [REDACTED, "佐藤"], "prefecture": [None, REDACTED]}


@pytest.mark.parametrize(
    "new_changes",
    [
        {"family_name": ["鈴木", "田中"]},  # a new value, not the marker
        {"family_name": [REDACTED]},  # a shorter list
        {"family_name": ["鈴木", "佐藤"], "extra": REDACTED},  # a new key
        {},  # keys removed
        {"family_name": REDACTED},  # a list replaced as a whole
    ],
)
def test_the_audit_log_refuses_anything_else_in_changes(new_changes: dict[str, Any]) -> None:
    row = _audit({"family_name": ["鈴木", "佐藤"]})
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        _sql_update(row, "changes", json.dumps(new_changes))


@pytest.mark.parametrize("column", [c for c in AUDIT_GUARDED_COLUMNS if c != "id"])
def test_a_redaction_cannot_touch_another_column(column: str) -> None:
    row = _audit({"family_name": ["鈴木", "佐藤"]})
    field = AuditLog._meta.get_field(column)
    value: Any = "2000-01-01 00:00:00+00:00" if column == "at" else "9"
    if isinstance(field, models.BigIntegerField):
        value = 9
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute(
            f"UPDATE core_auditlog SET {column} = %s, changes = %s WHERE id = %s",  # noqa: S608
            [value, json.dumps({"family_name": [REDACTED, REDACTED]}), row.pk],
        )


def test_every_audit_column_but_changes_is_guarded() -> None:
    # A column added to the audit log must be added to the trigger's list (and its migration).
    columns = {f.column for f in AuditLog._meta.concrete_fields}
    assert columns - {"changes"} == set(AUDIT_GUARDED_COLUMNS)


@pytest.mark.skipif(connection.vendor != "postgresql", reason="SQLite guards DELETE in the ORM")
def test_the_audit_log_still_refuses_delete() -> None:
    row = _audit({"family_name": ["鈴木", "佐藤"]})
    with (
        pytest.raises(DatabaseError, match="append-only"),
        transaction.atomic(),
        connection.cursor() as cursor,
    ):
        cursor.execute("DELETE FROM core_auditlog WHERE id = %s", [row.pk])


# --- the customer page -------------------------------------------------------------------------


def test_operator_downloads_the_export_as_json(
    person: Person, client_for: Callable[[Role], Client]
) -> None:
    response = client_for(Role.OPERATOR).post(
        reverse("web:customer_export", args=[person.customer.pk])
    )
    assert response.status_code == 200
    assert response["Content-Type"] == "application/json"
    assert f"kizuna-customer-{person.customer.pk}.json" in response["Content-Disposition"]
    data = json.loads(response.content)
    assert data["customer"]["given_name"] == NAME[1]
    assert AuditLog.objects.get(action="customer.export").actor_label == "operator-user"


def test_the_customer_page_offers_each_role_what_it_may_do(
    person: Person, client_for: Callable[[Role], Client]
) -> None:
    url = reverse("web:customer_detail", args=[person.customer.pk])
    admin = client_for(Role.ADMIN).get(url).content.decode()
    operator = client_for(Role.OPERATOR).get(url).content.decode()
    marketer = client_for(Role.MARKETER).get(url).content.decode()
    assert "個人データを書き出す" in admin
    assert "個人データを削除(匿名化)" in admin
    assert "個人データを書き出す" in operator
    assert "個人データを削除(匿名化)" not in operator
    assert "個人データを書き出す" not in marketer
    assert (
        client_for(Role.MARKETER)
        .post(reverse("web:customer_export", args=[person.customer.pk]))
        .status_code
        == 403
    )
    assert (
        client_for(Role.OPERATOR)
        .post(
            reverse("web:customer_erase", args=[person.customer.pk]),
            {"reason": "x", "confirm": str(person.customer.pk)},
        )
        .status_code
        == 403
    )
    assert Customer.objects.get(pk=person.customer.pk).family_name == NAME[0]


def test_erase_page_needs_the_customer_id_typed_again(
    person: Person, client_for: Callable[[Role], Client]
) -> None:
    client = client_for(Role.ADMIN)
    url = reverse("web:customer_erase", args=[person.customer.pk])
    page = client.get(url).content.decode()
    assert "元に戻せません" in page
    assert "確認のため顧客IDを入力" in page
    wrong = client.post(url, {"reason": "受付番号 1", "confirm": str(person.other.pk)})
    assert wrong.status_code == 422
    assert "入力された顧客IDがこの顧客と一致しません" in wrong.content.decode()
    assert not privacy.is_erased(person.customer)
    done = client.post(
        url, {"reason": "受付番号 1", "confirm": str(person.customer.pk)}, follow=True
    )
    html = done.content.decode()
    assert "削除済み(匿名化)" in html
    assert "の個人データを削除(匿名化)しました" in html
    assert NAME[1] not in html
    assert ADDRESS not in html
    person.customer.refresh_from_db()
    assert privacy.is_erased(person.customer)


def test_erase_page_accepts_the_customer_id_typed_in_full_width_digits(
    person: Person, client_for: Callable[[Role], Client]
) -> None:
    full_width = str(person.customer.pk).translate(
        str.maketrans("0123456789", "０１２３４５６７８９")
    )
    url = reverse("web:customer_erase", args=[person.customer.pk])
    done = client_for(Role.ADMIN).post(url, {"reason": "受付番号 1", "confirm": full_width})
    assert done.status_code == 302
    person.customer.refresh_from_db()
    assert privacy.is_erased(person.customer)


def test_erase_page_warns_of_an_open_duplicate_candidate_before_anything_is_sent(
    person: Person, client_for: Callable[[Role], Client]
) -> None:
    """QA: the page never said an open candidate existed, though the other record (probably
    the same person) keeps their name and member ID after the erasure."""
    page = client_for(Role.ADMIN).get(reverse("web:customer_erase", args=[person.customer.pk]))
    html = page.content.decode()
    assert "確認待ちの重複候補があります" in html
    other = reverse("web:customer_detail", args=[person.other.pk])
    assert f'<a href="{other}">顧客ID {person.other.pk}</a>' in html
    assert "その記録も削除(匿名化)が必要か確認してください" in html
    assert "確認のため顧客IDを入力" in html  # a warning, not a refusal


def test_erase_page_lists_running_subscriptions_and_offers_the_form_once_cancelled(
    person: Person, client_for: Callable[[Role], Client]
) -> None:
    subscription = subscription_create(
        customer=person.customer,
        product=make_product(),
        terms={"unit_price": 3980, "cycle_kind": "days", "cycle_days": 30},
        started_on=dt.date(2026, 5, 1),
        acting_user=STAFF,
    )
    client = client_for(Role.ADMIN)
    url = reverse("web:customer_erase", args=[person.customer.pk])
    html = client.get(url).content.decode()
    assert "継続中・休止中の定期購入があるため、まだ削除できません" in html
    assert f"#{subscription.pk} {subscription.product.name}(継続中)" in html
    assert reverse("web:customer_detail", args=[person.customer.pk]) + "#subscriptions" in html
    assert "確認のため顧客IDを入力" not in html
    # when: cancelled from the customer page's button
    cancel = reverse("web:subscription_cancel", args=[person.customer.pk, subscription.pk])
    assert client.post(cancel, {"reason": "other", "note": "引っ越しのため"}).status_code == 302
    # then: the form is there
    assert "確認のため顧客IDを入力" in client.get(url).content.decode()


# --- the API -----------------------------------------------------------------------------------


def test_api_export_and_erase_need_the_privacy_scope(person: Person) -> None:
    pk = person.customer.pk
    broad = ApiClient(make_key(ApiScope.CUSTOMERS_READ, ApiScope.CUSTOMERS_WRITE, name="連携")[1])
    assert broad.get(f"/api/v1/customers/{pk}/export").status_code == 403
    refused = broad.post(
        f"/api/v1/customers/{pk}/erase", {"reason": "r", "confirm_customer_id": pk}
    )
    assert refused.status_code == 403
    assert ApiClient(None).get(f"/api/v1/customers/{pk}/export").status_code == 401
    dpo = ApiClient(make_key(ApiScope.PRIVACY, name="DPO")[1])
    export = dpo.get(f"/api/v1/customers/{pk}/export")
    assert export.status_code == 200
    assert export.json()["customer"]["family_name"] == NAME[0]
    assert AuditLog.objects.filter(action="customer.export", actor_label__startswith="api:DPO")


def test_api_erase_checks_the_confirmation_then_erases_once(person: Person) -> None:
    pk = person.customer.pk
    dpo = ApiClient(make_key(ApiScope.PRIVACY, name="DPO")[1])
    wrong = dpo.post(
        f"/api/v1/customers/{pk}/erase", {"reason": "受付 1", "confirm_customer_id": pk + 1}
    )
    assert wrong.status_code == 422
    assert "confirm_customer_id" in wrong.json()["error"]["fields"]
    assert not privacy.is_erased(person.customer)
    blank = dpo.post(f"/api/v1/customers/{pk}/erase", {"reason": "  ", "confirm_customer_id": pk})
    assert blank.status_code == 422
    done = dpo.post(
        f"/api/v1/customers/{pk}/erase", {"reason": "受付 1", "confirm_customer_id": pk}
    )
    assert done.status_code == 200
    assert done.json()["erased_customer_ids"] == [pk]
    again = dpo.post(
        f"/api/v1/customers/{pk}/erase", {"reason": "受付 1", "confirm_customer_id": pk}
    )
    assert again.status_code == 409
    assert "既に削除" in again.json()["error"]["message"]
    assert TimelineEvent.objects.filter(customer_id=pk).count() == 1
    assert Order.objects.get(pk=person.order.pk).status == OrderStatus.RECEIVED


def _documented_error_codes() -> dict[str, set[int]]:
    """The codes in docs/ingest.md's error table (### 誤りの形), with their statuses."""
    doc = (Path(__file__).resolve().parents[1] / "docs" / "ingest.md").read_text(encoding="utf-8")
    table = doc.split("### 誤りの形", 1)[1].split("\n### ", 1)[0]
    codes: dict[str, set[int]] = {}
    for status, cell in re.findall(r"^\| (\d{3}) \| ([^|]+) \|", table, flags=re.MULTILINE):
        for code in re.findall(r"`([a-z_]+)`", cell):
            codes.setdefault(code, set()).add(int(status))
    return codes


def test_api_erase_refusals_use_a_documented_error_code(person: Person) -> None:
    pk = person.customer.pk
    dpo = ApiClient(make_key(ApiScope.PRIVACY, name="DPO")[1])
    body = {"reason": "受付 1", "confirm_customer_id": pk}
    subscription = subscription_create(
        customer=person.customer,
        product=make_product(),
        terms={"unit_price": 3980, "cycle_kind": "days", "cycle_days": 30},
        started_on=timezone.localdate(),
        acting_user=STAFF,
    )
    running = dpo.post(f"/api/v1/customers/{pk}/erase", body)
    subscription_cancel(subscription=subscription, reason=CancelReason.OTHER, acting_user=STAFF)
    assert dpo.post(f"/api/v1/customers/{pk}/erase", body).status_code == 200
    again = dpo.post(f"/api/v1/customers/{pk}/erase", body)
    documented = _documented_error_codes()
    for refused in (running, again):
        assert refused.status_code == 409
        assert refused.status_code in documented.get(refused.json()["error"]["code"], set())


# --- the DPO's command -------------------------------------------------------------------------


def test_command_exports_to_a_file_and_erases_only_with_the_id_confirmed(
    person: Person, tmp_path: Any
) -> None:
    pk = person.customer.pk
    target = tmp_path / "export.json"
    call_command("customers", "export", str(pk), "-o", str(target), stderr=io.StringIO())
    assert json.loads(target.read_text(encoding="utf-8"))["customer"]["family_name"] == NAME[0]
    with pytest.raises(CommandError, match="一致しません"):
        call_command("customers", "erase", str(pk), "--reason", "受付 1", "--confirm", "999")
    assert not privacy.is_erased(person.customer)
    out = io.StringIO()
    call_command(
        "customers", "erase", str(pk), "--reason", "受付 1", "--confirm", str(pk), stdout=out
    )
    assert "削除(匿名化)しました" in out.getvalue()
    assert AuditLog.objects.get(action="customer.erase").actor_label.startswith(
        "system:customers-command"
    )
