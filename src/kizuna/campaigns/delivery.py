"""The delivery worker: claim due outbox rows, decide, send, record (RELIABILITY S1–S4, S6–S9).

One pass (`DeliveryWorker.run_batch`):

1. **Claim** up to `batch_size` due rows in one short transaction: pending rows whose time has
   come, and claimed rows whose lease ran out (their worker died). PostgreSQL picks them with
   `SELECT … FOR UPDATE SKIP LOCKED`; SQLite, whose writers queue behind one lock, with a
   conditional `UPDATE … WHERE id IN (SELECT … LIMIT n) AND <still due>`. Each pass marks its
   rows with its own claim token and a lease.
2. **Decide**, from a few queries for the whole batch: the channel ("best" is resolved here),
   the address, consent and suppression (checked now, not when the message was queued), quiet
   hours, the customer's usual hour and the frequency cap. Skips and deferrals are written in
   one transaction; the cap check locks the batch's customers so two workers cannot both use a
   customer's last free slot.
3. **Send** one message at a time over one connection per channel. The moment the remote side
   accepts a message, the worker appends a line to its sent journal (kizuna.campaigns.journal,
   one write(2)); the marks are written to the outbox, with the customers' timeline rows, in
   one transaction per group (at most a second's worth, and at the end of the batch). Transient
   errors retry with exponential backoff; permanent ones fail the message; nothing stops the
   loop. Paper and call lists (no remote side) are recorded one by one, as before.

A worker killed at any point leaves claimed rows whose lease runs out, and a journal nobody
holds; before claiming, every worker replays such journals, so a message the remote side
accepted is marked sent and never goes out again, and the rest are claimed again. Only a crash
of the machine (not the process) can lose journal lines; e-mail carries a Message-ID fixed per
outbox row and LINE a retry key, so such a duplicate is recognisable (LINE drops it). Sending
stops between two messages when an admin pauses it, and the unsent rest of the batch goes back
to the queue.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Count, Q
from django.utils import timezone

from kizuna.campaigns import consent_checks, timing
from kizuna.campaigns.channels import Envelope, Receipt, Transport, TransportError, transport_for
from kizuna.campaigns.consent_checks import SUPPRESSION_KIND, Audience
from kizuna.campaigns.journal import Journal, SentMark, orphans
from kizuna.campaigns.models import (
    Channel,
    DeliveryList,
    DeliverySettings,
    OutboxMessage,
    OutboxStatus,
    Purpose,
    SuppressionReason,
)
from kizuna.campaigns.restore import restore_check
from kizuna.campaigns.sender import Sender, current_sender
from kizuna.campaigns.suppression import suppression_add
from kizuna.campaigns.unsubscribe import (
    UNSUBSCRIBABLE,
    fill_unsubscribe_url,
    make_token,
    unsubscribe_url,
)
from kizuna.core.audit import Actor
from kizuna.core.bulk import insert_rows
from kizuna.customers.models import Customer, TimelineEvent, TimelineKind
from kizuna.customers.timeline import timeline_add

logger = logging.getLogger(__name__)

WORKER_ACTOR = Actor.system("delivery-worker")
# Channels the frequency cap counts: the ones that reach out to the customer.
CAPPED_CHANNELS = frozenset(
    {Channel.EMAIL, Channel.LINE, Channel.SMS, Channel.POSTAL, Channel.CALL}
)
# Quiet hours and the usual hour matter where a phone buzzes; paper lists and on-site
# messages are read when the customer chooses.
TIMED_CHANNELS = frozenset({Channel.EMAIL, Channel.LINE, Channel.SMS})
LISTED_CHANNELS = frozenset({Channel.POSTAL, Channel.INSERT, Channel.CALL})
# What deciding, sending and recording read of a claimed row and its customer (the customer's
# fields are the ones consent_checks.Audience reads); loading the other columns, timestamps
# mostly, cost more than the decisions. A field missing here is still read, one query a row.
CLAIMED_FIELDS = (
    "channel",
    "purpose",
    "content",
    "send_after",
    "next_attempt_at",
    "prefer_customer_hour",
    "attempts",
    "scenario_id",
    "step_key",
    "customer__member_status",
    "customer__acquisition_channel",
    "customer__postal_code",
    "customer__prefecture",
    "customer__address1",
)
SENDER_HOLD = dt.timedelta(minutes=10)
PAUSE_CHECK_SECONDS = 1.0
# Sent marks are written to the outbox at least this often (and at the end of every batch).
FLUSH_SECONDS = 1.0
BACKOFF_BASE_SECONDS = 60
BACKOFF_MAX_SECONDS = 6 * 3600
SENDER_MISSING = "送信者情報(名称・住所・苦情窓口)が未設定のため保留中"
RETRIES_EXHAUSTED = "再試行の上限に達しました"


@contextlib.contextmanager
def _writing() -> Iterator[None]:
    """A write transaction; on SQLite taken in turn by the workers on this machine.

    SQLite lets one writer in at a time and makes the others poll with growing sleeps (1, 2,
    5, 10 ms…), which at one commit per message costs more than the commit. Workers queue on an
    advisory file lock instead, which hands over the moment it is released; other writers (the
    web server) still wait on SQLite's own lock as before.
    """
    if connection.vendor != "sqlite":
        with transaction.atomic():
            yield
        return
    with _sqlite_turn(), transaction.atomic():
        yield


@contextlib.contextmanager
def _sqlite_turn() -> Iterator[None]:
    path = f"{connection.settings_dict['NAME']}.outbox-lock"
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fast_commit() -> None:
    """On PostgreSQL, do not wait for the WAL flush of this transaction (see record_marks)."""
    if connection.vendor == "postgresql" and not settings.KIZUNA_OUTBOX_DURABLE_SENT:
        with connection.cursor() as cursor:
            cursor.execute("SET LOCAL synchronous_commit TO OFF")


def capped_reason(row: DeliverySettings) -> str:
    return f"送信上限({row.cap_days}日で{row.cap_messages}通)に達したため見送り"


def backoff(attempts: int) -> dt.timedelta:
    seconds = min(BACKOFF_BASE_SECONDS * 2 ** max(attempts - 1, 0), BACKOFF_MAX_SECONDS)
    return dt.timedelta(seconds=seconds)


@dataclass
class Plan:
    """What to do with one claimed message."""

    message: OutboxMessage
    channel: str = ""
    address: str = ""
    content: dict[str, str] | None = None
    skip: str = ""
    defer_to: dt.datetime | None = None
    defer_note: str = ""

    @property
    def marketing(self) -> bool:
        return self.message.purpose == Purpose.MARKETING


@dataclass
class BatchResult:
    claimed: int = 0
    sent: int = 0
    skipped: int = 0
    deferred: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0


class DeliveryWorker:
    def __init__(
        self,
        *,
        worker_id: str | None = None,
        batch_size: int | None = None,
        lease_seconds: int | None = None,
        clock: Callable[[], dt.datetime] = timezone.now,
        transports: Callable[[str], Transport] = transport_for,
    ) -> None:
        self.worker_id = (worker_id or uuid.uuid4().hex[:12])[:40]
        self.batch_size = batch_size or settings.KIZUNA_OUTBOX_BATCH
        self.lease = dt.timedelta(seconds=lease_seconds or settings.KIZUNA_OUTBOX_LEASE_SECONDS)
        self.max_attempts = settings.KIZUNA_OUTBOX_MAX_ATTEMPTS
        self.clock = clock
        self.make_transport = transports
        self.stop_requested = False
        self._pass = 0
        self._transports: dict[str, Transport] = {}
        self.journal = Journal(self.worker_id)
        self._unflushed: list[tuple[SentMark, Plan]] = []

    # -- claiming -------------------------------------------------------------------------

    def _due(self, now: dt.datetime) -> Q:
        return Q(status=OutboxStatus.PENDING, next_attempt_at__lte=now) | Q(
            status=OutboxStatus.CLAIMED, lease_until__lt=now
        )

    def claim(self) -> tuple[str, list[OutboxMessage]]:
        """Take up to batch_size due rows for this pass; (claim token, rows)."""
        replay_orphan_journals()
        self._pass += 1
        token = f"{self.worker_id}:{self._pass}"
        now = self.clock()
        claim = {
            "status": OutboxStatus.CLAIMED,
            "claimed_by": token,
            "lease_until": now + self.lease,
        }
        due = OutboxMessage.objects.filter(self._due(now)).order_by("next_attempt_at", "id")
        with _writing():
            if connection.features.has_select_for_update_skip_locked:
                ids = list(
                    due.select_for_update(skip_locked=True).values_list("pk", flat=True)[
                        : self.batch_size
                    ]
                )
                if ids:
                    OutboxMessage.objects.filter(pk__in=ids).update(**claim)
            else:
                subquery = due.values("pk")[: self.batch_size]
                OutboxMessage.objects.filter(self._due(now), pk__in=subquery).update(**claim)
        rows = list(
            OutboxMessage.objects.filter(claimed_by=token, status=OutboxStatus.CLAIMED)
            .select_related("customer")
            .only(*CLAIMED_FIELDS)
            .order_by("id")
        )
        return token, rows

    # -- deciding -------------------------------------------------------------------------

    def _plan(
        self,
        rows: list[OutboxMessage],
        config: DeliverySettings,
        sender: Sender,
        now: dt.datetime,
    ) -> list[Plan]:
        insert_customers = [
            m.customer_id
            for m in rows
            if m.channel == Channel.INSERT and not m.content.get("order_number")
        ]
        audience = Audience.load([m.customer_id for m in rows], with_orders=insert_customers)
        hours = timing.usual_hours(
            {
                m.customer_id
                for m in rows
                if m.prefer_customer_hour and m.purpose == Purpose.MARKETING
            }
        )
        plans = []
        for message in rows:
            plan = Plan(message=message)
            plans.append(plan)
            self._route(plan, audience)
            if plan.skip:
                continue
            if plan.marketing and plan.channel in TIMED_CHANNELS:
                if not sender.complete:
                    plan.defer_to, plan.defer_note = now + SENDER_HOLD, SENDER_MISSING
                    continue
                self._time(plan, config, hours, now)
        return plans

    def _route(self, plan: Plan, audience: Audience) -> None:
        message, customer = plan.message, plan.message.customer
        content = {key: str(value) for key, value in message.content.items()}
        if message.channel == Channel.BEST:
            found = audience.best_channel(customer, content)
            if found is None:
                plan.skip = consent_checks.NO_BEST
                return
            plan.channel, plan.address = found
            plan.content = consent_checks.content_for(plan.channel, content)
            return
        plan.channel = message.channel
        plan.content = content
        plan.address = audience.address(customer, plan.channel, content)
        problem = audience.problem(
            customer, plan.channel, marketing=plan.marketing, address=plan.address
        )
        if problem:
            plan.skip = problem

    def _time(
        self, plan: Plan, config: DeliverySettings, hours: dict[int, int], now: dt.datetime
    ) -> None:
        message = plan.message
        target = message.next_attempt_at
        if message.prefer_customer_hour and message.customer_id in hours:
            # From send_after, not next_attempt_at: the same answer however often it is asked.
            target = max(
                target, timing.at_usual_hour(message.send_after, hours[message.customer_id])
            )
        # From now when the time has passed: a message due yesterday at 10:00 that a worker
        # picks up at 01:00 (it was stopped, delivery was paused, or a retry) is inside quiet
        # hours now, whatever its own time was.
        target = timing.after_quiet_hours(
            max(target, now), start=config.quiet_start, end=config.quiet_end
        )
        if target > now:
            plan.defer_to = target
            plan.defer_note = "送信時刻の調整(夜間・顧客ごとの時刻)"

    def _apply_decisions(
        self, token: str, plans: list[Plan], config: DeliverySettings, now: dt.datetime
    ) -> list[Plan]:
        """Write skips, deferrals and cap reservations in one transaction; return the plans to
        send. Rows are updated in groups (one UPDATE per reason or time), not one by one."""
        to_send = [p for p in plans if not p.skip and p.defer_to is None]
        with _writing():
            capped = [p for p in to_send if p.marketing and p.channel in CAPPED_CHANNELS]
            if capped:
                for plan in self._over_cap(capped, config, now):
                    plan.skip = capped_reason(config)
            skips: dict[tuple[str, str], list[int]] = defaultdict(list)
            defers: dict[tuple[dt.datetime, str], list[int]] = defaultdict(list)
            counted: list[int] = []
            for plan in plans:
                if plan.skip:
                    skips[(plan.skip[:200], plan.channel)].append(plan.message.pk)
                elif plan.defer_to is not None:
                    defers[(plan.defer_to, plan.defer_note)].append(plan.message.pk)
                elif plan.marketing and plan.channel in CAPPED_CHANNELS:
                    counted.append(plan.message.pk)
            held = OutboxMessage.objects.filter(claimed_by=token, status=OutboxStatus.CLAIMED)
            for (reason, channel), ids in skips.items():
                held.filter(pk__in=ids).update(
                    status=OutboxStatus.SKIPPED,
                    reason=reason,
                    sent_channel=channel,
                    lease_until=None,
                    cap_counted_at=None,
                )
            for (when, note), ids in defers.items():
                held.filter(pk__in=ids).update(
                    status=OutboxStatus.PENDING,
                    next_attempt_at=when,
                    reason=note,
                    claimed_by="",
                    lease_until=None,
                )
            if counted:
                held.filter(pk__in=counted).update(cap_counted_at=now)
        return [p for p in to_send if not p.skip]

    def _over_cap(
        self, plans: list[Plan], config: DeliverySettings, now: dt.datetime
    ) -> list[Plan]:
        customer_ids = sorted({p.message.customer_id for p in plans})
        # Lock the customers (in id order, so two workers never deadlock) while counting and
        # reserving; SQLite's single writer lock does the same for free (no query needed).
        if connection.features.has_select_for_update:
            list(
                Customer.objects.select_for_update()
                .filter(pk__in=customer_ids)
                .order_by("pk")
                .values_list("pk", flat=True)
            )
        window_start = now - dt.timedelta(days=config.cap_days)
        batch_ids = [p.message.pk for p in plans]
        used = dict(
            OutboxMessage.objects.filter(
                customer_id__in=customer_ids,
                cap_counted_at__gte=window_start,
                status__in=[OutboxStatus.SENT, OutboxStatus.CLAIMED],
            )
            .exclude(pk__in=batch_ids)
            .values("customer_id")
            .annotate(n=Count("id"))
            .values_list("customer_id", "n")
        )
        over = []
        for plan in sorted(plans, key=lambda p: (p.message.next_attempt_at, p.message.pk)):
            customer_id = plan.message.customer_id
            if used.get(customer_id, 0) >= config.cap_messages:
                over.append(plan)
            else:
                used[customer_id] = used.get(customer_id, 0) + 1
        return over

    # -- sending --------------------------------------------------------------------------

    def _transport(self, channel: str) -> Transport:
        if channel not in self._transports:
            transport = self.make_transport(channel)
            transport.open()
            self._transports[channel] = transport
        return self._transports[channel]

    def close(self) -> None:
        try:
            # If the marks cannot be written now, the journal stays and is replayed later.
            self._flush()
            self.journal.close()
        finally:
            self.close_connections()

    def close_connections(self) -> None:
        """Close the transports' connections (SMTP…); the next message opens them again.

        Done after a batch that found nothing to send: a mail server drops a connection left
        idle for a few minutes, and the first message of the next batch would fail on it
        (SMTPServerDisconnected) and use up one of its tries."""
        for transport in self._transports.values():
            try:
                transport.close()
            except Exception:  # a failing close must not hide the batch's outcome
                logger.exception("closing a transport failed")
        self._transports.clear()

    def _envelope(self, plan: Plan, sender: Sender) -> Envelope:
        message = plan.message
        marketing = plan.marketing
        token = ""
        if marketing and plan.channel in UNSUBSCRIBABLE:
            token = make_token(customer_id=message.customer_id, channel=plan.channel)
        # The same link as the List-Unsubscribe header and the sender block (S5, S8).
        link = unsubscribe_url(token) if token else ""
        return Envelope(
            message=message,
            customer=message.customer,
            channel=plan.channel,
            address=plan.address,
            content=fill_unsubscribe_url(plan.content or {}, link),
            marketing=marketing,
            unsubscribe_token=token,
            sender=sender if marketing else None,
        )

    def _record_listed(self, token: str, plan: Plan, receipt: Receipt) -> bool:
        """Record a message added to a print/call list, in the transaction that locks the
        channel's open list (nothing was sent anywhere, so there is nothing to journal)."""
        message = plan.message
        now = self.clock()
        with _writing():
            delivery_list = open_list(plan.channel, now)
            updated = OutboxMessage.objects.filter(
                pk=message.pk, claimed_by=token, status=OutboxStatus.CLAIMED
            ).update(
                status=OutboxStatus.SENT,
                sent_at=now,
                sent_channel=plan.channel,
                address=plan.address[:254],
                message_id=receipt.provider_id[:200],
                delivery_list=delivery_list,
                lease_until=None,
                reason="",
                last_error="",
                attempts=message.attempts + 1,
            )
            if updated:
                timeline_add(
                    customer=message.customer,
                    kind=TimelineKind.MESSAGE,
                    title=timeline_title(plan.channel, plan.content or {}),
                    occurred_at=now,
                    ref=message,
                    detail={
                        "outbox_id": message.pk,
                        "channel": plan.channel,
                        "purpose": message.purpose,
                        "scenario_id": message.scenario_id,
                        "step_key": message.step_key,
                        "message_id": receipt.provider_id,
                    },
                )
        if not updated:
            logger.warning("outbox %s was no longer held by %s when recorded", message.pk, token)
        return bool(updated)

    def _record_failure(self, token: str, plan: Plan, error: TransportError) -> str:
        message = plan.message
        attempts = message.attempts + 1
        now = self.clock()
        final = error.permanent or attempts >= self.max_attempts
        reason = str(error)[:200] if error.permanent else RETRIES_EXHAUSTED
        with _writing():
            held = OutboxMessage.objects.filter(
                pk=message.pk, claimed_by=token, status=OutboxStatus.CLAIMED
            )
            if final:
                held.update(
                    status=OutboxStatus.FAILED,
                    attempts=attempts,
                    reason=reason,
                    last_error=str(error)[:2000],
                    sent_channel=plan.channel,
                    address=plan.address[:254],
                    lease_until=None,
                    cap_counted_at=None,
                )
            else:
                held.update(
                    status=OutboxStatus.PENDING,
                    attempts=attempts,
                    next_attempt_at=now + backoff(attempts),
                    last_error=str(error)[:2000],
                    claimed_by="",
                    lease_until=None,
                    cap_counted_at=None,
                )
            kind = SUPPRESSION_KIND.get(plan.channel)
            if error.suppress and kind is not None and plan.address:
                suppression_add(
                    kind=kind,
                    address=plan.address,
                    reason=SuppressionReason.SMTP_REJECT,
                    detail=str(error),
                    acting_user=WORKER_ACTOR,
                )
        return "failed" if final else "retried"

    def _journal_sent(self, token: str, plan: Plan, receipt: Receipt) -> None:
        mark = SentMark(
            outbox_id=plan.message.pk,
            token=token,
            sent_at=self.clock().isoformat(),
            channel=plan.channel,
            address=plan.address[:254],
            message_id=receipt.provider_id[:200],
            attempts=plan.message.attempts + 1,
        )
        try:
            self.journal.append(mark)
        except OSError:
            # No journal (disk full, unwritable data dir): record this one mark at once.
            logger.exception(
                "cannot write the sent journal; recording outbox %s directly", mark.outbox_id
            )
            record_marks(
                [mark], titles={mark.outbox_id: timeline_title(plan.channel, plan.content or {})}
            )
            return
        self._unflushed.append((mark, plan))

    def _flush(self) -> None:
        """Write the journaled sent marks to the outbox; then the journal can forget them."""
        if not self._unflushed:
            return
        marks = [mark for mark, _ in self._unflushed]
        titles = {
            mark.outbox_id: timeline_title(plan.channel, plan.content or {})
            for mark, plan in self._unflushed
        }
        recorded = record_marks(marks, titles=titles)
        if recorded < len(marks):
            logger.warning(
                "%s of %s sent marks found their rows no longer held by this worker",
                len(marks) - recorded,
                len(marks),
            )
        self.journal.clear()
        self._unflushed.clear()

    def _release(self, token: str, plans: list[Plan]) -> int:
        """Give unsent rows back to the queue (pause, shutdown)."""
        if not plans:
            return 0
        return OutboxMessage.objects.filter(
            pk__in=[p.message.pk for p in plans], claimed_by=token, status=OutboxStatus.CLAIMED
        ).update(status=OutboxStatus.PENDING, claimed_by="", lease_until=None, cap_counted_at=None)

    def _renew(self, token: str) -> None:
        OutboxMessage.objects.filter(claimed_by=token, status=OutboxStatus.CLAIMED).update(
            lease_until=self.clock() + self.lease
        )

    def run_batch(self) -> BatchResult:
        """Claim and process one batch. Returns what happened; never raises for one message."""
        result = BatchResult()
        config = DeliverySettings.load()
        restore_check(config)  # a restored database starts paused (D8)
        if config.paused or self.stop_requested:
            return result
        token, rows = self.claim()
        result.claimed = len(rows)
        if not rows:
            self.close_connections()  # idle now: close before the server drops them
            return result
        claimed_at = time.monotonic()
        now = self.clock()
        sender = current_sender(config)
        plans = self._plan(rows, config, sender, now)
        to_send = self._apply_decisions(token, plans, config, now)
        result.skipped = sum(1 for p in plans if p.skip)
        result.deferred = sum(1 for p in plans if p.defer_to is not None and not p.skip)
        last_pause_check = last_flush = time.monotonic()
        renew_after = self.lease.total_seconds() / 2
        for index, plan in enumerate(to_send):
            if time.monotonic() - last_pause_check >= PAUSE_CHECK_SECONDS:
                last_pause_check = time.monotonic()
                if DeliverySettings.objects.filter(paused=True).exists():
                    self._flush()
                    result.released = self._release(token, to_send[index:])
                    break
            if self.stop_requested:
                self._flush()
                result.released = self._release(token, to_send[index:])
                break
            if time.monotonic() - claimed_at >= renew_after:
                self._renew(token)
                claimed_at = time.monotonic()
            outcome = self._send_one(token, plan, sender)
            setattr(result, outcome, getattr(result, outcome) + 1)
            if time.monotonic() - last_flush >= FLUSH_SECONDS:
                self._flush()
                last_flush = time.monotonic()
        self._flush()
        return result

    def _send_one(self, token: str, plan: Plan, sender: Sender) -> str:
        try:
            transport = self._transport(plan.channel)
            receipt = transport.send(self._envelope(plan, sender))
        except TransportError as error:
            logger.info(
                "outbox %s on %s: %s (permanent=%s)",
                plan.message.pk,
                plan.channel,
                type(error.__cause__).__name__ if error.__cause__ else "error",
                error.permanent,
            )
            return self._record_failure(token, plan, error)
        except Exception as error:
            # A bug in a transport or template must not stop the other messages.
            logger.exception("outbox %s: unexpected error while sending", plan.message.pk)
            return self._record_failure(
                token, plan, TransportError(f"{type(error).__name__}: {error}", permanent=False)
            )
        if receipt.to_list:
            return "sent" if self._record_listed(token, plan, receipt) else "released"
        self._journal_sent(token, plan, receipt)
        return "sent"

    def drain(self, *, should_stop: Callable[[], bool] = lambda: False) -> BatchResult:
        """Run batches until nothing is due (or stop is asked); the totals."""
        total = BatchResult()
        try:
            while not self.stop_requested and not should_stop():
                result = self.run_batch()
                for name in vars(total):
                    setattr(total, name, getattr(total, name) + getattr(result, name))
                if result.claimed == 0 or result.released:
                    break
        finally:
            self.close()
        return total


def record_marks(marks: list[SentMark], *, titles: dict[int, str] | None = None) -> int:
    """Mark the journaled messages sent, with their timeline rows, in one transaction; the
    number recorded. A mark applies only while its row is still claimed with the same token
    (one UPDATE statement, run over the marks with executemany).

    The messages have left; these rows only remember that. On PostgreSQL the commit does not
    wait for the WAL flush (a disk sync saved per group): a worker crash loses nothing, only a
    crash of the database server itself can forget the last fraction of a second of marks, and
    those messages are sent again with the same Message-ID — never lost. SQLite's
    synchronous=NORMAL is the same trade. KIZUNA_OUTBOX_DURABLE_SENT=1 waits for every flush.
    `titles` are the timeline titles of the rendered messages; replayed marks (whose worker
    died) take theirs from the stored content.
    """
    if not marks:
        return 0
    table = OutboxMessage._meta
    quote = connection.ops.quote_name
    # Each of these fields' column is its name.
    assignments = ", ".join(
        f"{quote(name)} = %s"
        for name in ("status", "sent_at", "sent_channel", "address", "message_id", "attempts")
    )
    sql = (
        f"UPDATE {quote(table.db_table)} SET {assignments}, lease_until = NULL, reason = '', "  # noqa: S608 - names from the model
        "last_error = '' WHERE id = %s AND claimed_by = %s AND status = %s"
    )
    with _writing():
        _fast_commit()
        held = {
            row["pk"]: row
            for row in OutboxMessage.objects.filter(
                pk__in=[m.outbox_id for m in marks], status=OutboxStatus.CLAIMED
            ).values("pk", "claimed_by", "customer_id", "purpose", "scenario_id", "step_key")
        }
        current = [
            m for m in marks if m.outbox_id in held and held[m.outbox_id]["claimed_by"] == m.token
        ]
        named = dict(titles or {})
        # Only replayed marks lack a title; decoding every row's content would cost more than
        # the UPDATE itself.
        untitled = [m for m in current if m.outbox_id not in named]
        if untitled:
            by_id = {m.outbox_id: m.channel for m in untitled}
            for pk, content in OutboxMessage.objects.filter(pk__in=list(by_id)).values_list(
                "pk", "content"
            ):
                named[pk] = timeline_title(by_id[pk], content)
        adapt = connection.ops.adapt_datetimefield_value
        with connection.cursor() as cursor:
            cursor.executemany(
                sql,
                [
                    (OutboxStatus.SENT, adapt(m.when), m.channel, m.address, m.message_id,
                     m.attempts, m.outbox_id, m.token, OutboxStatus.CLAIMED)
                    for m in current
                ],
            )  # fmt: skip
        insert_rows(
            TimelineEvent,
            ("customer_id", "kind", "title", "occurred_at", "ref_entity", "ref_id", "detail"),
            [
                (
                    held[m.outbox_id]["customer_id"],
                    TimelineKind.MESSAGE,
                    named[m.outbox_id][:200],
                    m.when,
                    table.label,
                    m.outbox_id,
                    {
                        "outbox_id": m.outbox_id,
                        "channel": m.channel,
                        "purpose": held[m.outbox_id]["purpose"],
                        "scenario_id": held[m.outbox_id]["scenario_id"],
                        "step_key": held[m.outbox_id]["step_key"],
                        "message_id": m.message_id,
                    },
                )
                for m in current
            ],
        )
    return len(current)


def replay_orphan_journals() -> int:
    """Record the sent marks of workers that died before writing them (see journal.py)."""
    recorded = 0
    with orphans() as found:
        for path, marks in found:
            recorded += record_marks(marks)
            logger.warning("replayed %s sent marks from %s", len(marks), path.name)
    return recorded


def open_list(channel: str, now: dt.datetime) -> DeliveryList:
    """The channel's open list, locked until the caller's transaction ends (see DeliveryList)."""
    found = DeliveryList.objects.select_for_update().filter(channel=channel, closed_at=None).first()
    if found is not None:
        return found
    with transaction.atomic():
        DeliveryList.objects.bulk_create(
            [DeliveryList(channel=channel, created_at=now)], ignore_conflicts=True
        )
    return DeliveryList.objects.select_for_update().get(channel=channel, closed_at=None)


def timeline_title(channel: str, content: dict[str, Any]) -> str:
    heading = content.get("subject") or content.get("title") or content.get("reason") or ""
    text = str(heading or content.get("text", ""))[:60]
    titles: dict[str, str] = {
        Channel.EMAIL: "メール送信",
        Channel.LINE: "LINE送信",
        Channel.SMS: "SMS送信",
        Channel.POSTAL: "郵送DMリストに追加",
        Channel.INSERT: "同梱物リストに追加",
        Channel.ONSITE: "サイト内メッセージを掲出",
        Channel.CALL: "架電リストに追加",
    }
    return f"{titles.get(channel, channel)}: {text}"
