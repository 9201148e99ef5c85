"""Merging two customer records that staff confirmed are one person, and undoing a merge.

Identity resolution (resolution.py) only proposes probable duplicates; these functions carry
out what staff decide in the review queue:

- `customer_merge` gives the survivor everything the absorbed record had (identities, orders,
  subscriptions, contacts, behaviour and timeline rows, tags, consents, points) in one
  transaction, and records in a CustomerMerge row exactly which rows changed hands.
- `customer_merge_undo` gives back exactly those rows. Rows created after the merge (an order
  imported for the survivor the next day) stay where they are.
- `duplicate_dismiss` / `duplicate_reopen` record "別人" and take it back.

Two tables are append-only and never change hands: the consent evidence (ConsentEvent) stays
with the absorbed record, reachable through the merge record, and points move as adjustment
entries (−B on the absorbed record, and on the survivor one + entry per expiry date, keeping
the date) so both ledgers still add up; an undo gives back exactly those lots.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.core.paginator import Page
from django.db import models, transaction
from django.db.models import Count, Exists, Max, OuterRef, Subquery
from django.db.models.functions import Coalesce
from django.utils import timezone

from kizuna.commerce.models import Order
from kizuna.core.append_only import REDACTED
from kizuna.core.audit import Actor, audit_record
from kizuna.core.models import AuditLog
from kizuna.core.paging import Paginator
from kizuna.customers.models import (
    IDENTITY_NEWEST_FIRST,
    SENT_TO_NEWEST_KINDS,
    Consent,
    ConsentChannel,
    ConsentEvent,
    Customer,
    CustomerMerge,
    DuplicateCandidate,
    DuplicateStatus,
    Gender,
    Identity,
    IdentityKind,
    MemberStatus,
    Tag,
    TimelineKind,
)
from kizuna.customers.selectors import identity_groups
from kizuna.customers.services import (
    ADDRESS_FIELDS,
    CONSENT_STATE_FIELDS,
    ERASE_ACTION,
    ERASED_NAME,
    is_erased,
)
from kizuna.customers.timeline import timeline_add
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import points_lots, points_transfer
from kizuna.subscriptions.models import Subscription, SubscriptionDelivery
from kizuna.support.models import Contact

MERGE_POINTS_REASON = "名寄せによる移行"
UNDO_POINTS_REASON = "名寄せの取り消しによる戻し"
MANUAL_MERGE_REASON = "スタッフが直接統合"
QUEUE_PER_PAGE = 20

# Tables whose rows belong to a customer through a `customer` foreign key and simply change
# hands, by model label: apps built on customers (campaigns) are named, never imported. The
# outbox moves so that the survivor's sending history (frequency caps, "already sent") is whole
# and messages still waiting go to the person's current addresses.
MOVED_TABLES: tuple[str, ...] = (
    "customers.Identity",
    "commerce.Order",
    "subscriptions.Subscription",
    "support.Contact",
    "customers.BehaviourEvent",
    "customers.TimelineEvent",
    "campaigns.OutboxMessage",
)
# Tables pointing at a customer that a merge deliberately leaves where they are: append-only
# evidence and ledgers, the review queue itself, the merge records, and state that other apps
# rebuild from the survivor's data on their next run (analytics snapshots, segment membership)
# or that belongs to one record's journey (scenario enrollments, whose uniqueness per customer
# a move could break). Consent is handled channel by channel; Customer.merged_into is the
# merge's own mark.
STAYS_WITH_ABSORBED: tuple[str, ...] = (
    "customers.ConsentEvent",
    "loyalty.PointEntry",
    "customers.DuplicateCandidate",
    "customers.CustomerMerge",
    "analytics.CustomerScore",
    "automation.Enrollment",
    "automation.SegmentMember",
)


def moved_models() -> list[type[models.Model]]:
    return [apps.get_model(label) for label in MOVED_TABLES]


# Profile fields filled one by one when the survivor's is blank.
_FILL_FIELDS = ("given_name", "family_kana", "given_kana", "company", "birthday", "gender", "notes")
# SQLite caps the number of parameters in one statement; updates by id go in slices.
_ID_CHUNK = 500


class MergeError(ValidationError):
    """A merge, undo or decision that cannot be carried out; the message says why, in Japanese."""


# --- what a merge would do -------------------------------------------------------------------


class ConsentOutcome:
    MOVE = "move"  # only the absorbed record had a row: it moves
    KEEP = "keep"  # the survivor's row holds the later decision (or the same one): it stays
    CARRY_OPT_OUT = "carry_opt_out"  # the absorbed record's later opt-out replaces a grant
    CARRY_GRANT = "carry_grant"  # the absorbed record's later grant replaces an opt-out


# The outcomes where the survivor's row takes on the absorbed row's decision.
_CARRIED = (ConsentOutcome.CARRY_OPT_OUT, ConsentOutcome.CARRY_GRANT)


def _decision(row: Consent) -> tuple[dt.datetime, bool] | None:
    """When the row's current decision was made and whether it is a grant; None for a row
    that records neither a grant nor an opt-out."""
    if row.granted and row.granted_at is not None:
        return row.granted_at, True
    if not row.granted and row.opted_out_at is not None:
        return row.opted_out_at, False
    return None


def _decision_word(row: Consent) -> str:
    decision = _decision(row)
    if decision is None:
        return "未同意"
    return "同意" if decision[1] else "配信停止"


def consent_state(row: Consent | None) -> str:
    """A consent row's decision as staff read it, with its time in Japan time: "同意
    2025-04-01 10:00", "配信停止 …", "未同意" (no decision) or "記録なし" (no row)."""
    if row is None:
        return "記録なし"
    decision = _decision(row)
    if decision is None:
        return _decision_word(row)
    return f"{_decision_word(row)} {timezone.localtime(decision[0]):%Y-%m-%d %H:%M}"


def final_survivor_id(customer: Customer) -> int | None:
    """The live record a merged-away customer now lives in, following merges of merges (A into
    B, then B into C: C); None for a customer not merged away."""
    survivor_id = customer.merged_into_id
    seen: set[int] = set()
    while survivor_id is not None and survivor_id not in seen:
        seen.add(survivor_id)
        onward = (
            Customer.objects.filter(pk=survivor_id).values_list("merged_into_id", flat=True).first()
        )
        if onward is None:
            break
        survivor_id = onward
    return survivor_id


@dataclass(frozen=True)
class ConsentPlan:
    channel: ConsentChannel
    outcome: str
    survivor_row: Consent | None
    absorbed_row: Consent

    @property
    def survivor_state(self) -> str:
        return consent_state(self.survivor_row)

    @property
    def absorbed_state(self) -> str:
        return consent_state(self.absorbed_row)

    @property
    def label(self) -> str:
        """What the merged record will have, and from which record."""
        if self.outcome == ConsentOutcome.KEEP and self.survivor_row is not None:
            return f"{_decision_word(self.survivor_row)}(統合先のまま)"
        return f"{_decision_word(self.absorbed_row)}(統合元から引き継ぎ)"


@dataclass(frozen=True)
class FieldFill:
    name: str
    label: str
    old: Any
    new: Any

    @property
    def old_display(self) -> str:
        return _display(self.name, self.old)

    @property
    def new_display(self) -> str:
        return _display(self.name, self.new)


def _display(name: str, value: Any) -> str:
    """A profile value as staff read it: choice labels, not codes; blanks said as such."""
    if _is_blank(name, value):
        return "(空欄)"
    field = Customer._meta.get_field(name)
    choices = dict(getattr(field, "flatchoices", None) or ())
    return str(choices.get(value, value))


@dataclass(frozen=True)
class MergePlan:
    """What `customer_merge` would move, fill and transfer for this pair, for the confirmation
    screen (and, computed again under lock, for the merge itself)."""

    survivor: Customer
    absorbed: Customer
    counts: dict[str, int]  # model label → rows that would move
    consents: list[ConsentPlan]
    fills: list[FieldFill]
    tags: list[Tag]
    points: int
    # Channels whose address messages go to changes: the absorbed record's was seen later.
    send_to_changes: list[SendToChange] = field(default_factory=list)

    @property
    def count_rows(self) -> list[tuple[str, int]]:
        """(Japanese table name, rows) for every table with something to move."""
        rows = [(table_label(label), count) for label, count in self.counts.items() if count]
        consents = sum(1 for c in self.consents if c.outcome == ConsentOutcome.MOVE)
        return rows + ([(table_label(Consent._meta.label), consents)] if consents else [])


@dataclass(frozen=True)
class SendToChange:
    """After the merge, messages of this kind go to the absorbed record's `after` (observed
    later than the survivor's `before`, "" when the survivor had none)."""

    kind: IdentityKind
    before: str
    after: str


def _send_to_changes(survivor: Customer, absorbed: Customer) -> list[SendToChange]:
    """Where messages will go once both records' identities are one record's: the newest
    observed of each kind (IDENTITY_NEWEST_FIRST), which may be the absorbed record's."""
    changes = []
    for kind in SENT_TO_NEWEST_KINDS:
        newest = Identity.objects.filter(kind=kind).order_by(*IDENTITY_NEWEST_FIRST)
        before = newest.filter(customer=survivor).first()
        after = newest.filter(customer__in=(survivor, absorbed)).first()
        if after is not None and after.customer_id == absorbed.pk:
            shown = before.display_value or before.value if before else ""
            changes.append(SendToChange(kind, shown, after.display_value or after.value))
    return changes


def table_label(label: str) -> str:
    """A table's Japanese name from its model label ("commerce.Order" → "注文")."""
    return str(apps.get_model(label)._meta.verbose_name)


def _is_blank(name: str, value: Any) -> bool:
    return value in ("", None) or (name == "gender" and value == Gender.UNKNOWN)


def _field_label(name: str) -> str:
    return str(getattr(Customer._meta.get_field(name), "verbose_name", name))


def _fills(survivor: Customer, absorbed: Customer) -> list[FieldFill]:
    names = [
        name
        for name in _FILL_FIELDS
        if _is_blank(name, getattr(survivor, name)) and not _is_blank(name, getattr(absorbed, name))
    ]
    # An address is filled as a whole or not at all (ADDRESS_FIELDS).
    if all(_is_blank(name, getattr(survivor, name)) for name in ADDRESS_FIELDS):
        names += [name for name in ADDRESS_FIELDS if not _is_blank(name, getattr(absorbed, name))]
    return [
        FieldFill(
            name=name,
            label=_field_label(name),
            old=getattr(survivor, name),
            new=getattr(absorbed, name),
        )
        for name in names
    ]


def _consent_outcome(survivor_row: Consent | None, absorbed_row: Consent) -> str:
    """Which decision the merged record keeps for one channel: the later of the two records'
    decisions, whichever record staff keep, so a merge neither undoes an opt-out made after
    a grant (特定電子メール法, RELIABILITY S6) nor an explicit grant made after an opt-out. On
    a tie the opt-out wins. The losing decision stays, with its evidence, on its record."""
    if survivor_row is None:
        return ConsentOutcome.MOVE
    survivor, absorbed = _decision(survivor_row), _decision(absorbed_row)
    if absorbed is None or (survivor is not None and survivor[1] == absorbed[1]):
        return ConsentOutcome.KEEP  # nothing to carry, or both say the same
    absorbed_at, absorbed_grants = absorbed
    if survivor is not None and (
        absorbed_at < survivor[0] or (absorbed_at == survivor[0] and absorbed_grants)
    ):
        return ConsentOutcome.KEEP
    return ConsentOutcome.CARRY_GRANT if absorbed_grants else ConsentOutcome.CARRY_OPT_OUT


def merge_plan(*, survivor: Customer, absorbed: Customer) -> MergePlan:
    """What merging `absorbed` into `survivor` would do. Reads only."""
    counts = {
        model._meta.label: model._default_manager.filter(customer=absorbed).count()
        for model in moved_models()
    }
    survivor_consents = {c.channel: c for c in Consent.objects.filter(customer=survivor)}
    consents = [
        ConsentPlan(
            channel=ConsentChannel(row.channel),
            outcome=_consent_outcome(survivor_consents.get(row.channel), row),
            survivor_row=survivor_consents.get(row.channel),
            absorbed_row=row,
        )
        for row in Consent.objects.filter(customer=absorbed).order_by("channel")
    ]
    survivor_tags = set(survivor.tags.values_list("pk", flat=True))
    return MergePlan(
        survivor=survivor,
        absorbed=absorbed,
        counts=counts,
        consents=consents,
        fills=_fills(survivor, absorbed),
        tags=[tag for tag in absorbed.tags.all() if tag.pk not in survivor_tags],
        points=points_balance(absorbed),
        send_to_changes=_send_to_changes(survivor, absorbed),
    )


# --- merge ------------------------------------------------------------------------------------


def _lock_pair(first_pk: int, second_pk: int) -> dict[int, Customer]:
    # Always lock in id order, so a merge and an undo of the same pair cannot deadlock.
    rows = Customer.objects.select_for_update().filter(pk__in=[first_pk, second_pk]).order_by("pk")
    found = {c.pk: c for c in rows}
    missing = {first_pk, second_pk} - set(found)
    if missing:
        raise MergeError(f"顧客 #{min(missing)} が見つかりません")
    return found


def _chunks(ids: Sequence[int]) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), _ID_CHUNK):
        yield ids[start : start + _ID_CHUNK]


def _reassign(model: type[models.Model], ids: Sequence[int], customer: Customer) -> None:
    values: dict[str, Any] = {"customer": customer}
    if any(f.name == "updated_at" for f in model._meta.concrete_fields):
        values["updated_at"] = timezone.now()  # QuerySet.update skips auto_now
    for chunk in _chunks(ids):
        model._default_manager.filter(pk__in=chunk).update(**values)


def _json(value: Any) -> Any:
    """A field value as stored in the merge record's JSON (moments in UTC, so a value read back
    from the database compares equal whatever time zone it was written in)."""
    if isinstance(value, dt.datetime) and timezone.is_aware(value):
        return value.astimezone(dt.UTC).isoformat()
    return value.isoformat() if isinstance(value, dt.date) else value


def _consent_state(row: Consent) -> dict[str, Any]:
    return {name: _json(getattr(row, name)) for name in CONSENT_STATE_FIELDS}


def _set_consent_state(row: Consent, state: dict[str, Any]) -> None:
    for name in CONSENT_STATE_FIELDS:
        value = state[name]
        if name.endswith("_at") and value is not None:
            value = dt.datetime.fromisoformat(value)
        setattr(row, name, value)
    row.save()


def _name(customer: Customer) -> str:
    return f"{customer.family_name}{customer.given_name}"


# Timeline titles that name the other record of a merge, written on the survivor ("merged",
# "undone") and on the absorbed record ("merged_into"). An erasure of that other record later
# replaces the name (`title_without_name`), so they are spelled in one place.
_NAMED_TITLES = {
    "merged": "顧客を統合: #{pk} {name}",
    "undone": "統合を取り消し: #{pk} {name}",
    "merged_into": "顧客 #{pk} {name} に統合",
}


def _title(which: str, customer: Customer) -> str:
    return _NAMED_TITLES[which].format(pk=customer.pk, name=_name(customer))


def title_without_name(title: str, customer_id: int) -> str:
    """A merge's timeline title with the name it gives record `customer_id` replaced by
    REDACTED (for the erasure of that record); any other title as it is."""
    for template in _NAMED_TITLES.values():
        head, tail = (part.format(pk=customer_id) for part in template.split("{name}"))
        if title.startswith(head) and title.endswith(tail) and len(title) > len(head + tail):
            return f"{head}{REDACTED}{tail}"
    return title


def _refuse_erased(customers: Iterable[Customer], refusal: str) -> None:
    """MergeError when one of `customers` is erased (customers.privacy): an anonymous record
    is never merged, proposed or reopened again. `refusal` ends the sentence."""
    for customer in customers:
        if is_erased(customer):
            raise MergeError(
                f"顧客 #{customer.pk} は個人データを削除(匿名化)済みのため、{refusal}"
                "(削除した記録は、ほかの記録と統合しません)"
            )


def _candidate_for(survivor: Customer, absorbed: Customer) -> DuplicateCandidate:
    first, second = sorted((survivor.pk, absorbed.pk))
    candidate = (
        DuplicateCandidate.objects.select_for_update()
        .filter(customer_a_id=first, customer_b_id=second)
        .first()
    )
    if candidate is None:
        candidate = DuplicateCandidate.objects.create(
            customer_a_id=first, customer_b_id=second, reason=MANUAL_MERGE_REASON
        )
    return candidate


def _merge_consents(plan: MergePlan) -> tuple[list[int], dict[str, dict[str, Any]]]:
    """Carry out the plan's consent decisions: the ids of the rows moved to the survivor, and
    per channel whose decision was carried over, the two rows and the states they swapped."""
    moved = [c.absorbed_row.pk for c in plan.consents if c.outcome == ConsentOutcome.MOVE]
    _reassign(Consent, moved, plan.survivor)
    swapped: dict[str, dict[str, Any]] = {}
    for item in plan.consents:
        if item.outcome not in _CARRIED or item.survivor_row is None:
            continue
        # The rows swap contents rather than owners: (customer, channel) is unique, and each
        # row's evidence trail (ConsentEvent) stays with the record it was given on.
        kept, carried = _consent_state(item.survivor_row), _consent_state(item.absorbed_row)
        _set_consent_state(item.survivor_row, carried)
        _set_consent_state(item.absorbed_row, kept)
        swapped[item.channel.value] = {
            "survivor_row": item.survivor_row.pk,
            "absorbed_row": item.absorbed_row.pk,
            "survivor_state": carried,
            "absorbed_state": kept,
        }
    return moved, swapped


def _swap_audit(swapped: dict[str, dict[str, Any]], *, side: str) -> dict[str, list[Any]]:
    """Old → new state of `side`'s ("survivor" or "absorbed") consent row in each channel a
    merge swapped, for its audit row: the survivor's row took the absorbed row's state and
    the other way round. The undo audits the same changes reversed."""
    other = "absorbed" if side == "survivor" else "survivor"
    return {
        f"consent.{channel}": [swap[f"{other}_state"], swap[f"{side}_state"]]
        for channel, swap in sorted(swapped.items())
    }


def _reversed(changes: dict[str, list[Any]]) -> dict[str, list[Any]]:
    return {name: [new, old] for name, (old, new) in changes.items()}


@transaction.atomic
def customer_merge(*, survivor: Customer, absorbed: Customer, acting_user: Any) -> CustomerMerge:
    """Merge `absorbed` into `survivor`: one person, one record from now on.

    In one transaction: the absorbed record's identities, orders, subscriptions, contacts,
    behaviour and timeline rows and tags move to the survivor; per consent channel the
    survivor keeps its own row, takes over the absorbed row's decision when that one is later
    (an opt-out on a tie), or receives the absorbed row when it has none; the points balance
    moves as two adjustment entries; blank profile fields of the survivor are filled (a
    non-blank one is never overwritten); the absorbed record is marked 退会 and `merged_into`
    the survivor; the pair's review candidate is marked 統合済 (created when the pair was never
    proposed). Audit rows on both records list the moved row ids per table; the returned
    CustomerMerge holds all that `customer_merge_undo` needs.

    Raises MergeError when the two are the same record, either was already merged away, or
    either was erased (an anonymous record must never take on someone's data again).
    """
    actor = Actor.of(acting_user)
    if survivor.pk == absorbed.pk:
        raise MergeError("同じ顧客同士は統合できません")
    locked = _lock_pair(survivor.pk, absorbed.pk)
    survivor, absorbed = locked[survivor.pk], locked[absorbed.pk]
    for customer in (absorbed, survivor):
        if customer.merged_into_id is not None:
            raise MergeError(
                f"顧客 #{customer.pk} は既に顧客 #{customer.merged_into_id} に統合されています"
            )
    _refuse_erased((survivor, absorbed), "統合できません")
    candidate = _candidate_for(survivor, absorbed)
    # Consent rows are changed by their own service without the customer lock; hold them too.
    list(Consent.objects.select_for_update().filter(customer__in=(survivor, absorbed)))
    plan = merge_plan(survivor=survivor, absorbed=absorbed)
    now = timezone.now()

    moved: dict[str, list[int]] = {}
    for model in moved_models():
        ids = sorted(model._default_manager.filter(customer=absorbed).values_list("pk", flat=True))
        _reassign(model, ids, survivor)
        moved[model._meta.label] = ids

    moved[Consent._meta.label], swapped = _merge_consents(plan)

    tags_removed = list(absorbed.tags.values_list("pk", flat=True).order_by("pk"))
    tags_added = [tag.pk for tag in plan.tags]
    survivor.tags.add(*tags_added)
    absorbed.tags.clear()

    for fill in plan.fills:
        setattr(survivor, fill.name, fill.new)
    if plan.fills:
        survivor.save()
    old_status = absorbed.member_status
    absorbed.member_status = MemberStatus.WITHDRAWN
    absorbed.merged_into = survivor
    absorbed.save()

    candidate.status = DuplicateStatus.MERGED
    candidate.decided_by = actor.label
    candidate.decided_at = now
    candidate.save()

    # After the rows moved, so the adjustment rows' own timeline lines land where they belong.
    # Each lot keeps its expiry date, so merged points expire when they would have.
    points_transfer(
        source=absorbed,
        target=survivor,
        lots=points_lots(absorbed),
        acting_user=actor,
        reason=MERGE_POINTS_REASON,
        at=now,
    )

    merge = CustomerMerge.objects.create(
        candidate=candidate,
        survivor=survivor,
        absorbed=absorbed,
        merged_at=now,
        merged_by=actor.label,
        moved=moved,
        consents_swapped=swapped,
        profile_filled={f.name: {"old": _json(f.old), "new": _json(f.new)} for f in plan.fills},
        tags_added=tags_added,
        tags_removed=tags_removed,
        points_transferred=plan.points,
        absorbed_member_status=old_status,
    )
    filled = {f.name: [_json(f.old), _json(f.new)] for f in plan.fills}
    audit_record(
        actor=actor,
        action="customer.merge",
        instance=merge,
        customer_id=survivor.pk,
        changes={
            "absorbed": [None, absorbed.pk],
            "moved": [None, moved],
            "consents_carried": [None, sorted(swapped)],
            **_swap_audit(swapped, side="survivor"),
            "tags": [None, tags_added],
            "points": [0, plan.points],
            **filled,
        },
    )
    audit_record(
        actor=actor,
        action="customer.merge",
        instance=merge,
        customer_id=absorbed.pk,
        changes={
            "merged_into": [None, survivor.pk],
            "member_status": [old_status, MemberStatus.WITHDRAWN.value],
            "moved": [moved, None],
            **_swap_audit(swapped, side="absorbed"),
            "tags": [tags_removed, []],
            "points": [plan.points, 0],
        },
    )
    timeline_add(
        customer=survivor,
        kind=TimelineKind.PROFILE,
        title=_title("merged", absorbed),
        occurred_at=now,
        ref=merge,
        detail={"absorbed": absorbed.pk, "points": plan.points, "filled": sorted(filled)},
    )
    timeline_add(
        customer=absorbed,
        kind=TimelineKind.PROFILE,
        title=_title("merged_into", survivor),
        occurred_at=now,
        ref=merge,
        detail={"survivor": survivor.pk},
    )
    for channel, swap in swapped.items():
        verb = "同意" if swap["survivor_state"]["granted"] else "配信停止"
        timeline_add(
            customer=survivor,
            kind=TimelineKind.CONSENT,
            title=f"{ConsentChannel(channel).label}: {verb}(統合元 #{absorbed.pk} から引き継ぎ)",
            occurred_at=now,
            ref=merge,
        )
    return merge


# --- undo -------------------------------------------------------------------------------------


def _rows_not_with(model_label: str, ids: Sequence[int], customer: Customer) -> int:
    model = apps.get_model(model_label)
    return len(ids) - _count_in(model._default_manager.filter(customer=customer), "pk", ids)


def _count_in(queryset: models.QuerySet[Any], field: str, ids: Sequence[int]) -> int:
    return sum(queryset.filter(**{f"{field}__in": chunk}).count() for chunk in _chunks(ids))


def _links_made_since(merge: CustomerMerge, survivor: Customer) -> list[str]:
    """Rows the survivor gained after the merge that point at rows the undo would give back:
    they would end up tied to the other record's order or subscription."""
    orders = set(merge.moved.get(Order._meta.label, []))
    subscriptions = merge.moved.get(Subscription._meta.label, [])
    contacts = set(merge.moved.get(Contact._meta.label, []))
    problems = []
    delivered = set(
        SubscriptionDelivery.objects.filter(
            subscription_id__in=subscriptions, order__isnull=False
        ).values_list("order_id", flat=True)
    )
    if delivered - orders:
        problems.append(
            f"統合元から移した定期購入で、統合後の注文が {len(delivered - orders)}件あります"
        )
    earned = _count_in(PointEntry.objects.filter(customer=survivor), "order_id", sorted(orders))
    if earned:
        problems.append(f"統合元から移した注文に、統合後のポイント履歴が {earned}件あります")
    referring = set(
        Contact.objects.filter(customer=survivor)
        .filter(models.Q(order_id__in=orders) | models.Q(subscription_id__in=subscriptions))
        .values_list("pk", flat=True)
    )
    if referring - contacts:
        problems.append(
            f"統合元から移した注文・定期購入についての、統合後の問い合わせが {len(referring - contacts)}件あります"
        )
    return problems


def _blockers(merge: CustomerMerge, survivor: Customer, absorbed: Customer) -> list[str]:
    """Why the merge cannot be undone now, one sentence per reason ([] when it can)."""
    if merge.undone_at is not None:
        when = timezone.localtime(merge.undone_at)
        return [f"この統合は既に取り消されています({when:%Y-%m-%d %H:%M} {merge.undone_by})"]
    if survivor.merged_into_id is not None:
        return [
            f"統合先の顧客 #{survivor.pk} はその後、顧客 #{survivor.merged_into_id} に"
            "統合されています。先にそちらの統合を取り消してください"
        ]
    if absorbed.merged_into_id != survivor.pk:
        return [f"顧客 #{absorbed.pk} は統合されていない状態に変わっています"]
    try:
        _refuse_erased((survivor, absorbed), "統合を取り消せません")
    except MergeError as exc:
        return exc.messages
    problems = _changed_since(merge, survivor, absorbed)
    balance = points_balance(survivor)
    if balance < merge.points_transferred:
        problems.append(
            "統合先のポイント残高が足りないため取り消せません"
            f"(残高 {balance:,} pt、戻すポイント {merge.points_transferred:,} pt)"
        )
    return problems


def undo_blockers(merge: CustomerMerge) -> list[str]:
    """Why `customer_merge_undo` would refuse this merge now ([] when it would not), for the
    confirmation screen. The undo checks again under lock."""
    return _blockers(merge, merge.survivor, merge.absorbed)


def _changed_since(merge: CustomerMerge, survivor: Customer, absorbed: Customer) -> list[str]:
    """Changes after the merge that make giving back exactly the moved rows wrong."""
    problems = _links_made_since(merge, survivor)
    for label, ids in merge.moved.items():
        gone = _rows_not_with(label, ids, survivor)
        if gone:
            problems.append(f"{table_label(label)} {gone}件が統合先から移動・削除されています")
    returning = Consent.objects.filter(pk__in=merge.moved.get(Consent._meta.label, []))
    taken = set(
        Consent.objects.filter(
            customer=absorbed, channel__in=returning.values("channel")
        ).values_list("channel", flat=True)
    )
    problems += [
        f"統合元に{ConsentChannel(channel).label}の配信同意が新たに記録されています"
        for channel in sorted(taken)
    ]
    for channel, swap in merge.consents_swapped.items():
        row = Consent.objects.filter(pk=swap["survivor_row"]).first()
        if row is None or _consent_state(row) != swap["survivor_state"]:
            label = ConsentChannel(channel).label
            problems.append(f"統合後に統合先の{label}の配信同意が変更されています")
    return [f"統合の後にデータが変わったため、自動では取り消せません: {p}" for p in problems]


@transaction.atomic
def customer_merge_undo(*, merge: CustomerMerge, acting_user: Any) -> CustomerMerge:
    """Take a merge back: exactly the rows it moved go back to the absorbed record.

    The points transfer is reversed lot by lot (the survivor gives back the lots it was given,
    each from its own expiry date, and the absorbed record gets them back with those dates, so
    both records' lots are what they were before the merge), profile fields the merge
    filled are blanked again only where they still hold the value it put there, the absorbed
    record gets its member status back, the candidate returns to the review queue, and both
    records get audit and timeline rows. Rows created after the merge stay with the survivor.

    Raises MergeError (nothing changes) when the merge was already undone, when the survivor
    was merged into a third record since, when moved rows have since left the survivor or
    consent changed in a way that makes giving them back ambiguous, or when the survivor no
    longer has the points to give back.
    """
    actor = Actor.of(acting_user)
    merge = CustomerMerge.objects.select_for_update().select_related("candidate").get(pk=merge.pk)
    locked = _lock_pair(merge.survivor_id, merge.absorbed_id)
    survivor, absorbed = locked[merge.survivor_id], locked[merge.absorbed_id]
    blockers = _blockers(merge, survivor, absorbed)
    if blockers:
        raise MergeError(blockers)
    now = timezone.now()

    for label, ids in merge.moved.items():
        _reassign(apps.get_model(label), ids, absorbed)
    for swap in merge.consents_swapped.values():
        survivor_row = Consent.objects.get(pk=swap["survivor_row"])
        absorbed_row = Consent.objects.get(pk=swap["absorbed_row"])
        _set_consent_state(survivor_row, swap["absorbed_state"])
        _set_consent_state(absorbed_row, swap["survivor_state"])

    survivor.tags.remove(*merge.tags_added)
    absorbed.tags.add(*merge.tags_removed)

    cleared: dict[str, list[Any]] = {}
    for name, fill in merge.profile_filled.items():
        if _json(getattr(survivor, name)) == fill["new"]:
            setattr(survivor, name, fill["old"])
            cleared[name] = [fill["new"], fill["old"]]
    if cleared:
        survivor.save()
    absorbed.member_status = merge.absorbed_member_status
    absorbed.merged_into = None
    absorbed.save()

    candidate = merge.candidate
    candidate.status = DuplicateStatus.OPEN
    candidate.decided_by = ""
    candidate.decided_at = None
    candidate.save()

    points_transfer(
        source=survivor,
        target=absorbed,
        lots=_merged_lots(merge),
        acting_user=actor,
        reason=UNDO_POINTS_REASON,
        at=now,
    )

    merge.undone_at = now
    merge.undone_by = actor.label
    merge.save()
    audit_record(
        actor=actor,
        action="customer.merge_undo",
        instance=merge,
        customer_id=survivor.pk,
        changes={
            "absorbed": [absorbed.pk, None],
            "moved": [merge.moved, None],
            **_reversed(_swap_audit(merge.consents_swapped, side="survivor")),
            "points": [merge.points_transferred, 0],
            **cleared,
        },
    )
    audit_record(
        actor=actor,
        action="customer.merge_undo",
        instance=merge,
        customer_id=absorbed.pk,
        changes={
            "merged_into": [survivor.pk, None],
            "member_status": [MemberStatus.WITHDRAWN.value, merge.absorbed_member_status],
            "moved": [None, merge.moved],
            **_reversed(_swap_audit(merge.consents_swapped, side="absorbed")),
            "points": [0, merge.points_transferred],
        },
    )
    timeline_add(
        customer=survivor,
        kind=TimelineKind.PROFILE,
        title=_title("undone", absorbed),
        occurred_at=now,
        ref=merge,
    )
    timeline_add(
        customer=absorbed,
        kind=TimelineKind.PROFILE,
        title=f"顧客 #{survivor.pk} への統合を取り消し",
        occurred_at=now,
        ref=merge,
    )
    return merge


# --- decisions without a merge ----------------------------------------------------------------


def _locked_candidate(candidate: DuplicateCandidate) -> DuplicateCandidate:
    found = DuplicateCandidate.objects.select_for_update().filter(pk=candidate.pk).first()
    if found is None:
        raise MergeError("この重複候補は見つかりません")
    return found


@transaction.atomic
def duplicate_dismiss(*, candidate: DuplicateCandidate, acting_user: Any) -> DuplicateCandidate:
    """Record that the pair are two different people (「別人」). Only an open candidate."""
    actor = Actor.of(acting_user)
    candidate = _locked_candidate(candidate)
    if candidate.status != DuplicateStatus.OPEN:
        raise MergeError(f"この候補は既に「{candidate.get_status_display()}」です")
    candidate.status = DuplicateStatus.DISMISSED
    candidate.decided_by = actor.label
    candidate.decided_at = timezone.now()
    candidate.save()
    for customer_id in (candidate.customer_a_id, candidate.customer_b_id):
        audit_record(
            actor=actor,
            action="duplicate.dismiss",
            instance=candidate,
            customer_id=customer_id,
            changes={"status": [DuplicateStatus.OPEN.value, DuplicateStatus.DISMISSED.value]},
        )
    return candidate


@transaction.atomic
def duplicate_reopen(*, candidate: DuplicateCandidate, acting_user: Any) -> DuplicateCandidate:
    """Put a dismissed pair back in the review queue (a merged one is reopened by undoing it).
    Refused for a pair with an erased record: it could only lead to a merge, which is refused."""
    actor = Actor.of(acting_user)
    candidate = _locked_candidate(candidate)
    if candidate.status != DuplicateStatus.DISMISSED:
        raise MergeError("「別人として確認済」の候補だけを確認待ちに戻せます")
    _refuse_erased((candidate.customer_a, candidate.customer_b), "確認待ちに戻せません")
    candidate.status = DuplicateStatus.OPEN
    candidate.decided_by = ""
    candidate.decided_at = None
    candidate.save()
    for customer_id in (candidate.customer_a_id, candidate.customer_b_id):
        audit_record(
            actor=actor,
            action="duplicate.reopen",
            instance=candidate,
            customer_id=customer_id,
            changes={"status": [DuplicateStatus.DISMISSED.value, DuplicateStatus.OPEN.value]},
        )
    return candidate


# --- reading for the review queue --------------------------------------------------------------


@dataclass(frozen=True)
class CustomerCard:
    """One side of a pair, as the review queue shows it."""

    customer: Customer
    phones: list[Identity]
    emails: list[Identity]
    other_ids: list[Identity]
    # Ids of the identities messages go to where there are several of a kind (as the 識別子
    # card marks them: IdentityGroup.sent_to), so a reviewer sees which address is in use.
    sent_to: frozenset[int]
    order_count: int
    last_ordered_at: dt.datetime | None
    points: int
    erased: bool  # anonymised on request (customers.privacy): never merged


@dataclass(frozen=True)
class Match:
    """A value the two records were paired on, so the reviewer sees why they were proposed.

    `show` says how the values are written: "phone" and "postal" go through the template
    filters of the same name, anything else is shown as it is."""

    label: str
    show: str
    values: tuple[tuple[str, int], ...]  # (value, id of the customer record holding it)
    identity: bool  # an identity belongs to one customer only, so only one record holds it

    @property
    def per_record(self) -> bool:
        """Whether to say which record holds each value (always for an identity; for a profile
        value only when the two records no longer agree)."""
        return self.identity or len(self.values) > 1

    @property
    def one_of_several(self) -> bool:
        """An identity match listing more than one value: the candidate keeps only its reason,
        not which value matched, so every value of that kind on either record is listed (a
        record's own other number among them) and the heading must not call them all matched."""
        return self.identity and len({value for value, _ in self.values}) > 1


# The candidate keeps only the sentence identity resolution (resolution.py) wrote, so what a
# reason was matched on is read back from it: 「同じ{識別子の種類}で…」 for an identity,
# 「氏名カナと郵便番号が一致」 for the profile match.
_PROFILE_REASON_WORDS = ("氏名カナ", "郵便番号")


def _reason_kind(reason: str) -> IdentityKind | None:
    return next((kind for kind in IdentityKind if reason.startswith(f"同じ{kind.label}で")), None)


def _identities_of(card: CustomerCard, kind: IdentityKind) -> list[Identity]:
    if kind in (IdentityKind.PHONE, IdentityKind.PBX_CALLER):
        return card.phones  # one number, whether the customer gave it or the PBX saw it
    if kind == IdentityKind.EMAIL:
        return card.emails
    return [i for i in card.other_ids if i.kind == kind]


def _identity_match(kind: IdentityKind, a: CustomerCard, b: CustomerCard) -> Match:
    """The values of that kind on either record. The record that gave an already registered
    value was not given it (one value, one customer), so normally only one side has any."""
    numbers = kind in (IdentityKind.PHONE, IdentityKind.PBX_CALLER)
    # Written as the records show them beside it: numbers and e-mails normalised, other IDs
    # as given.
    normalised = numbers or kind == IdentityKind.EMAIL
    values = tuple(
        (
            identity.value if normalised else identity.display_value or identity.value,
            card.customer.pk,
        )
        for card in (a, b)
        for identity in _identities_of(card, kind)
    )
    return Match(label=kind.label, show="phone" if numbers else "", values=values, identity=True)


def _profile_match(words: str, a: Customer, b: Customer) -> Match:
    """The name kana or postal code, once when both records agree (kana as matching compares
    it, on its normalised key, so two spellings of one reading count as one)."""
    kana = words == "氏名カナ"
    shown = (a.full_kana, b.full_kana) if kana else (a.postal_code, b.postal_code)
    keys = (a.kana_key, b.kana_key) if kana else shown
    values = [(shown[0], a.pk)] if shown[0] else []
    if shown[1] and keys[1] != keys[0]:
        values.append((shown[1], b.pk))
    return Match(label=words, show="" if kana else "postal", values=tuple(values), identity=False)


def candidate_matches(
    candidate: DuplicateCandidate, a: CustomerCard, b: CustomerCard
) -> list[Match]:
    """The values behind the candidate's reason, read from the two records as they are now
    ([] for a reason that names none, such as a merge staff made directly)."""
    kind = _reason_kind(candidate.reason)
    if kind is not None:
        return [_identity_match(kind, a, b)]
    return [
        _profile_match(words, a.customer, b.customer)
        for words in _PROFILE_REASON_WORDS
        if words in candidate.reason
    ]


@dataclass(frozen=True)
class QueueItem:
    candidate: DuplicateCandidate
    a: CustomerCard
    b: CustomerCard
    merge: CustomerMerge | None  # the merge in force, for merged candidates
    undone: CustomerMerge | None  # the latest merge taken back, for candidates back in the queue
    erased: frozenset[int] = frozenset()  # ids of the two records that were erased

    @property
    def can_reopen(self) -> bool:
        """Whether 「確認待ちに戻す」 is offered: a 別人 pair without an erased record."""
        return self.candidate.status == DuplicateStatus.DISMISSED and not self.erased

    @property
    def matches(self) -> list[Match]:
        return candidate_matches(self.candidate, self.a, self.b)

    @property
    def sides(self) -> tuple[CustomerCard, CustomerCard]:
        return self.a, self.b

    @property
    def shared_phones(self) -> frozenset[str]:
        return frozenset(i.value for i in self.a.phones) & {i.value for i in self.b.phones}

    @property
    def shared_emails(self) -> frozenset[str]:
        return frozenset(i.value for i in self.a.emails) & {i.value for i in self.b.emails}

    @property
    def same(self) -> frozenset[str]:
        """Which profile values the two records share ("kana", "postal"…), so staff see at a
        glance why they were paired."""
        a, b = self.a.customer, self.b.customer
        shared = {
            "name": a.name_key == b.name_key,
            "kana": a.kana_key == b.kana_key,
            "postal": a.postal_code == b.postal_code,
            "address": a.address1 == b.address1,
        }
        blank = {
            "name": a.name_key,
            "kana": a.kana_key,
            "postal": a.postal_code,
            "address": a.address1,
        }
        return frozenset(key for key, equal in shared.items() if equal and blank[key])

    @property
    def older(self) -> CustomerCard:
        """The default survivor: the record registered first (the lower id on a tie)."""
        a, b = self.a.customer, self.b.customer
        return self.b if (b.registered_at, b.pk) < (a.registered_at, a.pk) else self.a


def _distinct_numbers(identities: Iterable[Identity]) -> list[Identity]:
    """Phone and PBX caller identities, one per number (the PBX usually reports the number
    the customer also gave as their phone), phone first."""
    numbers: dict[str, Identity] = {}
    for identity in sorted(identities, key=lambda i: i.kind != IdentityKind.PHONE):
        if identity.kind in (IdentityKind.PHONE, IdentityKind.PBX_CALLER):
            numbers.setdefault(identity.value, identity)
    return list(numbers.values())


def customer_cards(ids: Iterable[int]) -> dict[int, CustomerCard]:
    """Cards for these customers in two queries, however many there are."""
    latest_balance = (
        PointEntry.objects.filter(customer=OuterRef("pk"))
        .order_by("-seq")
        .values("balance_after")[:1]
    )
    customers = (
        Customer.objects.filter(pk__in=set(ids))
        .annotate(
            order_count=Count("orders"),
            last_ordered_at=Max("orders__ordered_at"),
            points=Coalesce(Subquery(latest_balance), 0),
        )
        .prefetch_related("identities")
    )
    cards = {}
    for customer in customers:
        # Kinds in their declared order, each newest first, as the customer page lists them.
        groups = identity_groups(customer)
        identities = [identity for group in groups for identity in group.identities]
        cards[customer.pk] = CustomerCard(
            customer=customer,
            phones=_distinct_numbers(identities),
            emails=[i for i in identities if i.kind == IdentityKind.EMAIL],
            other_ids=[
                i
                for i in identities
                if i.kind not in (IdentityKind.PHONE, IdentityKind.PBX_CALLER, IdentityKind.EMAIL)
            ],
            sent_to=frozenset(group.sent_to.pk for group in groups if group.sent_to),
            order_count=customer.order_count,
            last_ordered_at=customer.last_ordered_at,
            points=customer.points,
            erased=is_erased(customer),
        )
    return cards


def _erased_side() -> models.Q:
    """Candidates with an erased record on either side: named ERASED_NAME and audited as
    erased (the name alone is checked first, so the audit log is asked about few rows)."""
    erased = AuditLog.objects.filter(action=ERASE_ACTION, entity=Customer._meta.label)
    return models.Q(
        Exists(erased.filter(customer_id=OuterRef("customer_a_id"))),
        customer_a__family_name=ERASED_NAME,
    ) | models.Q(
        Exists(erased.filter(customer_id=OuterRef("customer_b_id"))),
        customer_b__family_name=ERASED_NAME,
    )


def _hidden_from_open() -> models.Q:
    """Open pairs the queue does not show: a record since merged away (undoing that merge
    brings the pair back) or erased (such a pair can never be merged; the erasure closes the
    open ones, this hides one proposed while it ran)."""
    return (
        models.Q(customer_a__merged_into__isnull=False)
        | models.Q(customer_b__merged_into__isnull=False)
        | _erased_side()
    )


def _queue_candidates(status: DuplicateStatus) -> models.QuerySet[DuplicateCandidate]:
    candidates = DuplicateCandidate.objects.filter(status=status)
    if status == DuplicateStatus.OPEN:
        return candidates.exclude(_hidden_from_open()).order_by("-created_at", "-id")
    return candidates.order_by("-decided_at", "-id")


def duplicate_queue(
    *, status: DuplicateStatus, page: str | int | None
) -> tuple[Page[DuplicateCandidate], list[QueueItem]]:
    """One page (20) of candidates in `status`: open ones newest first, decided ones by the
    time of the decision. Open pairs with a record since merged away are left out: the
    record no longer exists for staff (undoing that merge brings the pair back)."""
    paginator = Paginator(_queue_candidates(status), QUEUE_PER_PAGE)
    page_obj = paginator.get_page(page)
    rows = list(page_obj.object_list)
    cards = customer_cards(
        [pk for c in rows for pk in (c.customer_a_id, c.customer_b_id)] if rows else []
    )
    erased_ids = {pk for pk, card in cards.items() if card.erased}
    # The merge in force for a merged pair; for a pair back in the queue, the merge that was
    # taken back, so whoever decides again sees it was merged once.
    live: dict[int, CustomerMerge] = {}
    undone: dict[int, CustomerMerge] = {}
    if rows and status != DuplicateStatus.DISMISSED:
        for merge in CustomerMerge.objects.filter(candidate__in=rows).order_by("merged_at", "pk"):
            (undone if merge.undone_at else live)[merge.candidate_id] = merge
    items = [
        QueueItem(
            candidate=c,
            a=cards[c.customer_a_id],
            b=cards[c.customer_b_id],
            merge=live.get(c.pk),
            undone=undone.get(c.pk) if c.status == DuplicateStatus.OPEN else None,
            erased=frozenset(pk for pk in (c.customer_a_id, c.customer_b_id) if pk in erased_ids),
        )
        for c in rows
    ]
    return page_obj, items


def queue_last_page(status: DuplicateStatus) -> int:
    """The number of the last page of `status` (1 when it is empty), to send a reviewer whose
    page emptied to the last one that still exists."""
    return Paginator(_queue_candidates(status), QUEUE_PER_PAGE).num_pages


def queue_counts() -> dict[str, int]:
    """How many candidates are in each state, for the filter tabs."""
    counts = dict(
        DuplicateCandidate.objects.values_list("status").annotate(n=Count("id")).order_by()
    )
    open_hidden = DuplicateCandidate.objects.filter(status=DuplicateStatus.OPEN).filter(
        _hidden_from_open()
    )
    counts[DuplicateStatus.OPEN] = counts.get(DuplicateStatus.OPEN, 0) - open_hidden.count()
    return {status.value: counts.get(status, 0) for status in DuplicateStatus}


@dataclass(frozen=True)
class LaterChange:
    """A change to the survivor's profile after the merge (an operator, the API or a webhook
    for either record's IDs): an undo leaves it where it is."""

    at: dt.datetime
    actor: str
    change: FieldFill


# The undo page lists the newest of these; more than a screenful means reading the audit log.
LATER_CHANGES_SHOWN = 20


@dataclass(frozen=True)
class MergeDetail:
    merge: CustomerMerge
    moved: list[tuple[str, int]]  # (Japanese table name, rows)
    fills: list[FieldFill]
    consent_events: list[ConsentEvent]  # the absorbed record's evidence, which did not move
    later_changes: list[LaterChange]  # newest first, at most LATER_CHANGES_SHOWN

    @property
    def carried(self) -> list[str]:
        """The decisions the survivor took over from the absorbed record, one per channel
        ("メール: 配信停止")."""
        return [
            f"{ConsentChannel(channel).label}: "
            f"{'同意' if swap['survivor_state']['granted'] else '配信停止'}"
            for channel, swap in sorted(self.merge.consents_swapped.items())
        ]


def merge_detail(pk: int) -> MergeDetail | None:
    merge = (
        CustomerMerge.objects.select_related("survivor", "absorbed", "candidate")
        .filter(pk=pk)
        .first()
    )
    if merge is None:
        return None
    return MergeDetail(
        merge=merge,
        moved=[(table_label(label), len(ids)) for label, ids in merge.moved.items() if ids],
        fills=[
            FieldFill(name=name, label=_field_label(name), old=fill["old"], new=fill["new"])
            for name, fill in merge.profile_filled.items()
        ],
        consent_events=list(
            ConsentEvent.objects.filter(customer_id=merge.absorbed_id).order_by("-at", "-id")
        ),
        later_changes=_later_changes(merge),
    )


def _later_changes(merge: CustomerMerge) -> list[LaterChange]:
    """The survivor's profile changes while the merge stood, from the audit log. Webhooks for
    the absorbed record's cart ID reach the survivor meanwhile, so a name or address in this
    list may be the absorbed customer's: staff decide after the undo, which does not guess."""
    rows = AuditLog.objects.filter(
        customer_id=merge.survivor_id, action="customer.update", at__gt=merge.merged_at
    )
    if merge.undone_at is not None:
        rows = rows.filter(at__lt=merge.undone_at)
    fields = {field.name for field in Customer._meta.get_fields()}
    return [
        LaterChange(
            at=row.at,
            actor=row.actor_label,
            change=FieldFill(name=name, label=_field_label(name), old=old, new=new),
        )
        for row in rows.order_by("-at", "-id")[:LATER_CHANGES_SHOWN]
        for name, (old, new) in row.changes.items()
        if name in fields
    ]


def _merged_lots(merge: CustomerMerge) -> list[tuple[int, dt.date | None]]:
    """The lots the merge credited to the survivor, to give back with their expiry dates.
    Merges recorded before lots kept their expiry credited one undated adjustment; those
    give back the same amount undated."""
    credited = [
        (amount, expires_on)
        for amount, expires_on in PointEntry.objects.filter(
            customer=merge.survivor,
            kind=PointKind.ADJUST,
            reason=MERGE_POINTS_REASON,
            occurred_at=merge.merged_at,
            amount__gt=0,
        ).values_list("amount", "expires_on")
    ]
    if sum(amount for amount, _ in credited) != merge.points_transferred:
        return [(merge.points_transferred, None)] if merge.points_transferred else []
    return credited
