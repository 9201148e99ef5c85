"""Customers, identities and consent through their services."""

from __future__ import annotations

import datetime as dt

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from kizuna.accounts.models import Role, User
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    ConsentChannel,
    ConsentEvent,
    ConsentMethod,
    Customer,
    Identity,
    IdentityKind,
    TimelineEvent,
    TimelineKind,
)
from kizuna.customers.services import (
    consent_grant,
    consent_withdraw,
    customer_create,
    customer_update,
    identity_add,
)
from tests.factories import make_customer, make_user

pytestmark = pytest.mark.django_db


@pytest.fixture
def operator() -> User:
    return make_user(Role.OPERATOR, "op-sato")


def test_create_normalises_what_the_operator_typed(operator: User) -> None:
    # given an operator typing with full-width digits and hiragana
    customer = customer_create(
        acting_user=operator,
        profile={
            "family_name": "髙橋",
            "given_name": "美咲",
            "family_kana": "たかはし",
            "given_kana": "ﾐｻｷ",
            "postal_code": "〒１５０－０００２",
            "prefecture": "東京",
            "address1": "渋谷区渋谷２－１－１",
        },
        identities={
            IdentityKind.PHONE: "０９０－１２３４－５６７８",
            IdentityKind.EMAIL: "Misaki.T@Example.JP",
        },
    )
    # then the stored values are the canonical forms
    customer.refresh_from_db()
    assert customer.family_kana == "タカハシ"
    assert customer.given_kana == "ミサキ"
    assert customer.kana_key == "タカハシミサキ"
    assert customer.name_key == "高橋美咲"  # variant kanji folded for search
    assert customer.family_name.startswith("髙橋")  # the name kept as written
    assert customer.postal_code == "1500002"
    assert customer.prefecture == 13
    assert customer.address1 == "渋谷区渋谷2-1-1"
    values = dict(customer.identities.values_list("kind", "value"))
    assert values == {"phone": "+819012345678", "email": "misaki.t@example.jp"}
    # and the creation is audited and on the timeline
    assert AuditLog.objects.filter(action="customer.create", customer_id=customer.pk).exists()
    assert customer.timeline.filter(kind=TimelineKind.PROFILE).exists()


def test_create_refuses_bad_postal_code_and_writes_nothing(operator: User) -> None:
    with pytest.raises(ValidationError) as excinfo:
        customer_create(
            acting_user=operator, profile={"family_name": "佐藤", "postal_code": "150-002"}
        )
    assert "郵便番号" in str(excinfo.value)
    assert not Customer.objects.exists()
    assert not AuditLog.objects.exists()


def test_identity_belongs_to_one_customer_only(operator: User) -> None:
    first = make_customer()
    second = make_customer(family_name="佐藤", family_kana="サトウ")
    identity_add(
        customer=first, kind=IdentityKind.PHONE, value="090-1111-2222", acting_user=operator
    )
    # the same phone in another spelling, for another customer, is refused
    with pytest.raises(ValidationError, match="別の顧客"):
        identity_add(
            customer=second,
            kind=IdentityKind.PHONE,
            value="０９０１１１１２２２２",
            acting_user=operator,
        )
    # adding it again to its owner is harmless
    identity_add(customer=first, kind=IdentityKind.PHONE, value="09011112222", acting_user=operator)
    assert Identity.objects.filter(kind="phone").count() == 1


def test_identity_uniqueness_is_enforced_by_the_database() -> None:
    a, b = make_customer(), make_customer()
    Identity.objects.create(customer=a, kind=IdentityKind.EMAIL, value="x@example.jp")
    with pytest.raises(IntegrityError), transaction.atomic():
        Identity.objects.create(customer=b, kind=IdentityKind.EMAIL, value="x@example.jp")


def test_update_audits_each_field_old_and_new(operator: User) -> None:
    customer = make_customer(address1="渋谷区渋谷2-1-1")
    customer_update(
        customer=customer,
        changes={"address1": "港区六本木1-1-1", "postal_code": "106-0032"},
        acting_user=operator,
    )
    row = AuditLog.objects.get(action="customer.update", customer_id=customer.pk)
    assert row.actor_label == "op-sato"
    assert row.changes == {
        "address1": ["渋谷区渋谷2-1-1", "港区六本木1-1-1"],
        "postal_code": ["1500002", "1060032"],
    }
    title = customer.timeline.get(kind=TimelineKind.PROFILE).title
    assert "住所1" in title


def test_update_without_change_writes_no_audit(operator: User) -> None:
    customer = make_customer()
    customer_update(customer=customer, changes={"family_name": "山田"}, acting_user=operator)
    assert not AuditLog.objects.filter(action="customer.update").exists()


def test_update_refuses_derived_fields(operator: User) -> None:
    customer = make_customer()
    with pytest.raises(ValidationError):
        customer_update(customer=customer, changes={"kana_key": "X"}, acting_user=operator)


def test_consent_needs_evidence(operator: User) -> None:
    customer = make_customer()
    with pytest.raises(ValidationError, match="証跡"):
        consent_grant(
            customer=customer,
            channel=ConsentChannel.EMAIL,
            method=ConsentMethod.WEB_FORM,
            source_form="",
            wording_version="",
            acting_user=operator,
        )


def test_opt_out_wins_and_evidence_is_kept(operator: User) -> None:
    customer = make_customer()
    granted_at = timezone.now() - dt.timedelta(days=30)
    consent_grant(
        customer=customer,
        channel=ConsentChannel.EMAIL,
        method=ConsentMethod.WEB_FORM,
        source_form="購入フォーム",
        wording_version="2025-04",
        acting_user=operator,
        at=granted_at,
    )
    consent = consent_withdraw(
        customer=customer,
        channel=ConsentChannel.EMAIL,
        method=ConsentMethod.PHONE,
        acting_user=operator,
    )
    assert consent.granted is False
    assert consent.opted_out_at is not None
    # the original grant's evidence survives the opt-out
    assert consent.granted_at == granted_at
    assert consent.source_form == "購入フォーム"
    events = list(ConsentEvent.objects.filter(customer=customer).order_by("at"))
    assert [e.action for e in events] == ["grant", "withdraw"]
    assert events[0].wording_version == "2025-04"
    kinds = list(
        TimelineEvent.objects.filter(customer=customer, kind=TimelineKind.CONSENT).values_list(
            "title", flat=True
        )
    )
    assert "メール: 同意" in kinds
    assert "メール: 配信停止" in kinds
    assert AuditLog.objects.filter(action="consent.withdraw", customer_id=customer.pk).exists()
