"""Merging duplicate customers and undoing it (customers.merge): what staff rely on when they
press 「統合する」, 「別人」 or 「取り消す」 in the review queue."""

from __future__ import annotations

import datetime as dt
import random
import threading
from dataclasses import dataclass

import pytest
from django.db import connections, models, transaction
from django.utils import timezone

from kizuna.campaigns.models import Channel, OutboxMessage, Purpose
from kizuna.commerce.models import Order, ProductKind
from kizuna.commerce.services import LineInput, OrderInput, order_upsert
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers import privacy
from kizuna.customers.merge import (
    MERGE_POINTS_REASON,
    MOVED_TABLES,
    STAYS_WITH_ABSORBED,
    UNDO_POINTS_REASON,
    MergeError,
    customer_merge,
    customer_merge_undo,
    duplicate_dismiss,
    duplicate_reopen,
    merge_plan,
    undo_blockers,
)
from kizuna.customers.models import (
    BehaviourEvent,
    BehaviourKind,
    Consent,
    ConsentChannel,
    ConsentEvent,
    Customer,
    CustomerMerge,
    DuplicateCandidate,
    DuplicateStatus,
    Identity,
    IdentityKind,
    MemberStatus,
    Tag,
    TimelineEvent,
)
from kizuna.customers.resolution import customer_resolve
from kizuna.customers.services import (
    CONSENT_STATE_FIELDS,
    customer_update,
)
from kizuna.demo.duplicates import seed_duplicate_candidates
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import (
    points_adjust,
    points_earn,
    points_expire_due,
    points_expiring,
    points_lots,
    points_redeem,
)
from kizuna.loyalty.tasks import expire_points
from kizuna.subscriptions.models import CancelReason, Subscription, SubscriptionDelivery
from kizuna.subscriptions.services import subscription_cancel
from kizuna.support.models import Contact, ContactChannel, Direction
from kizuna.support.services import contact_record
from tests.factories import grant_consent, make_customer, make_subscription, withdraw_consent

IMPORT = Actor.system("test-import")
STAFF = Actor(user_id=None, label="operator-1")
T0 = timezone.make_aware(dt.datetime(2025, 4, 1, 10, 0))

# Every table whose rows belong to one customer, spelled out here rather than taken from the
# module under test, so a table the merge forgets shows up as a failure.
OWNED: tuple[type[models.Model], ...] = (
    Identity,
    Order,
    Subscription,
    Contact,
    BehaviourEvent,
    TimelineEvent,
    OutboxMessage,
    Consent,
    ConsentEvent,
    PointEntry,
)


def _order(number: str, at: dt.datetime, price: int = 4980) -> OrderInput:
    line = LineInput("SK-01", "美容液", price, 1, ProductKind.MAIN)
    return OrderInput(number=number, ordered_at=at, lines=(line,))


@dataclass
class Pair:
    survivor: Customer
    absorbed: Customer
    candidate: DuplicateCandidate


@pytest.fixture
def pair(db: None) -> Pair:
    """山田花子, registered twice: the second time with a new e-mail and her cart member ID,
    and with orders, a subscription, contacts, site behaviour, consents, tags and points."""
    profile = {
        "family_name": "山田",
        "given_name": "花子",
        "family_kana": "ヤマダ",
        "given_kana": "ハナコ",
        "postal_code": "150-0002",
        "prefecture": 13,
        "address1": "渋谷区渋谷2-1-1",
    }
    survivor = customer_resolve(
        identities={IdentityKind.EMAIL: "hanako@example.jp", IdentityKind.PHONE: "090-1111-2222"},
        profile={**profile, "registered_at": T0},
        acting_user=IMPORT,
        source="test",
    ).customer
    absorbed = customer_resolve(
        identities={IdentityKind.EMAIL: "hanako.new@example.jp", IdentityKind.CART_MEMBER: "EC900"},
        profile={
            **profile,
            "birthday": dt.date(1980, 5, 5),
            "company": "山田商店",
            "registered_at": T0 + dt.timedelta(days=200),
        },
        acting_user=IMPORT,
        source="test",
    ).customer
    candidate = DuplicateCandidate.objects.get()

    # the survivor's own history
    first, _ = order_upsert(customer=survivor, data=_order("S-1", T0), acting_user=IMPORT)
    points_earn(customer=survivor, amount=200, acting_user=IMPORT, reason="購入", order=first)
    grant_consent(survivor, T0)
    grant_consent(survivor, T0, ConsentChannel.POSTAL)
    vip, regular = Tag.objects.create(name="VIP"), Tag.objects.create(name="定期会員")
    survivor.tags.add(vip)

    # the absorbed record's history
    later = T0 + dt.timedelta(days=200)
    one, _ = order_upsert(customer=absorbed, data=_order("A-1", later), acting_user=IMPORT)
    two, _ = order_upsert(
        customer=absorbed, data=_order("A-2", later + dt.timedelta(days=30)), acting_user=IMPORT
    )
    points_earn(customer=absorbed, amount=150, acting_user=IMPORT, reason="購入", order=one)
    points_earn(customer=absorbed, amount=90, acting_user=IMPORT, reason="購入", order=two)
    subscription = make_subscription(
        absorbed, product=one.lines.get().product, unit_price=3980, started_on=later.date()
    )
    SubscriptionDelivery.objects.create(
        subscription=subscription,
        sequence=1,
        scheduled_on=later.date(),
        status="delivered",
        order=two,
    )
    contact_record(
        customer=absorbed,
        channel=ContactChannel.PHONE,
        direction=Direction.INBOUND,
        summary="お届け日の変更",
        acting_user=IMPORT,
    )
    BehaviourEvent.objects.create(
        customer=absorbed, kind=BehaviourKind.PRODUCT_VIEW, occurred_at=later, url="/p/sk-01"
    )
    absorbed.tags.add(vip, regular)
    OutboxMessage.objects.create(
        customer=absorbed,
        channel=Channel.EMAIL,
        purpose=Purpose.TRANSACTIONAL,
        dedupe_key=f"test-merge-shipped-{two.pk}",
        content={"subject": "発送のお知らせ"},
        send_after=later,
        next_attempt_at=later,
    )
    grant_consent(absorbed, later)
    withdraw_consent(absorbed, later + dt.timedelta(days=1))
    grant_consent(absorbed, later, ConsentChannel.SMS)
    grant_consent(absorbed, later, ConsentChannel.POSTAL)
    return Pair(survivor=survivor, absorbed=absorbed, candidate=candidate)


def _ownership(*customers: Customer) -> dict[str, set[tuple[int, int]]]:
    """(row id, owner id) for every row of every customer-owned table, and the tag links."""
    ids = [c.pk for c in customers]
    owned = {
        model._meta.label: set(
            model._default_manager.filter(customer_id__in=ids).values_list("pk", "customer_id")
        )
        for model in OWNED
    }
    owned["tags"] = set(
        Customer.tags.through.objects.filter(customer_id__in=ids).values_list(
            "tag_id", "customer_id"
        )
    )
    return owned


def _consent_states(customer: Customer) -> dict[str, tuple[bool, dt.datetime | None]]:
    return {
        c.channel: (c.granted, c.opted_out_at) for c in Consent.objects.filter(customer=customer)
    }


def _ledger_is_consistent(customer: Customer) -> None:
    entries = list(PointEntry.objects.filter(customer=customer).order_by("seq"))
    running = 0
    for entry in entries:
        running += entry.amount
        assert entry.balance_after == running
        assert entry.balance_after >= 0
    assert points_balance(customer) == running


# --- merge -------------------------------------------------------------------------------------


def test_merge_moves_every_kind_of_row_and_the_audit_row_lists_them(pair: Pair) -> None:
    # given
    before = _ownership(pair.absorbed)
    movable = {label: {pk for pk, _ in rows} for label, rows in before.items() if label != "tags"}

    # when
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)

    # then every row that was the absorbed record's now belongs to the survivor…
    for model in (
        Identity,
        Order,
        Subscription,
        Contact,
        BehaviourEvent,
        TimelineEvent,
        OutboxMessage,
    ):
        label = model._meta.label
        assert movable[label], f"the fixture should give the absorbed record some {label}"
        owners = set(
            model._default_manager.filter(pk__in=movable[label]).values_list(
                "customer_id", flat=True
            )
        )
        assert owners == {pair.survivor.pk}, label
        assert sorted(movable[label]) == merge.moved[label]
    # …except the append-only evidence and ledger, which stay where they were written
    assert set(
        ConsentEvent.objects.filter(pk__in=movable["customers.ConsentEvent"]).values_list(
            "customer_id", flat=True
        )
    ) == {pair.absorbed.pk}
    assert not PointEntry.objects.filter(
        pk__in=movable["loyalty.PointEntry"], customer=pair.survivor
    ).exists()
    # the audit rows on both records name the moved rows per table
    audit = AuditLog.objects.get(action="customer.merge", customer_id=pair.survivor.pk)
    assert audit.actor_label == "operator-1"
    assert audit.changes["absorbed"] == [None, pair.absorbed.pk]
    assert audit.changes["moved"][1]["commerce.Order"] == sorted(movable["commerce.Order"])
    assert audit.changes["moved"][1]["customers.Identity"] == sorted(movable["customers.Identity"])
    other = AuditLog.objects.get(action="customer.merge", customer_id=pair.absorbed.pk)
    assert other.changes["merged_into"] == [None, pair.survivor.pk]


def test_tags_are_combined_without_duplicates(pair: Pair) -> None:
    customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    assert sorted(pair.survivor.tags.values_list("name", flat=True)) == ["VIP", "定期会員"]
    assert not pair.absorbed.tags.exists()


def test_the_absorbed_record_is_marked_and_the_candidate_decided(pair: Pair) -> None:
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    pair.absorbed.refresh_from_db()
    pair.candidate.refresh_from_db()
    assert pair.absorbed.merged_into_id == pair.survivor.pk
    assert pair.absorbed.member_status == MemberStatus.WITHDRAWN
    assert merge.absorbed_member_status == MemberStatus.MEMBER
    assert pair.candidate.status == DuplicateStatus.MERGED
    assert pair.candidate.decided_by == "operator-1"
    assert pair.candidate.decided_at is not None
    assert merge.candidate_id == pair.candidate.pk
    title = f"顧客を統合: #{pair.absorbed.pk} 山田花子"
    assert pair.survivor.timeline.filter(title=title).count() == 1


def test_the_absorbed_identities_now_find_the_survivor(pair: Pair) -> None:
    customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    for identities in (
        {IdentityKind.EMAIL: "HANAKO.NEW@example.jp"},
        {IdentityKind.CART_MEMBER: "EC900"},
    ):
        found = customer_resolve(
            identities=identities, profile={"family_name": "山田"}, acting_user=IMPORT, source="t"
        )
        assert not found.created
        assert found.customer.pk == pair.survivor.pk


def test_blank_profile_fields_are_filled_and_filled_ones_never_overwritten(pair: Pair) -> None:
    # given: the absorbed record has another address, a birthday and a company
    customer_update(
        customer=pair.absorbed,
        changes={"postal_code": "5300001", "prefecture": 27, "address1": "大阪市北区梅田1-1"},
        acting_user=STAFF,
    )
    # when
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    # then the blanks are filled, the survivor's own address is untouched
    survivor = Customer.objects.get(pk=pair.survivor.pk)
    assert survivor.birthday == dt.date(1980, 5, 5)
    assert survivor.company == "山田商店"
    assert (survivor.postal_code, survivor.prefecture, survivor.address1) == (
        "1500002",
        13,
        "渋谷区渋谷2-1-1",
    )
    assert merge.profile_filled == {
        "birthday": {"old": None, "new": "1980-05-05"},
        "company": {"old": "", "new": "山田商店"},
    }


def test_a_missing_address_is_taken_whole_and_given_back_by_undo(pair: Pair) -> None:
    # given: the survivor has no address, the absorbed record has one in Osaka
    customer_update(
        customer=pair.survivor,
        changes={"postal_code": "", "prefecture": None, "address1": ""},
        acting_user=STAFF,
    )
    customer_update(
        customer=pair.absorbed,
        changes={"postal_code": "5300001", "prefecture": 27, "address1": "大阪市北区梅田1-1"},
        acting_user=STAFF,
    )
    # when
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    # then
    survivor = Customer.objects.get(pk=pair.survivor.pk)
    assert (survivor.postal_code, survivor.prefecture, survivor.address1) == (
        "5300001",
        27,
        "大阪市北区梅田1-1",
    )
    customer_merge_undo(merge=merge, acting_user=STAFF)
    survivor.refresh_from_db()
    assert (survivor.postal_code, survivor.prefecture, survivor.address1) == ("", None, "")


def test_consents_keep_the_survivors_row_but_never_lose_an_opt_out(pair: Pair) -> None:
    # given: the survivor granted e-mail in 2025-04; the absorbed record opted out of e-mail
    # later, granted SMS (the survivor never answered) and granted postal (both did)
    survivor_postal = Consent.objects.get(customer=pair.survivor, channel=ConsentChannel.POSTAL)
    evidence = set(ConsentEvent.objects.filter(customer=pair.absorbed).values_list("pk", flat=True))

    # when
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)

    # then
    states = _consent_states(pair.survivor)
    assert states[ConsentChannel.EMAIL][0] is False  # the later opt-out wins
    assert states[ConsentChannel.EMAIL][1] is not None
    assert states[ConsentChannel.SMS][0] is True  # moved over
    assert Consent.objects.get(customer=pair.survivor, channel=ConsentChannel.POSTAL).pk == (
        survivor_postal.pk
    )  # kept
    assert sorted(merge.consents_swapped) == [ConsentChannel.EMAIL.value]
    # the evidence stays with the record it was given on
    assert (
        set(ConsentEvent.objects.filter(customer=pair.absorbed).values_list("pk", flat=True))
        == evidence
    )
    assert not ConsentEvent.objects.filter(customer=pair.survivor, pk__in=evidence).exists()


def test_a_newer_grant_on_the_survivor_is_kept_over_an_older_opt_out(pair: Pair) -> None:
    grant_consent(pair.survivor, T0 + dt.timedelta(days=400))
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    assert _consent_states(pair.survivor)[ConsentChannel.EMAIL][0] is True
    assert merge.consents_swapped == {}


def _decide(customer: Customer, decision: tuple[str, dt.datetime]) -> None:
    """Give the customer's e-mail consent this last decision: ("grant", at) or ("opt_out",
    at), an opt-out coming after a grant a month earlier."""
    kind, at = decision
    if kind == "grant":
        grant_consent(customer, at)
        return
    grant_consent(customer, at - dt.timedelta(days=30))
    withdraw_consent(customer, at)


def _email_state(customer: Customer) -> tuple[object, ...]:
    """Everything the customer's e-mail consent row records of their current choice."""
    row = Consent.objects.get(customer=customer, channel=ConsentChannel.EMAIL)
    return tuple(getattr(row, name) for name in CONSENT_STATE_FIELDS)


def _one_person_twice() -> tuple[Customer, Customer]:
    first, second = (
        customer_resolve(
            identities={IdentityKind.EMAIL: email},
            profile={"family_name": "太田", "given_name": "浩"},
            acting_user=IMPORT,
            source="t",
        ).customer
        for email in ("oota@example.jp", "oota.h@example.jp")
    )
    return first, second


EARLY = T0 + dt.timedelta(days=10)
LATE = T0 + dt.timedelta(days=20)


@pytest.mark.parametrize(
    ("first", "second", "granted", "at"),
    [
        # one record opted out after the other's grant: opted out, whichever is kept
        (("grant", EARLY), ("opt_out", LATE), False, LATE),
        (("opt_out", LATE), ("grant", EARLY), False, LATE),
        # one record subscribed again after the other's opt-out: subscribed
        (("grant", LATE), ("opt_out", EARLY), True, LATE),
        (("opt_out", EARLY), ("grant", LATE), True, LATE),
        # the same moment: the opt-out wins
        (("grant", EARLY), ("opt_out", EARLY), False, EARLY),
        (("opt_out", EARLY), ("grant", EARLY), False, EARLY),
    ],
)
def test_the_merged_record_has_the_later_decision_of_the_two_whichever_is_kept(
    db: None,
    first: tuple[str, dt.datetime],
    second: tuple[str, dt.datetime],
    granted: bool,
    at: dt.datetime,
) -> None:
    # given one person's two records, each with its own last decision about e-mail
    one, other = _one_person_twice()
    _decide(one, first)
    _decide(other, second)
    before = (_email_state(one), _email_state(other))
    for survivor, absorbed in ((one, other), (other, one)):
        # when staff merge them keeping either one
        merge = customer_merge(survivor=survivor, absorbed=absorbed, acting_user=STAFF)
        # then the kept record has the later decision, with its time
        state = dict(zip(CONSENT_STATE_FIELDS, _email_state(survivor), strict=True))
        assert state["granted"] is granted
        assert state["granted_at" if granted else "opted_out_at"] == at
        # and undoing the merge gives each record its own decision back
        customer_merge_undo(merge=merge, acting_user=STAFF)
        assert (_email_state(one), _email_state(other)) == before


def test_a_carried_decision_is_audited_on_both_records_and_undone_with_its_audit(
    db: None,
) -> None:
    # given the kept record opted out, and the other subscribed again later on its own form
    survivor, absorbed = _one_person_twice()
    _decide(survivor, ("opt_out", EARLY))
    _decide(absorbed, ("grant", LATE))
    kept, given = _email_state(survivor), _email_state(absorbed)
    evidence = list(ConsentEvent.objects.filter(customer=absorbed).values_list("pk", flat=True))
    (item,) = merge_plan(survivor=survivor, absorbed=absorbed).consents
    assert (item.survivor_state, item.absorbed_state, item.label) == (
        "配信停止 2025-04-11 10:00",
        "同意 2025-04-21 10:00",
        "同意(統合元から引き継ぎ)",
    )

    # when they are merged
    merge = customer_merge(survivor=survivor, absorbed=absorbed, acting_user=STAFF)

    # then the kept record has the later grant with its evidence (form, wording, time)…
    assert _email_state(survivor) == given
    assert _email_state(absorbed) == kept
    assert ConsentEvent.objects.filter(customer=absorbed).count() == len(evidence)
    # …both records' audit rows say old → new, and the timeline says where it came from
    (on_survivor,) = AuditLog.objects.filter(action="customer.merge", customer_id=survivor.pk)
    (on_absorbed,) = AuditLog.objects.filter(action="customer.merge", customer_id=absorbed.pk)
    swap = merge.consents_swapped[ConsentChannel.EMAIL.value]
    assert on_survivor.changes["consent.email"] == [swap["absorbed_state"], swap["survivor_state"]]
    assert on_absorbed.changes["consent.email"] == [swap["survivor_state"], swap["absorbed_state"]]
    assert on_survivor.changes["consent.email"][1]["granted"] is True
    assert survivor.timeline.filter(title=f"メール: 同意(統合元 #{absorbed.pk} から引き継ぎ)")

    # when the merge is undone
    customer_merge_undo(merge=merge, acting_user=STAFF)

    # then each record has its own decision again, and the undo's audit rows say so
    assert (_email_state(survivor), _email_state(absorbed)) == (kept, given)
    (undo_survivor,) = AuditLog.objects.filter(
        action="customer.merge_undo", customer_id=survivor.pk
    )
    (undo_absorbed,) = AuditLog.objects.filter(
        action="customer.merge_undo", customer_id=absorbed.pk
    )
    assert undo_survivor.changes["consent.email"] == on_survivor.changes["consent.email"][::-1]
    assert undo_absorbed.changes["consent.email"] == on_absorbed.changes["consent.email"][::-1]


def test_points_move_as_a_pair_of_adjustments(pair: Pair) -> None:
    # given
    assert (points_balance(pair.survivor), points_balance(pair.absorbed)) == (200, 240)
    # when
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    # then
    assert merge.points_transferred == 240
    assert (points_balance(pair.survivor), points_balance(pair.absorbed)) == (440, 0)
    for customer, amount in ((pair.survivor, 240), (pair.absorbed, -240)):
        last = PointEntry.objects.filter(customer=customer).latest("seq")
        assert (last.kind, last.amount, last.reason) == (
            PointKind.ADJUST,
            amount,
            MERGE_POINTS_REASON,
        )
        _ledger_is_consistent(customer)


def test_merged_points_keep_their_expiry_dates(pair: Pair) -> None:
    # given: 60 of the absorbed record's points were earned 300 days ago and expire in 65 days
    points_earn(customer=pair.absorbed, amount=60, acting_user=IMPORT, reason="購入",
                at=timezone.now() - dt.timedelta(days=300))  # fmt: skip
    soon = timezone.localdate() + dt.timedelta(days=65)
    later = timezone.localdate() + dt.timedelta(days=365)
    # when
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    # then: the survivor holds them with the same expiry, and they expire on that day
    assert merge.points_transferred == 300
    assert points_lots(pair.survivor) == [(60, soon), (440, later)]
    assert points_expiring(customer=pair.survivor, on=soon + dt.timedelta(days=1)) == 60
    expire_points.call(on=(soon + dt.timedelta(days=1)).isoformat())
    assert points_balance(pair.survivor) == 440
    _ledger_is_consistent(pair.survivor)


def test_undo_gives_back_the_points_with_their_expiry_dates(pair: Pair) -> None:
    points_earn(customer=pair.absorbed, amount=60, acting_user=IMPORT, reason="購入",
                at=timezone.now() - dt.timedelta(days=300))  # fmt: skip
    before = points_lots(pair.absorbed)
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    customer_merge_undo(merge=merge, acting_user=STAFF)
    given_back = PointEntry.objects.filter(
        customer=pair.absorbed, reason=UNDO_POINTS_REASON, amount__gt=0
    ).order_by("seq")
    assert [(e.amount, e.expires_on) for e in given_back] == before
    assert (points_balance(pair.survivor), points_balance(pair.absorbed)) == (200, 300)
    for customer in (pair.survivor, pair.absorbed):
        _ledger_is_consistent(customer)


def _earn_expiring(customer: Customer, points: int, expires_on: dt.date) -> None:
    earned_on = expires_on - dt.timedelta(days=365)
    at = timezone.make_aware(dt.datetime.combine(earned_on, dt.time(12)))
    points_earn(customer=customer, amount=points, acting_user=IMPORT, reason="購入", at=at)


def _points_state(customer: Customer, days: list[dt.date]) -> tuple[object, ...]:
    """Lots, balance and what would expire on each of `days`: everything a merge and its
    undo must leave as it was."""
    expiring = tuple(points_expiring(customer=customer, on=day) for day in days)
    return points_lots(customer), points_balance(customer), expiring


def test_undo_leaves_both_records_lots_exactly_as_before_the_merge(pair: Pair) -> None:
    """QA: an absorbed record with 255 pt in six lots got them back 「21@08-15, 78@09-22…」 and
    points_expiring(2027-06-08) said 0 instead of 99, because the survivor's −255 and the
    absorbed record's own −255 were charged to the soonest-expiring lots."""
    # given: the QA's lots on a record with no other points, merged into one with its own
    absorbed = customer_resolve(
        identities={IdentityKind.EMAIL: "saki@example.jp"},
        profile={"family_name": "渡辺", "given_name": "早紀", "registered_at": T0},
        acting_user=IMPORT,
        source="t",
    ).customer
    lots = [(50, dt.date(2027, 4, 11)), (49, dt.date(2027, 6, 7))] + [
        (39, day)
        for day in (
            dt.date(2027, 8, 15),
            dt.date(2027, 9, 22),
            dt.date(2027, 10, 22),
            dt.date(2027, 11, 22),
        )
    ]
    for points, expires_on in lots:
        _earn_expiring(absorbed, points, expires_on)
    _earn_expiring(pair.survivor, 70, dt.date(2027, 3, 1))  # sooner than all of hers
    days = [dt.date(2027, 3, 2), dt.date(2027, 6, 8), dt.date(2027, 10, 1), dt.date(2028, 1, 1)]
    before = (_points_state(pair.survivor, days), _points_state(absorbed, days))
    assert points_lots(absorbed) == lots
    assert points_expiring(customer=absorbed, on=dt.date(2027, 6, 8)) == 99
    # when
    merge = customer_merge(survivor=pair.survivor, absorbed=absorbed, acting_user=STAFF)
    customer_merge_undo(merge=merge, acting_user=STAFF)
    # then
    assert points_lots(absorbed) == lots
    assert points_expiring(customer=absorbed, on=dt.date(2027, 6, 8)) == 99
    assert (_points_state(pair.survivor, days), _points_state(absorbed, days)) == before
    for customer in (pair.survivor, absorbed):
        _ledger_is_consistent(customer)


def _combined(*lot_lists: list[tuple[int, dt.date | None]]) -> list[tuple[int, dt.date | None]]:
    total: dict[dt.date | None, int] = {}
    for lots in lot_lists:
        for points, expires_on in lots:
            total[expires_on] = total.get(expires_on, 0) + points
    dated = sorted(day for day in total if day is not None)
    return [(total[day], day) for day in dated] + ([(total[None], None)] if None in total else [])


def _random_ledger(customer: Customer, rng: random.Random) -> None:
    """Earnings over the past two years (some already expired but not written off), spending,
    write-offs and manual adjustments either way (grants with and without an expiry), in a
    random order."""
    today = timezone.localdate()
    for _ in range(rng.randint(0, 7)):
        move = rng.choice(
            ["earn", "earn", "earn", "redeem", "expire", "bonus", "legacy bonus", "correct"]
        )
        balance = points_balance(customer)
        if move == "earn":
            days_ago = rng.randint(0, 700)
            at = timezone.now() - dt.timedelta(days=days_ago)
            points_earn(customer=customer, amount=rng.randint(1, 300), acting_user=IMPORT,
                        reason="購入", at=at)  # fmt: skip
        elif move == "redeem" and balance:
            points_redeem(customer=customer, amount=rng.randint(1, balance), acting_user=IMPORT,
                          reason="利用")  # fmt: skip
        elif move == "expire":
            points_expire_due(customer=customer, on=today, acting_user=IMPORT)
        elif move == "bonus":
            points_adjust(customer=customer, amount=rng.randint(1, 100), acting_user=IMPORT,
                          reason="お詫び")  # fmt: skip
        elif move == "legacy bonus":  # granted before adjustments carried an expiry
            points_adjust(customer=customer, amount=rng.randint(1, 100), acting_user=IMPORT,
                          reason="お詫び", never_expires=True)  # fmt: skip
        elif move == "correct" and balance:
            points_adjust(customer=customer, amount=-rng.randint(1, balance), acting_user=IMPORT,
                          reason="訂正")  # fmt: skip


@pytest.mark.parametrize("seed", range(12))
def test_a_merge_keeps_every_lot_and_its_undo_restores_both_ledgers(db: None, seed: int) -> None:
    """Property: whatever the two ledgers hold (lots of several dates, points already spent,
    written off or expired and not yet written off, points that never expire), the merged
    record holds both records' lots with their expiry dates, and undoing the merge leaves
    each record's lots, balance and expiring points exactly as they were."""
    rng = random.Random(seed)
    survivor = make_customer(registered_at=T0)
    absorbed = make_customer(registered_at=T0 + dt.timedelta(days=1))
    for customer in (survivor, absorbed):
        _random_ledger(customer, rng)
    today = timezone.localdate()
    days = [today + dt.timedelta(days=offset) for offset in range(-400, 400, 20)]
    before = {c.pk: _points_state(c, days) for c in (survivor, absorbed)}
    lots = {c.pk: points_lots(c) for c in (survivor, absorbed)}

    merge = customer_merge(survivor=survivor, absorbed=absorbed, acting_user=STAFF)
    assert points_lots(survivor) == _combined(lots[survivor.pk], lots[absorbed.pk])
    assert points_lots(absorbed) == []
    for day in days:
        expected = sum(
            points
            for points, expires_on in lots[survivor.pk] + lots[absorbed.pk]
            if expires_on is not None and expires_on < day
        )
        assert points_expiring(customer=survivor, on=day) == expected

    customer_merge_undo(merge=merge, acting_user=STAFF)
    assert {c.pk: _points_state(c, days) for c in (survivor, absorbed)} == before
    for customer in (survivor, absorbed):
        _ledger_is_consistent(customer)


def test_undoing_a_chain_of_merges_restores_each_records_lots(db: None) -> None:
    # given: three records of one person, each with its own lots (one date shared)
    first, second, third = (
        make_customer(registered_at=T0 + dt.timedelta(days=n)) for n in range(3)
    )
    _earn_expiring(first, 40, dt.date(2027, 5, 1))
    _earn_expiring(first, 25, dt.date(2027, 9, 1))
    _earn_expiring(second, 30, dt.date(2027, 2, 1))
    _earn_expiring(second, 15, dt.date(2027, 9, 1))
    _earn_expiring(third, 20, dt.date(2027, 1, 1))
    points_adjust(customer=third, amount=5, acting_user=IMPORT, reason="お詫び")
    before = {c.pk: points_lots(c) for c in (first, second, third)}
    # when: the first into the second, the second into the third; undone last to first
    inner = customer_merge(survivor=second, absorbed=first, acting_user=STAFF)
    outer = customer_merge(survivor=third, absorbed=second, acting_user=STAFF)
    assert points_lots(third) == _combined(*before.values())
    customer_merge_undo(merge=outer, acting_user=STAFF)
    customer_merge_undo(merge=inner, acting_user=STAFF)
    # then
    assert {c.pk: points_lots(c) for c in (first, second, third)} == before


def test_a_record_without_points_moves_none(pair: Pair) -> None:
    newcomer = customer_resolve(
        identities={IdentityKind.EMAIL: "other@example.jp"},
        profile={"family_name": "山田", "given_name": "花子"},
        acting_user=IMPORT,
        source="t",
    ).customer
    entries = PointEntry.objects.count()
    merge = customer_merge(survivor=pair.survivor, absorbed=newcomer, acting_user=STAFF)
    assert merge.points_transferred == 0
    assert PointEntry.objects.count() == entries


def test_merging_without_a_proposal_records_a_decided_candidate(pair: Pair) -> None:
    stranger = customer_resolve(
        identities={IdentityKind.EMAIL: "taro@example.jp"},
        profile={"family_name": "鈴木"},
        acting_user=IMPORT,
        source="t",
    ).customer
    merge = customer_merge(survivor=pair.survivor, absorbed=stranger, acting_user=STAFF)
    assert merge.candidate.status == DuplicateStatus.MERGED
    assert {merge.candidate.customer_a_id, merge.candidate.customer_b_id} == {
        pair.survivor.pk,
        stranger.pk,
    }


def test_impossible_merges_are_refused_and_change_nothing(pair: Pair) -> None:
    with pytest.raises(MergeError, match="同じ顧客同士"):
        customer_merge(survivor=pair.survivor, absorbed=pair.survivor, acting_user=STAFF)
    customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    owned = _ownership(pair.survivor, pair.absorbed)
    with pytest.raises(MergeError, match="既に顧客"):
        customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    with pytest.raises(MergeError, match="既に顧客"):
        customer_merge(survivor=pair.absorbed, absorbed=pair.survivor, acting_user=STAFF)
    assert _ownership(pair.survivor, pair.absorbed) == owned
    assert CustomerMerge.objects.count() == 1


def test_an_erased_record_is_never_merged_reopened_or_unmerged(pair: Pair) -> None:
    """QA: a candidate with an erased record, put back in the queue from 「別人」, merged and
    filled the erased record with the other record's name and kana again (docs/privacy.md:
    an anonymous record must not be merged later). Refused in the service, for every caller."""
    # given: she asked for erasure of her first record; the pair's candidate is closed
    privacy.customer_erase(customer=pair.survivor, acting_user=STAFF, reason="受付 1")
    pair.candidate.refresh_from_db()
    assert pair.candidate.status == DuplicateStatus.ERASED
    # an older Kizuna had closed it as 「別人」, which could be taken back
    DuplicateCandidate.objects.filter(pk=pair.candidate.pk).update(status=DuplicateStatus.DISMISSED)
    owned = _ownership(pair.survivor, pair.absorbed)
    # when / then: neither reopening nor merging either way round is possible
    with pytest.raises(MergeError, match="削除\\(匿名化\\)済みのため、確認待ちに戻せません"):
        duplicate_reopen(candidate=pair.candidate, acting_user=STAFF)
    for survivor, absorbed in ((pair.survivor, pair.absorbed), (pair.absorbed, pair.survivor)):
        with pytest.raises(MergeError, match=f"顧客 #{pair.survivor.pk} は個人データを削除"):
            customer_merge(survivor=survivor, absorbed=absorbed, acting_user=STAFF)
    # and nothing changed: the erased record took no name, kana or rows
    erased = Customer.objects.get(pk=pair.survivor.pk)
    assert (erased.given_name, erased.family_kana, erased.given_kana) == ("", "", "")
    assert _ownership(pair.survivor, pair.absorbed) == owned
    assert not CustomerMerge.objects.exists()
    assert DuplicateCandidate.objects.get().status == DuplicateStatus.DISMISSED


def test_a_merge_whose_records_were_erased_is_not_undone(pair: Pair) -> None:
    # given: merged, then the person erased (both records are anonymised together)
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    for subscription in Subscription.objects.all():
        subscription_cancel(subscription=subscription, reason=CancelReason.OTHER, acting_user=STAFF)
    privacy.customer_erase(customer=pair.survivor, acting_user=STAFF, reason="受付 2")
    # when / then: taking the merge back would put an anonymous pair back in the queue
    merge = CustomerMerge.objects.get(pk=merge.pk)
    assert any("削除(匿名化)済み" in problem for problem in undo_blockers(merge))
    with pytest.raises(MergeError, match="統合を取り消せません"):
        customer_merge_undo(merge=merge, acting_user=STAFF)
    merge.refresh_from_db()
    assert merge.undone_at is None
    assert Customer.objects.get(pk=pair.absorbed.pk).merged_into_id == pair.survivor.pk


def test_every_table_that_points_at_a_customer_is_handled_by_the_merge() -> None:
    # A new table with a customer foreign key must be moved by the merge or deliberately left
    # with the absorbed record; otherwise a merge would silently strand its rows.
    handled = {*MOVED_TABLES, *STAYS_WITH_ABSORBED, "customers.Consent", "customers.Customer"}
    pointing = {
        field.related_model._meta.label
        for field in Customer._meta.get_fields(include_hidden=True)
        if field.auto_created
        and not field.concrete
        and not field.many_to_many
        # the tags' own link table: tags are moved through the many-to-many relation
        and not field.related_model._meta.auto_created
    }
    assert "customers.DuplicateCandidate" in pointing  # hidden ("+") relations are seen too
    assert pointing - handled == set()


def test_the_plan_shown_for_confirmation_matches_what_the_merge_does(pair: Pair) -> None:
    plan = merge_plan(survivor=pair.survivor, absorbed=pair.absorbed)
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    assert plan.points == merge.points_transferred
    assert {label: len(ids) for label, ids in merge.moved.items() if label in plan.counts} == (
        plan.counts
    )
    assert sorted(f.name for f in plan.fills) == sorted(merge.profile_filled)


# --- undo --------------------------------------------------------------------------------------


def test_undo_restores_row_ownership_exactly(pair: Pair) -> None:
    # given
    before = _ownership(pair.survivor, pair.absorbed)
    consents_before = (_consent_states(pair.survivor), _consent_states(pair.absorbed))
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)

    # when
    customer_merge_undo(merge=merge, acting_user=STAFF)

    # then every row that existed before the merge has its original owner again
    after = _ownership(pair.survivor, pair.absorbed)
    for label, rows in before.items():
        ids = {pk for pk, _ in rows}
        assert {row for row in after[label] if row[0] in ids or label == "tags"} == rows, label
    assert (_consent_states(pair.survivor), _consent_states(pair.absorbed)) == consents_before
    absorbed = Customer.objects.get(pk=pair.absorbed.pk)
    survivor = Customer.objects.get(pk=pair.survivor.pk)
    assert absorbed.merged_into_id is None
    assert absorbed.member_status == MemberStatus.MEMBER
    assert (survivor.birthday, survivor.company) == (None, "")
    pair.candidate.refresh_from_db()
    assert (pair.candidate.status, pair.candidate.decided_by) == (DuplicateStatus.OPEN, "")
    merge.refresh_from_db()
    assert merge.undone_at is not None
    assert merge.undone_by == "operator-1"
    assert AuditLog.objects.filter(action="customer.merge_undo").count() == 2
    assert survivor.timeline.filter(title__startswith="統合を取り消し").exists()


def test_points_after_undo_are_what_they_were(pair: Pair) -> None:
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    customer_merge_undo(merge=merge, acting_user=STAFF)
    assert (points_balance(pair.survivor), points_balance(pair.absorbed)) == (200, 240)
    for customer in (pair.survivor, pair.absorbed):
        _ledger_is_consistent(customer)


def test_rows_created_after_the_merge_stay_with_the_survivor(pair: Pair) -> None:
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    # an import the next day finds her by the absorbed record's e-mail
    found = customer_resolve(
        identities={IdentityKind.EMAIL: "hanako.new@example.jp"},
        profile={"family_name": "山田"},
        acting_user=IMPORT,
        source="t",
    ).customer
    new_order, _ = order_upsert(
        customer=found, data=_order("S-2", timezone.now()), acting_user=IMPORT
    )
    customer_merge_undo(merge=merge, acting_user=STAFF)
    new_order.refresh_from_db()
    assert new_order.customer_id == pair.survivor.pk
    assert set(
        Order.objects.filter(number__in=["A-1", "A-2"]).values_list("customer_id", flat=True)
    ) == {pair.absorbed.pk}


def test_undo_twice_is_refused(pair: Pair) -> None:
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    customer_merge_undo(merge=merge, acting_user=STAFF)
    entries = PointEntry.objects.count()
    with pytest.raises(MergeError, match="既に取り消されています"):
        customer_merge_undo(merge=merge, acting_user=STAFF)
    assert PointEntry.objects.count() == entries
    assert AuditLog.objects.filter(action="customer.merge_undo").count() == 2


def test_undo_is_refused_when_the_survivor_spent_the_points(pair: Pair) -> None:
    # given: after the merge she spends most of the points
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    points_redeem(customer=pair.survivor, amount=300, acting_user=IMPORT, reason="利用")
    owned = _ownership(pair.survivor, pair.absorbed)
    # when / then
    assert any("ポイント残高が足りない" in b for b in undo_blockers(merge))
    with pytest.raises(MergeError, match=r"残高 140 pt、戻すポイント 240 pt"):
        customer_merge_undo(merge=merge, acting_user=STAFF)
    assert _ownership(pair.survivor, pair.absorbed) == owned
    merge.refresh_from_db()
    assert merge.undone_at is None
    for customer in (pair.survivor, pair.absorbed):
        _ledger_is_consistent(customer)


def test_undo_is_refused_when_the_survivor_was_merged_again(pair: Pair) -> None:
    first = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    third = customer_resolve(
        identities={IdentityKind.EMAIL: "third@example.jp"},
        profile={"family_name": "山田"},
        acting_user=IMPORT,
        source="t",
    ).customer
    customer_merge(survivor=third, absorbed=pair.survivor, acting_user=STAFF)
    with pytest.raises(MergeError, match="先にそちらの統合を取り消して"):
        customer_merge_undo(merge=first, acting_user=STAFF)


def test_undo_is_refused_when_a_moved_subscription_delivered_again(pair: Pair) -> None:
    # given: the subscription that came with the absorbed record delivers a new order
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    subscription = Subscription.objects.get(customer=pair.survivor)
    order, _ = order_upsert(
        customer=pair.survivor, data=_order("A-3", timezone.now()), acting_user=IMPORT
    )
    SubscriptionDelivery.objects.create(
        subscription=subscription,
        sequence=2,
        scheduled_on=timezone.localdate(),
        status="delivered",
        order=order,
    )
    # then undoing would split the subscription from its own delivery: refused
    with pytest.raises(MergeError, match="定期購入で、統合後の注文が 1件"):
        customer_merge_undo(merge=merge, acting_user=STAFF)


def test_undo_keeps_a_profile_field_staff_changed_after_the_merge(pair: Pair) -> None:
    merge = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    customer_update(
        customer=pair.survivor, changes={"birthday": dt.date(1980, 5, 6)}, acting_user=STAFF
    )
    customer_merge_undo(merge=merge, acting_user=STAFF)
    survivor = Customer.objects.get(pk=pair.survivor.pk)
    assert survivor.birthday == dt.date(1980, 5, 6)  # the correction stays
    assert survivor.company == ""  # still what the merge put there: cleared


def test_a_merge_can_be_redone_after_an_undo(pair: Pair) -> None:
    first = customer_merge(survivor=pair.survivor, absorbed=pair.absorbed, acting_user=STAFF)
    customer_merge_undo(merge=first, acting_user=STAFF)
    # the other way round this time
    second = customer_merge(survivor=pair.absorbed, absorbed=pair.survivor, acting_user=STAFF)
    assert second.candidate_id == first.candidate_id
    assert points_balance(pair.absorbed) == 440
    assert Order.objects.filter(customer=pair.absorbed).count() == 3


# --- dismiss -----------------------------------------------------------------------------------


def test_dismiss_records_the_decision_once_and_can_be_taken_back(pair: Pair) -> None:
    # when
    duplicate_dismiss(candidate=pair.candidate, acting_user=STAFF)
    # then
    pair.candidate.refresh_from_db()
    assert pair.candidate.status == DuplicateStatus.DISMISSED
    assert pair.candidate.decided_by == "operator-1"
    assert AuditLog.objects.filter(action="duplicate.dismiss").count() == 2
    with pytest.raises(MergeError, match="既に「別人として確認済」"):
        duplicate_dismiss(candidate=pair.candidate, acting_user=STAFF)
    # and back in the queue
    duplicate_reopen(candidate=pair.candidate, acting_user=STAFF)
    pair.candidate.refresh_from_db()
    assert (pair.candidate.status, pair.candidate.decided_at) == (DuplicateStatus.OPEN, None)
    with pytest.raises(MergeError):
        duplicate_reopen(candidate=pair.candidate, acting_user=STAFF)


# --- concurrency -------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_staff_merging_one_record_into_two_others_at_once_only_one_wins() -> None:
    # given: one record proposed against two others
    records = [
        customer_resolve(
            identities={IdentityKind.EMAIL: f"p{n}@example.jp"},
            profile={"family_name": "佐藤", "family_kana": "サトウ", "postal_code": "1000001"},
            acting_user=IMPORT,
            source="t",
        ).customer
        for n in range(3)
    ]
    points_earn(customer=records[0], amount=100, acting_user=IMPORT, reason="購入")
    absorbed, targets = records[0], records[1:]
    barrier = threading.Barrier(2)
    outcomes: list[str] = []

    def attempt(target: Customer) -> None:
        barrier.wait()
        try:
            customer_merge(survivor=target, absorbed=absorbed, acting_user=STAFF)
            outcomes.append("merged")
        except MergeError:
            outcomes.append("refused")
        finally:
            connections["default"].close()

    # when
    threads = [threading.Thread(target=attempt, args=(t,)) for t in targets]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # then
    assert sorted(outcomes) == ["merged", "refused"]
    assert CustomerMerge.objects.count() == 1
    assert sum(points_balance(c) for c in records) == 100
    for customer in records:
        _ledger_is_consistent(customer)


# --- demo seeding ------------------------------------------------------------------------------


class _UndoSeedingError(Exception):
    """Raised to roll the seeding back, so a second run starts from the same database."""


def _shop(size: int) -> None:
    """A small shop's customers as the demo has them: kana, address, phone (home or mobile)
    and e-mail on every record."""
    family = [("佐藤", "サトウ"), ("高橋", "タカハシ"), ("中村", "ナカムラ"), ("伊藤", "イトウ")]
    given = [("裕子", "ユウコ"), ("健一", "ケンイチ"), ("美香", "ミカ"), ("翔太", "ショウタ")]
    for n in range(size):
        family_name, family_kana = family[n % len(family)]
        given_name, given_kana = given[(n // len(family)) % len(given)]
        phone = f"03-3{n:03d}-{n:04d}" if n % 2 else f"090-{n:04d}-{n:04d}"
        customer_resolve(
            identities={IdentityKind.PHONE: phone, IdentityKind.EMAIL: f"c{n}@example.jp"},
            profile={
                "family_name": family_name,
                "given_name": given_name,
                "family_kana": family_kana,
                "given_kana": given_kana,
                "postal_code": f"1{n:06d}",
                "prefecture": 13,
                "address1": f"千代田区丸の内{n}-1",
                "birthday": dt.date(1960 + n % 30, 1 + n % 12, 1 + n % 28),
                "registered_at": T0 + dt.timedelta(days=n),
            },
            acting_user=IMPORT,
            source="test",
        )


def _seeded() -> list[tuple[str, str, str, list[str]]]:
    """Name, kana, postal code and identities of every customer the demo seeding created."""
    created = AuditLog.objects.filter(action="customer.create", actor_label="system:demo")
    customers = Customer.objects.filter(pk__in=created.values("customer_id")).order_by("pk")
    return [
        (
            c.full_name,
            c.full_kana,
            c.postal_code,
            sorted(c.identities.values_list("value", flat=True)),
        )
        for c in customers
    ]


def test_demo_seeding_fills_the_queue_with_near_duplicates(db: None) -> None:
    # given
    _shop(40)
    customers = Customer.objects.count()
    # when
    created = seed_duplicate_candidates(count=12, seed=7)
    # then: twelve new records, each waiting in the queue next to the record it duplicates
    new = Customer.objects.count() - customers
    assert new == 12
    assert created >= new
    assert DuplicateCandidate.objects.filter(status=DuplicateStatus.OPEN).count() == created
    seeded = set(
        AuditLog.objects.filter(action="customer.create", actor_label="system:demo").values_list(
            "customer_id", flat=True
        )
    )
    proposed = DuplicateCandidate.objects.values_list("customer_a_id", "customer_b_id")
    assert seeded <= {pk for pair in proposed for pk in pair}
    reasons = set(DuplicateCandidate.objects.values_list("reason", flat=True))
    assert "氏名カナと郵便番号が一致" in reasons
    assert "同じ電話番号でメールが異なる" in reasons


def _seed_then_roll_back(*, count: int, seed: int) -> list[tuple[str, str, str, list[str]]]:
    seeded: list[tuple[str, str, str, list[str]]] = []
    try:
        with transaction.atomic():
            seed_duplicate_candidates(count=count, seed=seed)
            seeded = _seeded()
            raise _UndoSeedingError
    except _UndoSeedingError:
        return seeded


def test_demo_seeding_is_deterministic_for_a_seed(db: None) -> None:
    _shop(40)
    first = _seed_then_roll_back(count=8, seed=3)
    again = _seed_then_roll_back(count=8, seed=3)
    other = _seed_then_roll_back(count=8, seed=4)
    assert len(first) == 8
    assert again == first
    assert other != first
