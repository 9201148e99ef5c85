"""APPI requests (個人情報保護法 33–35条, RELIABILITY D7): export everything held about one
customer, and erase (anonymise) it on request while keeping the records the law requires.

- `customer_export` returns one JSON-ready dict with every row held about the person, table by
  table (HOLDINGS), and writes a `customer.export` audit row.
- `customer_erase` anonymises the person in place, in one transaction, and writes a
  `customer.erase` audit row per record. Orders with their amounts (tax and accounting, 7 years),
  the points ledger and the consent evidence stay, attached to a record that no longer
  identifies anyone; the e-mail, phone and LINE addresses go on the suppression list as hashes.

A "person" is the record asked about plus every record merged into it (customers.merge): the
absorbed records are the same person. Erasing a record that was itself merged away is refused,
naming the record it lives on in.

HOLDINGS names every table that points at a customer, with what export and erasure do to it;
tests/test_privacy.py fails when a table with a customer foreign key is added and not named.
docs/privacy.md explains the choices.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone

from kizuna.campaigns.automation.clock import jst_date
from kizuna.campaigns.automation.models import (
    Enrollment,
    EnrollmentStatus,
    Scenario,
    Segment,
    SegmentMember,
    StepDispatch,
    TriggerKind,
)
from kizuna.campaigns.models import OutboxMessage, OutboxStatus, Suppression, SuppressionKind
from kizuna.campaigns.suppression import HASH_PREFIX, address_hash, suppression_add_erased
from kizuna.commerce.models import OrderReversal
from kizuna.core.append_only import REDACTED
from kizuna.core.audit import Actor, audit_record, audit_redact, redacted
from kizuna.core.models import AuditLog, IdempotencyKey
from kizuna.customers.merge import final_survivor_id, title_without_name
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentMethod,
    Customer,
    CustomerMerge,
    DuplicateCandidate,
    DuplicateStatus,
    Gender,
    Identity,
    IdentityKind,
    MemberStatus,
    TimelineEvent,
    TimelineKind,
)
from kizuna.customers.services import ERASE_ACTION, ERASED_NAME, consent_withdraw, is_erased
from kizuna.customers.timeline import timeline_add
from kizuna.subscriptions.models import Subscription, SubscriptionStatus

EXPORT_FORMAT = "kizuna.customer-export"
EXPORT_VERSION = 1
EXPORT_ACTION = "customer.export"
REASON_MAX = 200
# Who closed a duplicate candidate an erasure made moot (DuplicateCandidate.decided_by), and
# the audit action of that change: the erasure, not a reviewer deciding 「別人」.
ERASURE_DECIDER = Actor.system("erasure").label
CLOSE_CANDIDATE_ACTION = "duplicate.close_erased"
# Scenario triggers whose dates come from the person's profile: the enrollment's dates (and
# its steps' and messages') tell the profile value itself, so erasure detaches them
# (`_detach_personal_dates`). Triggers dated by kept records (orders, shipments, points,
# subscriptions) reveal only what those records keep anyway.
PERSONAL_DATE_TRIGGERS = frozenset({TriggerKind.BIRTHDAY})
# Segment conditions on the birthday: entering such a segment ("30歳以上", "誕生月が今月")
# happens on the birthday or at the turn of its month, so a "segment entered" scenario on
# one of them is detached the same way, with its membership rows.
PERSONAL_DATE_CONDITIONS = frozenset({"age", "birthday_month"})
# What a detached enrollment's occurrence becomes (+ its id): unique, and no date in it.
ERASED_OCCURRENCE = "erased:"


class Erasure:
    """What `customer_erase` does to a table's rows."""

    KEEP = "keep"  # kept unchanged: holds no personal data beyond the (anonymised) customer id
    ANONYMISE = "anonymise"  # kept; personal fields blanked or replaced by REDACTED
    DELETE = "delete"  # removed: derived or identifying data no law asks to keep


@dataclass(frozen=True)
class Holding:
    """One table holding rows about a customer."""

    label: str  # model label
    key: str  # the export's key for its rows
    erasure: str  # an Erasure value
    lookup: tuple[str, ...] = ("customer",)  # foreign keys that point at the customer
    nested: tuple[tuple[str, str], ...] = ()  # (related name, export key) of child tables


# Every table with a foreign key to Customer. Rows of child tables (order lines, deliveries…)
# are exported inside their parent's row under the key given in `nested`.
HOLDINGS: tuple[Holding, ...] = (
    Holding("customers.Identity", "identities", Erasure.DELETE),
    Holding("customers.Consent", "consents", Erasure.ANONYMISE),
    Holding("customers.ConsentEvent", "consent_events", Erasure.KEEP),
    Holding(
        "commerce.Order",
        "orders",
        Erasure.KEEP,
        nested=(("lines", "lines"), ("shipments", "shipments"), ("reversals", "reversals")),
    ),
    Holding(
        "subscriptions.Subscription",
        "subscriptions",
        Erasure.ANONYMISE,
        nested=(("deliveries", "deliveries"),),
    ),
    Holding("loyalty.PointEntry", "points", Erasure.KEEP),
    Holding("support.Contact", "contacts", Erasure.ANONYMISE),
    Holding("customers.BehaviourEvent", "behaviour_events", Erasure.ANONYMISE),
    Holding("campaigns.OutboxMessage", "messages", Erasure.ANONYMISE),
    Holding("customers.TimelineEvent", "timeline", Erasure.DELETE),
    Holding("analytics.CustomerScore", "scores", Erasure.DELETE),
    Holding(
        "automation.Enrollment",
        "scenario_enrollments",
        Erasure.ANONYMISE,
        nested=(("dispatches", "dispatches"),),
    ),
    Holding("automation.SegmentMember", "segment_memberships", Erasure.ANONYMISE),
    Holding(
        "customers.DuplicateCandidate",
        "duplicate_candidates",
        Erasure.ANONYMISE,
        lookup=("customer_a", "customer_b"),
    ),
    Holding(
        "customers.CustomerMerge",
        "merges",
        Erasure.ANONYMISE,
        lookup=("survivor", "absorbed"),
    ),
)
# Tables exported only inside their parent's rows (see `nested`). Any other table that points at
# a holding's rows must be a holding itself, reached through its own customer key (a contact's
# order, a points entry's order): tests/test_privacy.py checks both.
NESTED_TABLES = frozenset(
    {
        "commerce.OrderLine",
        "commerce.Shipment",
        "commerce.OrderReversal",
        "subscriptions.SubscriptionDelivery",
        "automation.StepDispatch",
    }
)

_ADDRESS_KINDS: dict[str, SuppressionKind] = {
    IdentityKind.EMAIL: SuppressionKind.EMAIL,
    IdentityKind.PHONE: SuppressionKind.PHONE,
    IdentityKind.PBX_CALLER: SuppressionKind.PHONE,
    IdentityKind.LINE_USER: SuppressionKind.LINE_USER,
}
_BLANK_PROFILE: dict[str, Any] = {
    "family_name": ERASED_NAME,
    "given_name": "",
    "family_kana": "",
    "given_kana": "",
    "company": "",
    "postal_code": "",
    "prefecture": None,
    "address1": "",
    "address2": "",
    "birthday": None,
    "gender": Gender.UNKNOWN,
    "member_status": MemberStatus.WITHDRAWN,
    "notes": "",
}


class PrivacyError(ValidationError):
    """An export or erasure that cannot be carried out; the message says why, in Japanese."""


# --- export ------------------------------------------------------------------------------------


def _value(value: Any) -> Any:
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dict | list | str | int | float | bool) or value is None:
        return value
    return str(value)


def row_dict(instance: models.Model) -> dict[str, Any]:
    """Every column of a row, keyed by column name (foreign keys as `<name>_id`); dates and
    times in ISO 8601 with their offset."""
    return {
        field.attname: _value(getattr(instance, field.attname))
        for field in instance._meta.concrete_fields
    }


def person_ids(customer: Customer) -> list[int]:
    """The record and every record merged into it, at any depth (oldest merges included)."""
    ids = [customer.pk]
    frontier = [customer.pk]
    while frontier:
        frontier = list(
            Customer.objects.filter(merged_into_id__in=frontier)
            .exclude(pk__in=ids)
            .values_list("pk", flat=True)
        )
        ids.extend(frontier)
    return ids


def holding_rows(holding: Holding, ids: Iterable[int]) -> models.QuerySet[Any]:
    model = apps.get_model(holding.label)
    ids = list(ids)
    condition = Q()
    for name in holding.lookup:
        condition |= Q(**{f"{name}_id__in": ids})
    rows: models.QuerySet[Any] = model._default_manager.filter(condition).order_by("pk")
    return rows


def _export_rows(holding: Holding, ids: list[int]) -> list[dict[str, Any]]:
    queryset = holding_rows(holding, ids)
    if holding.nested:
        queryset = queryset.prefetch_related(*(name for name, _ in holding.nested))
    rows = []
    for instance in queryset:
        row = row_dict(instance)
        for name, key in holding.nested:
            children = sorted(getattr(instance, name).all(), key=lambda child: child.pk)
            row[key] = [row_dict(child) for child in children]
        rows.append(row)
    return rows


def _profile(customer: Customer) -> dict[str, Any]:
    row = row_dict(customer)
    row["tags"] = sorted(tag.name for tag in customer.tags.all())
    row["erased"] = is_erased(customer)
    return row


def _addresses(ids: list[int]) -> dict[SuppressionKind, set[str]]:
    found: dict[SuppressionKind, set[str]] = {}
    for kind, value in Identity.objects.filter(
        customer_id__in=ids, kind__in=list(_ADDRESS_KINDS)
    ).values_list("kind", "value"):
        found.setdefault(_ADDRESS_KINDS[kind], set()).add(value)
    return found


def _suppressions(ids: list[int]) -> list[dict[str, Any]]:
    """The person's addresses on the suppression list: found by their identities' addresses
    (in clear or hashed), and — once an erasure deleted the identities — by the audit log,
    whose `suppression.add` rows name the person's record and the suppression row (columns
    the log never changes; only their values are redacted). Only hashed rows are taken that
    way: a row in clear is an address the person no longer holds, perhaps someone else's."""
    condition = Q(pk__in=[])
    for kind, values in _addresses(ids).items():
        hashes = {address_hash(value) for value in values}
        condition |= Q(kind=kind, address__in=values | hashes)
    logged = AuditLog.objects.filter(
        customer_id__in=ids, action="suppression.add", entity=Suppression._meta.label
    ).values_list("entity_id", flat=True)
    pks = {int(pk) for pk in logged if str(pk).isdigit()}
    if pks:
        condition |= Q(pk__in=pks, address__startswith=HASH_PREFIX)
    return [row_dict(row) for row in Suppression.objects.filter(condition).order_by("pk")]


@transaction.atomic
def customer_export(customer: Customer, acting_user: Any) -> dict[str, Any]:
    """Everything Kizuna holds about the person, machine-readable (docs/privacy.md lists the
    keys). Audited as `customer.export` with the number of rows per table, never the data."""
    if customer.merged_into_id is not None:
        raise PrivacyError(
            f"この顧客は顧客ID {final_survivor_id(customer)} に統合されています。"
            "統合先を書き出してください(統合元の記録も含まれます)"
        )
    ids = person_ids(customer)
    records = {c.pk: c for c in Customer.objects.filter(pk__in=ids).prefetch_related("tags")}
    export: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "exported_at": timezone.now().isoformat(),
        "customer_id": customer.pk,
        "customer": _profile(records[customer.pk]),
        "merged_records": [_profile(records[pk]) for pk in ids[1:]],
    }
    for holding in HOLDINGS:
        export[holding.key] = _export_rows(holding, ids)
    export["suppressions"] = _suppressions(ids)
    export["audit_log"] = [
        row_dict(row) for row in AuditLog.objects.filter(customer_id__in=ids).order_by("at", "pk")
    ]
    counts = {key: len(value) for key, value in export.items() if isinstance(value, list) and value}
    audit_record(
        actor=Actor.of(acting_user),
        action=EXPORT_ACTION,
        instance=customer,
        customer_id=customer.pk,
        changes={"rows": [None, json.dumps(counts, sort_keys=True)]},
    )
    return export


# --- erasure -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErasureReport:
    customer_ids: list[int]
    counts: dict[str, int]  # what changed, by a short English key (as in the audit row)


def _check(customer: Customer, reason: str, ids: list[int]) -> None:
    if not reason.strip():
        raise PrivacyError({"reason": "削除の理由(請求の受付番号など)を入力してください"})
    if len(reason) > REASON_MAX:
        raise PrivacyError({"reason": f"理由は{REASON_MAX}文字以内で入力してください"})
    if customer.merged_into_id is not None:
        raise PrivacyError(
            f"この顧客は顧客ID {final_survivor_id(customer)} に統合されています。"
            "統合先を削除してください(統合元の記録もまとめて匿名化されます)"
        )
    if is_erased(customer):
        raise PrivacyError("この顧客の個人データは既に削除(匿名化)されています")
    running = running_subscriptions(ids)
    if running:
        raise SubscriptionsRunningError(running)


def running_subscriptions(ids: list[int]) -> list[Subscription]:
    """The person's subscriptions that still deliver (継続中) or will again (休止中): erasure
    waits until they are cancelled."""
    return list(
        Subscription.objects.filter(
            customer_id__in=ids, status__in=[SubscriptionStatus.ACTIVE, SubscriptionStatus.PAUSED]
        )
        .select_related("product")
        .order_by("pk")
    )


def subscriptions_refusal(running: list[Subscription], *, on_screen: bool = False) -> str:
    """Why erasure is refused while subscriptions run, and where to cancel them: for the API
    and the command line also how to cancel through the API; `on_screen` (the erase page) only
    the button staff press."""
    listed = "、".join(f"#{s.pk} {s.product.name}({s.get_status_display()})" for s in running)
    where = "解約は顧客ページの「定期購入」の「解約する」から"
    if on_screen:
        where += "行えます。解約すると、この画面から削除できます"
    else:
        where += (
            '(API では PATCH /api/v1/subscriptions/{id} に status "cancelled" と解約理由を送って)'
            "行えます"
        )
    return (
        f"継続中・休止中の定期購入が{len(running)}件あります({listed})。"
        "お届けを止めるため、先に解約してから削除してください。" + where
    )


class SubscriptionsRunningError(PrivacyError):
    """Erasure refused while `running` subscriptions still deliver; the message is the API's
    (subscriptions_refusal), a screen words it for staff from `running`."""

    def __init__(self, running: list[Subscription]) -> None:
        super().__init__(subscriptions_refusal(running))
        self.running = running


@dataclass(frozen=True)
class OpenCandidate:
    """An open duplicate candidate of the person: the other record, and where it lives now
    (itself, or the record it was merged into since)."""

    candidate: DuplicateCandidate
    other_id: int
    live_id: int


@dataclass(frozen=True)
class ErasureCheck:
    """What the erase page tells staff before they submit: the records erased together, the
    subscriptions that block it, and the open duplicate candidates — probably the same
    person's other records, which keep their name and IDs unless erased (or merged in) too."""

    person_ids: list[int]
    running_subscriptions: list[Subscription]
    open_candidates: list[OpenCandidate]


def erasure_check(customer: Customer) -> ErasureCheck:
    ids = person_ids(customer)
    found = []
    for candidate in _open_candidates(ids).select_related("customer_a", "customer_b"):
        if candidate.customer_a_id in ids and candidate.customer_b_id in ids:
            continue
        other = candidate.customer_b if candidate.customer_a_id in ids else candidate.customer_a
        if is_erased(other):
            continue  # nothing of the person left there
        live = final_survivor_id(other) or other.pk
        found.append(OpenCandidate(candidate=candidate, other_id=other.pk, live_id=live))
    return ErasureCheck(
        person_ids=ids,
        running_subscriptions=running_subscriptions(ids),
        open_candidates=found,
    )


def _pii_strings(ids: list[int]) -> frozenset[str]:
    """The person's identifying values as written anywhere: profile text and identities."""
    values: set[str] = set()
    fields = ("family_name", "given_name", "family_kana", "given_kana", "company")
    for row in Customer.objects.filter(pk__in=ids).values(*fields, "address1", "address2"):
        values.update(str(v) for v in row.values() if v)
        names = (row["family_name"], row["given_name"])
        values.add(f"{names[0]} {names[1]}".strip())
        values.add(f"{names[0]}{names[1]}")
    for value, display in Identity.objects.filter(customer_id__in=ids).values_list(
        "value", "display_value"
    ):
        values.update(v for v in (value, display) if v)
    # One or two characters (a one-kanji given name) would match unrelated text.
    return frozenset(v for v in values if len(v) >= 3 or (len(v) >= 2 and not v.isascii()))


def _redact_idempotent_replies(ids: list[int], identities: frozenset[str]) -> int:
    """Stored API answers (idempotency replays) about the person: their personal values are
    replaced by REDACTED, the rest of the answer stays so a replay still gets its status."""
    condition = Q(path__regex=r"/customers/(" + "|".join(str(i) for i in ids) + r")(/|$)")
    for value in identities:
        if value.isascii():
            condition |= Q(response_body__contains=value)
    strings = sorted(_pii_strings(ids), key=len, reverse=True)
    count = 0
    for row in IdempotencyKey.objects.filter(condition):
        body = row.response_body
        for value in strings:
            escaped = json.dumps(value)[1:-1]
            body = body.replace(value, REDACTED).replace(escaped, REDACTED)
        if body != row.response_body:
            row.response_body = body
            row.save(update_fields=["response_body"])
            count += 1
    return count


def _redact_audit(ids: list[int], identities: frozenset[str]) -> int:
    """Every value recorded in the person's audit rows, and their addresses wherever else the
    log recorded them (a suppression added before the address was theirs). An earlier export's
    row records only how many rows each table held, never the data: its counts stay readable."""
    rows = AuditLog.objects.filter(customer_id__in=ids).exclude(action=EXPORT_ACTION)
    count = audit_redact(rows.order_by("pk"))
    ascii_values = [value for value in identities if value.isascii()]
    if ascii_values:
        elsewhere = Q()
        for value in ascii_values:
            elsewhere |= Q(changes__icontains=value)
        rows = AuditLog.objects.filter(elsewhere).exclude(customer_id__in=ids).order_by("pk")
        count += audit_redact(rows, only=frozenset(ascii_values))
    return count


def _withdraw_consents(ids: list[int], actor: Actor) -> int:
    granted = Consent.objects.filter(customer_id__in=ids, granted=True).select_related("customer")
    count = 0
    for consent in granted:
        consent_withdraw(
            customer=consent.customer,
            channel=ConsentChannel(consent.channel),
            method=ConsentMethod.STAFF,
            acting_user=actor,
        )
        count += 1
    return count


def _anonymise_rows(ids: list[int], now: dt.datetime) -> dict[str, int]:
    counts: dict[str, int] = {}
    messages = OutboxMessage.objects.filter(customer_id__in=ids)
    counts["messages_cancelled"] = messages.filter(status=OutboxStatus.PENDING).update(
        status=OutboxStatus.SKIPPED, reason="個人データ削除のため送信を中止"
    )
    counts["messages"] = 0
    for message in messages.only("pk", "content"):
        OutboxMessage.objects.filter(pk=message.pk).update(
            content=redacted(message.content), address="", last_error=""
        )
        counts["messages"] += 1
    contacts = holding_rows(_holding("support.Contact"), ids)
    counts["contacts"] = contacts.update(summary=REDACTED, body="")
    behaviour = holding_rows(_holding("customers.BehaviourEvent"), ids)
    counts["behaviour_events"] = behaviour.update(url="", payload={})
    subscriptions = holding_rows(_holding("subscriptions.Subscription"), ids)
    counts["subscriptions"] = subscriptions.exclude(cancel_note="").update(cancel_note="")
    counts["order_reversals"] = (
        OrderReversal.objects.filter(order__customer_id__in=ids)
        .exclude(reason="")
        .update(reason="")
    )
    enrollments = holding_rows(_holding("automation.Enrollment"), ids)
    counts["scenario_enrollments"] = enrollments.filter(status=EnrollmentStatus.ACTIVE).update(
        status=EnrollmentStatus.EXITED, exited_at=now, exit_reason="erased"
    )
    merges = CustomerMerge.objects.filter(Q(survivor_id__in=ids) | Q(absorbed_id__in=ids))
    for merge in merges:
        merge.profile_filled = redacted(merge.profile_filled)
        merge.save(update_fields=["profile_filled", "updated_at"])
    counts["merges"] = len(merges)
    return counts


def _uses_personal_dates(node: Any) -> bool:
    if not isinstance(node, dict):
        return False
    if "rules" in node:
        return any(_uses_personal_dates(child) for child in node.get("rules") or ())
    return node.get("field") in PERSONAL_DATE_CONDITIONS


def personal_date_scenarios() -> list[int]:
    """The scenarios whose trigger dates come from a profile date (PERSONAL_DATE_TRIGGERS, or
    "segment entered" on a segment with a PERSONAL_DATE_CONDITIONS condition)."""
    found = list(
        Scenario.objects.filter(trigger_kind__in=PERSONAL_DATE_TRIGGERS).values_list(
            "pk", flat=True
        )
    )
    rules = dict(Segment.objects.values_list("key", "rules"))
    for pk, params in Scenario.objects.filter(trigger_kind=TriggerKind.SEGMENT_ENTERED).values_list(
        "pk", "trigger_params"
    ):
        if _uses_personal_dates(rules.get(str((params or {}).get("segment")))):
            found.append(pk)
    return found


def _detach_personal_dates(ids: list[int], now: dt.datetime) -> int:
    """Enrollments in scenarios triggered by a profile date (a birthday), with their steps and
    messages, stop telling that date.

    The rows stay (enrollment counts, the holdout and lift need them), but every moment that
    was the birthday or follows from it — enrolled, anchored, exited, due, decided, queued,
    sent, counted against the cap — becomes the erasure's moment (the person's stays in such
    a segment, too: entered and left then, as their birthday is gone), and the occurrence key
    ("birthday:2026") becomes ERASED_OCCURRENCE + the enrollment's id in the enrollment and
    in its messages' dedupe keys. The person's enrollments keep their order, a second apart
    just before `now`, so lift still takes the first as the person's unit. Called after
    active enrollments were exited, so exited_at is set on all of them.
    """
    scenarios = personal_date_scenarios()
    SegmentMember.objects.filter(customer_id__in=ids, scenario_id__in=scenarios).update(
        entered_at=now, left_at=now
    )
    enrollments = list(
        Enrollment.objects.filter(customer_id__in=ids, scenario_id__in=scenarios).order_by(
            "anchor_at", "pk"
        )
    )
    for index, enrollment in enumerate(enrollments):
        moment = now - dt.timedelta(seconds=len(enrollments) - index)
        occurrence = f"{ERASED_OCCURRENCE}{enrollment.pk}"
        Enrollment.objects.filter(pk=enrollment.pk).update(
            occurrence=occurrence,
            enrolled_at=moment,
            anchor_at=moment,
            anchor_date=jst_date(moment),
            delivery_date=None,
            exited_at=moment,
        )
        StepDispatch.objects.filter(enrollment_id=enrollment.pk).update(
            due_at=moment, decided_at=moment
        )
        old_key = f":{enrollment.customer_id}:{enrollment.occurrence}"
        new_key = f":{enrollment.customer_id}:{occurrence}"
        messages = OutboxMessage.objects.filter(enrollment_id=enrollment.pk)
        for message in messages.only("pk", "dedupe_key", "sent_at", "cap_counted_at"):
            key = message.dedupe_key.replace(old_key, new_key, 1)
            if key == message.dedupe_key:
                key = f"{ERASED_OCCURRENCE}{message.pk}"
            OutboxMessage.objects.filter(pk=message.pk).update(
                dedupe_key=key,
                send_after=moment,
                next_attempt_at=moment,
                created_at=moment,
                sent_at=moment if message.sent_at else None,
                cap_counted_at=moment if message.cap_counted_at else None,
                lease_until=None,
            )
    return len(enrollments)


def _open_candidates(ids: list[int]) -> models.QuerySet[DuplicateCandidate]:
    return DuplicateCandidate.objects.filter(
        Q(customer_a_id__in=ids) | Q(customer_b_id__in=ids), status=DuplicateStatus.OPEN
    ).order_by("pk")


def _close_candidates(ids: list[int], actor: Actor, now: dt.datetime) -> int:
    """Close the person's open duplicate candidates as 「削除(匿名化)により対象外」, decided by
    the erasure (ERASURE_DECIDER), not 「別人」 by a reviewer: an anonymous record must never be
    merged, and nobody looked at the pair. Audited on both records (`duplicate.close_erased`);
    called after the audit redaction, so these rows keep their values (status codes only)."""
    candidates = list(_open_candidates(ids).select_for_update())
    for candidate in candidates:
        candidate.status = DuplicateStatus.ERASED
        candidate.decided_by = ERASURE_DECIDER
        candidate.decided_at = now
        candidate.save()
        for customer_id in (candidate.customer_a_id, candidate.customer_b_id):
            audit_record(
                actor=actor,
                action=CLOSE_CANDIDATE_ACTION,
                instance=candidate,
                customer_id=customer_id,
                changes={
                    "status": [DuplicateStatus.OPEN.value, DuplicateStatus.ERASED.value],
                    "decided_by": ["", ERASURE_DECIDER],
                },
            )
    return len(candidates)


def _scrub_merge_texts(ids: list[int]) -> dict[str, int]:
    """What merges with records outside the person wrote about them on those other records.

    A merge names each record on the other's timeline (「顧客を統合: #5020 渡辺早紀」, 「顧客 #2
    渡辺早紀 に統合」, and the same on undo), and the survivor's `customer.merge` /
    `customer.merge_undo` audit rows hold the profile values it filled in from the absorbed
    record. While the merge stands both records are the person and are erased together; once
    undone, the other record is someone else's and keeps these texts: the name is replaced by
    REDACTED in the titles, and the filled values in the audit rows (audit_redact).
    """
    label = CustomerMerge._meta.label
    merges = CustomerMerge.objects.filter(Q(survivor_id__in=ids) | Q(absorbed_id__in=ids)).exclude(
        survivor_id__in=ids, absorbed_id__in=ids
    )
    titles = audit_rows = 0
    for merge in merges.order_by("pk"):
        if merge.absorbed_id in ids:
            erased_id, other_id = merge.absorbed_id, merge.survivor_id
        else:
            erased_id, other_id = merge.survivor_id, merge.absorbed_id
        events = TimelineEvent.objects.filter(
            customer_id=other_id, ref_entity=label, ref_id=merge.pk
        )
        for event in events:
            title = title_without_name(event.title, erased_id)
            if title != event.title:
                event.title = title
                event.save(update_fields=["title"])
                titles += 1
        if erased_id != merge.absorbed_id:
            continue  # the absorbed record's rows hold no value of the survivor's profile
        rows = AuditLog.objects.filter(customer_id=other_id, entity=label, entity_id=str(merge.pk))
        for row in rows.order_by("pk"):
            filled = frozenset(
                value
                for name in merge.profile_filled
                for value in row.changes.get(name) or ()
                if isinstance(value, str) and value
            )
            if filled:
                audit_rows += audit_redact([row], only=filled)
    return {"merge_timeline_titles": titles, "merge_audit_rows": audit_rows}


def _holding(label: str) -> Holding:
    return next(h for h in HOLDINGS if h.label == label)


@transaction.atomic
def customer_erase(*, customer: Customer, acting_user: Any, reason: str) -> ErasureReport:
    """Anonymise the person in place (APPI 35条), irreversibly, in one transaction.

    Removed: the profile's personal fields, identities, tags, timeline, analytics scores, free
    text in contacts and behaviour events, message bodies and addresses, and every value the
    audit log recorded about them. Kept: the records themselves (orders and amounts, points,
    consent evidence, messages sent), under a record named 「削除済み(匿名化)」 that identifies
    no one. The e-mail, phone and LINE addresses stay on the suppression list as hashes, so an
    import or API call bringing the address back cannot make Kizuna market to it again.
    """
    actor = Actor.of(acting_user)
    customer = Customer.objects.select_for_update().get(pk=customer.pk)
    ids = person_ids(customer)
    _check(customer, reason, ids)
    now = timezone.now()
    identities = frozenset(
        value
        for pair in Identity.objects.filter(customer_id__in=ids).values_list(
            "value", "display_value"
        )
        for value in pair
        if value
    )
    counts: dict[str, int] = {}
    # The idempotency replies are matched on names too: read them before the profile goes.
    counts["api_replies"] = _redact_idempotent_replies(ids, identities)
    counts["consents_withdrawn"] = _withdraw_consents(ids, actor)
    suppressed = 0
    for kind, values in _addresses(ids).items():
        for value in sorted(values):
            suppression_add_erased(
                kind=kind, address=value, customer_id=customer.pk, acting_user=actor
            )
            suppressed += 1
    counts["addresses_suppressed"] = suppressed
    counts.update(_anonymise_rows(ids, now))
    counts["personal_date_enrollments"] = _detach_personal_dates(ids, now)
    counts.update(_scrub_merge_texts(ids))
    for holding in HOLDINGS:
        if holding.erasure == Erasure.DELETE:
            deleted, _ = holding_rows(holding, ids).delete()
            counts[holding.key] = deleted
    for record in Customer.objects.filter(pk__in=ids):
        record.tags.clear()
        for name, value in _BLANK_PROFILE.items():
            setattr(record, name, value)
        record.save()
    # Last, so that the rows written above (consent withdrawal, suppressions) are redacted too.
    counts["audit_rows_redacted"] = _redact_audit(ids, identities)
    counts["duplicate_candidates"] = _close_candidates(ids, actor, now)
    summary = json.dumps(counts, sort_keys=True)
    for pk in ids:
        record = Customer(pk=pk)
        audit_record(
            actor=actor,
            action=ERASE_ACTION,
            instance=record,
            customer_id=pk,
            changes={
                "reason": [None, reason.strip()],
                "person": [None, customer.pk],
                "result": [None, summary],
            },
        )
    timeline_add(
        customer=customer,
        kind=TimelineKind.PROFILE,
        title="個人データを削除(匿名化)しました",
        occurred_at=now,
        ref=customer,
    )
    return ErasureReport(customer_ids=ids, counts=counts)
