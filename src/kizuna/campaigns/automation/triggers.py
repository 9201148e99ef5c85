"""Triggers: who enters a scenario, evaluated as one SQL query per trigger per tick.

Each trigger is a query over the table where its event lives (orders, shipments, behaviour
events, the points ledger, subscriptions…) that yields one row per (customer, occurrence):

    cid   the customer             occ  the occurrence key ("order:123", "birthday:2026")
    at    the trigger moment, or   day  the trigger's JST date (for date-only events)
    oid / sid / pid / ddate        the order, subscription, product, delivery date it concerns

The query already leaves out occurrences enrolled before (NOT EXISTS on the unique
(scenario, customer, occurrence) key), merged-away and withdrawn customers, and customers
outside the scenario's audience segment; `enroll` inserts its rows as enrollments with one
INSERT … SELECT, the anchor dates computed in SQL. Python only hashes the new enrollments'
customer ids for the holdout draw — there is no per-customer decision loop.

The window: events from `since` to `now`, where `since` is the later of the scenario's
activation and the last tick minus the lookback (KIZUNA_TRIGGER_LOOKBACK_DAYS, default 7). The
lookback catches events that reach Kizuna late (a CSV imported the next morning); the unique
key makes re-reading them harmless.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from django.db import models, transaction
from django.db.models import (
    BooleanField,
    Case,
    CharField,
    Count,
    DateField,
    DateTimeField,
    Exists,
    F,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Value,
    When,
)
from django.db.models.functions import Cast, Coalesce, Concat, Substr

from kizuna.campaigns.automation import segments
from kizuna.campaigns.automation.clock import jst_at, jst_date
from kizuna.campaigns.automation.models import (
    Enrollment,
    EnrollmentStatus,
    ExitRule,
    Scenario,
    Segment,
    SegmentMember,
    TriggerKind,
)
from kizuna.campaigns.automation.sqlfuncs import (
    DaysBefore,
    JstDate,
    JstMidnight,
    Later,
    MonthDay,
)
from kizuna.campaigns.models import Purpose
from kizuna.commerce.models import (
    Order,
    OrderLine,
    OrderReversal,
    OrderStatus,
    ProductKind,
    Shipment,
)
from kizuna.core.bulk import insert_select
from kizuna.customers.models import (
    BehaviourEvent,
    BehaviourKind,
    ConsentEvent,
    Customer,
    MemberStatus,
    TimelineEvent,
    TimelineKind,
)
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.loyalty.selectors import unspent_through
from kizuna.subscriptions.models import (
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)

VOID_ORDER = (OrderStatus.CANCELLED, OrderStatus.RETURNED)
CART_KINDS = (BehaviourKind.CART_ADD, BehaviourKind.CHECKOUT_START)
# The TimelineEvent kind an NPS answer will be recorded under (detail: {"score": 0–10}). The
# contact-center issue adds surveys; until TimelineKind has it, the trigger is not offered.
NPS_TIMELINE_KIND = "nps"
# Date triggers (birthdays, anniversaries) look at most this far back, even after a long stop.
MAX_WINDOW_DAYS = 400


@dataclass(frozen=True)
class Window:
    now: dt.datetime
    since: dt.datetime
    # Written as history (enrollment_query's at_trigger): a trigger that reads a state
    # (points still held) reads it as it was on the enrollment's day, not as it is now.
    history: bool = False

    @property
    def today(self) -> dt.date:
        return jst_date(self.now)

    @property
    def since_day(self) -> dt.date:
        return jst_date(self.since)

    def days(self) -> list[dt.date]:
        """Every JST date from since to today, both included (at most MAX_WINDOW_DAYS)."""
        span = min((self.today - self.since_day).days, MAX_WINDOW_DAYS)
        return [self.today - dt.timedelta(days=i) for i in range(span, -1, -1)]


@dataclass(frozen=True)
class Param:
    name: str
    label: str
    kind: str  # "int", "choice", "choices", "segment", "bool"
    default: Any = None
    required: bool = False
    low: int = 0
    high: int = 0
    choices: Callable[[], list[tuple[str, str]]] | None = None
    help: str = ""


Candidates = Callable[[Scenario, Window, Mapping[str, Any]], QuerySet[Any]]


@dataclass(frozen=True)
class Trigger:
    kind: TriggerKind
    candidates: Candidates
    params: tuple[Param, ...] = ()
    # Which step anchors make sense: an order (purchase/shipment/delivery/first use) or a
    # subscription delivery date.
    has_order: bool = False
    has_delivery_date: bool = False
    available: Callable[[], bool] = lambda: True
    help: str = ""
    unavailable_note: str = ""
    # Triggers that change with the date rather than with each event run hourly; 0 = every tick.
    every_minutes: int = 0
    # About the customer's own transaction or account (membership, an order, its shipment,
    # their subscription, points credited, their survey answer): a scenario may send on it
    # as 取引連絡. The others (a cart left, no purchase for a while, a birthday…) are reasons
    # to invite a purchase, and such a message is 広告・宣伝 under 特定電子メール法 whatever
    # the scenario's purpose says: it needs consent and the opt-out notice (S7, S8).
    transactional: bool = False

    @property
    def label(self) -> str:
        return str(self.kind.label)


# --- building blocks --------------------------------------------------------------------------


def _none(field: models.Field[Any, Any]) -> Cast:
    # A typed NULL: enroll inserts the query's rows as they are (INSERT … SELECT), and
    # PostgreSQL takes an untyped NULL in a subquery for text.
    return Cast(Value(None), field)


def _columns(
    qs: QuerySet[Any],
    *,
    cid: Any,
    occ: Any,
    at: Any = None,
    day: Any = None,
    oid: Any = None,
    sid: Any = None,
    pid: Any = None,
    ddate: Any = None,
) -> QuerySet[Any]:
    """Give every trigger's query the same columns, so `enroll` reads them all alike."""
    annotated: QuerySet[Any] = qs.annotate(
        cid=cid,
        occ=occ,
        at=at if at is not None else _none(DateTimeField()),
        day=day if day is not None else _none(DateField()),
        oid=oid if oid is not None else _none(IntegerField()),
        sid=sid if sid is not None else _none(IntegerField()),
        pid=pid if pid is not None else _none(IntegerField()),
        ddate=ddate if ddate is not None else _none(DateField()),
    )
    return annotated


def _key(prefix: str, *parts: Any) -> Concat:
    pieces: list[Any] = [Value(prefix)]
    for index, part in enumerate(parts):
        if index:
            pieces.append(Value(":"))
        pieces.append(Cast(part, CharField()))
    return Concat(*pieces, output_field=CharField())


def _valid_orders() -> QuerySet[Order]:
    return Order.objects.exclude(status__in=VOID_ORDER)


def _earlier_orders() -> QuerySet[Order]:
    """Valid orders of the same customer placed before the outer order."""
    return _valid_orders().filter(
        Q(ordered_at__lt=OuterRef("ordered_at"))
        | Q(ordered_at=OuterRef("ordered_at"), pk__lt=OuterRef("pk")),
        customer=OuterRef("customer_id"),
    )


def _with_products(orders: QuerySet[Order], params: Mapping[str, Any]) -> QuerySet[Order]:
    lines = OrderLine.objects.filter(order=OuterRef("pk"))
    if params.get("product_kind"):
        lines = lines.filter(product__kind=params["product_kind"])
    if params.get("products"):
        lines = lines.filter(product__code__in=params["products"])
    if params.get("product_kind") or params.get("products"):
        return orders.filter(Exists(lines))
    return orders


def _day_match(month_day: str, days: list[dt.date]) -> tuple[Q, Case, Case]:
    """(filter, occurrence year, matched date) for a "MM-DD" annotation over the window.

    29 February is celebrated on the 28th in common years, so nobody is skipped.
    """
    wanted: dict[str, dt.date] = {}
    for day in days:
        wanted[f"{day:%m-%d}"] = day
        if day.month == 2 and day.day == 28 and not _is_leap(day.year):
            wanted["02-29"] = day
    year_cases = [
        When(
            **{f"{month_day}__in": [md for md, d in wanted.items() if d.year == year]},
            then=Value(year),
        )
        for year in sorted({d.year for d in wanted.values()})
    ]
    day_cases = [When(**{month_day: md}, then=Value(day)) for md, day in wanted.items()]
    return (
        Q(**{f"{month_day}__in": list(wanted)}),
        Case(*year_cases, output_field=IntegerField()),
        Case(*day_cases, output_field=DateField()),
    )


def _is_leap(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


# --- the triggers -----------------------------------------------------------------------------


def _signup(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    customers = Customer.objects.filter(
        member_status=MemberStatus.MEMBER, registered_at__gte=w.since, registered_at__lte=w.now
    )
    return _columns(customers, cid=F("pk"), occ=Value("signup"), at=F("registered_at"))


def _first_purchase(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    orders = _valid_orders().filter(ordered_at__gte=w.since, ordered_at__lte=w.now)
    orders = _with_products(orders, p).filter(~Exists(_earlier_orders()))
    return _columns(
        orders, cid=F("customer_id"), occ=_key("order:", "pk"), at=F("ordered_at"), oid=F("pk")
    )


def _nth_purchase(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    earlier = _earlier_orders().order_by().values("customer").annotate(n=Count("pk")).values("n")
    orders = _valid_orders().filter(ordered_at__gte=w.since, ordered_at__lte=w.now)
    orders = _with_products(orders, p).annotate(before=Coalesce(Subquery(earlier), Value(0)))
    orders = orders.filter(before=int(p["n"]) - 1)
    return _columns(
        orders, cid=F("customer_id"), occ=_key("order:", "pk"), at=F("ordered_at"), oid=F("pk")
    )


def _shipments(field: str, prefix: str) -> Candidates:
    def candidates(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
        shipments = Shipment.objects.filter(
            **{f"{field}__gte": w.since_day, f"{field}__lte": w.today}
        ).exclude(order__status__in=VOID_ORDER)
        if p.get("product_kind"):
            lines = OrderLine.objects.filter(
                order=OuterRef("order_id"), product__kind=p["product_kind"]
            )
            shipments = shipments.filter(Exists(lines))
        return _columns(
            shipments,
            cid=F("order__customer_id"),
            occ=_key(prefix, "pk"),
            day=F(field),
            oid=F("order_id"),
        )

    return candidates


def _cart_abandonment(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    # Decided as of the moment the wait ends (event + N hours), so the answer is the same
    # whenever it is evaluated: no order and no further cart action within those N hours.
    hours = int(p["hours"])
    wait = dt.timedelta(hours=hours)
    later_cart = BehaviourEvent.objects.filter(
        customer=OuterRef("customer_id"),
        kind__in=CART_KINDS,
        occurred_at__gt=OuterRef("occurred_at"),
        occurred_at__lte=Later(OuterRef("occurred_at"), hours=hours),
    )
    ordered = _valid_orders().filter(
        customer=OuterRef("customer_id"),
        ordered_at__gte=OuterRef("occurred_at"),
        ordered_at__lte=Later(OuterRef("occurred_at"), hours=hours),
    )
    events = BehaviourEvent.objects.filter(
        kind__in=CART_KINDS, occurred_at__gte=w.since - wait, occurred_at__lte=w.now - wait
    ).filter(~Exists(later_cart), ~Exists(ordered))
    return _columns(
        events,
        cid=F("customer_id"),
        occ=_key("cart:", "pk"),
        at=F("occurred_at"),
        pid=F("product_id"),
    )


def _browse_abandonment(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    hours = int(p["hours"])
    wait = dt.timedelta(hours=hours)
    later = BehaviourEvent.objects.filter(
        customer=OuterRef("customer_id"),
        kind__in=(BehaviourKind.PRODUCT_VIEW, *CART_KINDS),
        occurred_at__gt=OuterRef("occurred_at"),
        occurred_at__lte=Later(OuterRef("occurred_at"), hours=hours),
    )
    ordered = _valid_orders().filter(
        customer=OuterRef("customer_id"),
        ordered_at__gte=OuterRef("occurred_at"),
        ordered_at__lte=Later(OuterRef("occurred_at"), hours=hours),
    )
    events = BehaviourEvent.objects.filter(
        kind=BehaviourKind.PRODUCT_VIEW,
        product__isnull=False,
        occurred_at__gte=w.since - wait,
        occurred_at__lte=w.now - wait,
    ).filter(~Exists(later), ~Exists(ordered))
    return _columns(
        events,
        cid=F("customer_id"),
        occ=_key("view:", "pk"),
        at=F("occurred_at"),
        pid=F("product_id"),
    )


def _no_purchase(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    # An order followed by N days without another: decided at order + N days, whatever
    # happens afterwards (a purchase after that is what the scenario hopes for, and an exit).
    days = int(p["days"])
    quiet = dt.timedelta(days=days)
    next_within = _valid_orders().filter(
        Q(ordered_at__gt=OuterRef("ordered_at"))
        | Q(ordered_at=OuterRef("ordered_at"), pk__gt=OuterRef("pk")),
        customer=OuterRef("customer_id"),
        ordered_at__lte=Later(OuterRef("ordered_at"), days=days),
    )
    last_orders = _valid_orders().filter(
        ordered_at__gte=w.since - quiet, ordered_at__lte=w.now - quiet
    )
    last_orders = last_orders.filter(~Exists(next_within))
    return _columns(
        last_orders,
        cid=F("customer_id"),
        occ=_key("dormant:", "pk"),
        at=F("ordered_at"),
        oid=F("pk"),
    )


def _birthday(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    condition, year, day = _day_match("md", w.days())
    customers = (
        Customer.objects.filter(birthday__isnull=False)
        .annotate(md=MonthDay("birthday"))
        .filter(condition)
    )
    return _columns(customers, cid=F("pk"), occ=_key("birthday:", year), day=day)


def _anniversary(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    days = w.days()
    condition, year, day = _day_match("md", days)
    firsts = (
        _valid_orders()
        .filter(ordered_at__lt=jst_at(days[0]))
        .annotate(md=MonthDay("ordered_at", moment=True))
        .filter(condition)
        .filter(~Exists(_earlier_orders()))
    )
    return _columns(
        firsts, cid=F("customer_id"), occ=_key("anniversary:", year), day=day, oid=F("pk")
    )


def _points_earned(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    entries = PointEntry.objects.filter(
        kind=PointKind.EARN,
        occurred_at__gte=w.since,
        occurred_at__lte=w.now,
        amount__gte=int(p.get("min_points") or 1),
    )
    return _columns(entries, cid=F("customer_id"), occ=_key("points:", "pk"), at=F("occurred_at"))


def _points_expiring(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    days = int(p["days"])
    ahead = dt.timedelta(days=days)
    # Only a date on which the customer still holds points (loyalty.selectors: spending takes
    # the soonest-expiring points first). Written as history (the demo), the ledger counts up
    # to the end of the day the notice was due: later spending does not reach back.
    held = unspent_through(
        OuterRef("customer_id"),
        OuterRef("expires_on"),
        before=(
            JstMidnight(DaysBefore(OuterRef("expires_on"), days=max(days - 1, 0)))
            if w.history
            else None
        ),
    )
    # One row per (customer, expiry date): DISTINCT over the output columns, which carry no
    # per-entry value.
    entries = (
        # Any lot with an expiry: earnings and points carried over by a merge.
        PointEntry.objects.filter(
            amount__gt=0,
            expires_on__gte=w.since_day + ahead,
            expires_on__lte=w.today + ahead,
        )
        .annotate(held=held)
        .filter(held__gt=0)
        .distinct()
    )
    return _columns(
        entries, cid=F("customer_id"), occ=_key(EXPIRY_PREFIX, "expires_on"), ddate=F("expires_on")
    )


EXPIRY_PREFIX = "expiry:"


def expiry_of_occurrence(occurrence: str) -> dt.date | None:
    """The expiry date a "points expiring" enrollment is for, from its occurrence key."""
    if not occurrence.startswith(EXPIRY_PREFIX):
        return None
    try:
        return dt.date.fromisoformat(occurrence[len(EXPIRY_PREFIX) :])
    except ValueError:
        return None


def _before_delivery(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    ahead = dt.timedelta(days=int(p["days"]))
    subs = Subscription.objects.filter(
        status=SubscriptionStatus.ACTIVE,
        next_delivery_on__gte=w.since_day + ahead,
        next_delivery_on__lte=w.today + ahead,
    )
    return _columns(
        subs,
        cid=F("customer_id"),
        occ=_key("delivery:", "pk", "next_delivery_on"),
        sid=F("pk"),
        pid=F("product_id"),
        ddate=F("next_delivery_on"),
    )


def _subscription_skip(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    # A skip carries no time of its own, only the delivery it skips: skips of deliveries
    # scheduled from the window's start on (up to 90 days ahead) count, each once.
    skipped = SubscriptionDelivery.objects.filter(
        status=DeliveryStatus.SKIPPED,
        scheduled_on__gte=w.since_day,
        scheduled_on__lte=w.today + dt.timedelta(days=90),
    )
    return _columns(
        skipped,
        cid=F("subscription__customer_id"),
        occ=_key("skip:", "pk"),
        day=Value(w.today),
        sid=F("subscription_id"),
        pid=F("subscription__product_id"),
        ddate=F("scheduled_on"),
    )


def _subscription_cancel(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    subs = Subscription.objects.filter(
        status=SubscriptionStatus.CANCELLED,
        cancelled_on__gte=w.since_day,
        cancelled_on__lte=w.today,
    )
    return _columns(
        subs,
        cid=F("customer_id"),
        occ=_key("cancel:", "pk"),
        day=F("cancelled_on"),
        sid=F("pk"),
        pid=F("product_id"),
    )


def _nps_available() -> bool:
    return NPS_TIMELINE_KIND in TimelineKind.values


def _nps_answer(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    answers = TimelineEvent.objects.filter(
        kind=NPS_TIMELINE_KIND,
        occurred_at__gte=w.since,
        occurred_at__lte=w.now,
        detail__score__gte=int(p.get("score_min", 0)),
        detail__score__lte=int(p.get("score_max", 10)),
    )
    return _columns(answers, cid=F("customer_id"), occ=_key("nps:", "pk"), at=F("occurred_at"))


def _cpm_available() -> bool:
    return segments.analytics_snapshot() is not None


def _cpm_change(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    """Customers whose CPM segment in the newest analytics run differs from the run before.

    The two run ids are read first (one small query): they are the same for every customer.
    """
    tables = segments.analytics_snapshot()
    if tables is None:
        return Customer.objects.none()
    runs = list(tables.latest_runs().values_list("pk", "as_of")[:2])
    if len(runs) < 2 or not w.since_day <= runs[0][1] <= w.today:
        return _columns(Customer.objects.none(), cid=F("pk"), occ=Value(""))
    (latest, as_of), (previous, _) = runs
    before = tables.score._default_manager.filter(
        run_id=previous, customer_id=OuterRef("customer_id")
    )
    rows = (
        tables.score._default_manager.filter(run_id=latest)
        .annotate(before=Subquery(before.values("cpm_segment")[:1]))
        .filter(before__isnull=False)
        .exclude(before=F("cpm_segment"))
    )
    if p.get("to"):
        rows = rows.filter(cpm_segment__in=p["to"])
    if p.get("from"):
        rows = rows.filter(before__in=p["from"])
    return _columns(rows, cid=F("customer_id"), occ=_key("cpm:", "run_id"), day=Value(as_of))


def _segment_entered(scenario: Scenario, w: Window, p: Mapping[str, Any]) -> QuerySet[Any]:
    entries = SegmentMember.objects.filter(
        scenario=scenario, baseline=False, left_at__isnull=True, entered_at__gte=w.since
    )
    return _columns(entries, cid=F("customer_id"), occ=_key("entered:", "pk"), at=F("entered_at"))


def segment_newcomers(scenario: Scenario, rules: Any, *, now: dt.datetime) -> QuerySet[Customer]:
    """The customers in the segment (`rules`) now with no open stay recorded for `scenario`:
    the ones `refresh_segment_members` adds (as entrants, or as a baseline)."""
    open_stays = SegmentMember.objects.filter(scenario=scenario, left_at__isnull=True)
    members = segments.members(rules, now=now)
    return members.filter(~Exists(open_stays.filter(customer_id=OuterRef("pk"))))


def refresh_segment_members(
    scenario: Scenario, *, now: dt.datetime, baseline: bool | None = None
) -> int:
    """Bring a "segment entered" scenario's membership up to date; returns the new entries.

    Two set-based statements: close the stays of customers who left, and add (INSERT …
    SELECT) the customers who are in now but were not — on the very first evaluation they are
    a baseline, not entries, unless the trigger says `include_existing`. The first evaluation
    is the first check of the trigger (`trigger_checked_at` unset: the scenario is new, or
    its trigger was changed), not "no stays recorded yet": a segment that starts empty would
    otherwise make its first real entrants a baseline, and they would never be enrolled.
    `baseline=True` records the newcomers as a baseline whatever the check: resuming a paused
    scenario without the customers who entered the segment while it was stopped.

    Each side is checked row by row (EXISTS on the other side's index), not as an IN list:
    SQLite would first build the whole list, the segment or every open stay. Newcomers are
    added in customer order, so their rows, and the enrollments and messages made from them,
    are written in the order of the customer indexes they go into.
    """
    segment = Segment.objects.get(key=scenario.trigger_params["segment"])
    members = segments.members(segment.rules, now=now)
    open_stays = SegmentMember.objects.filter(scenario=scenario, left_at__isnull=True)
    if baseline is None:
        first_time = scenario.trigger_checked_at is None
        baseline = first_time and not scenario.trigger_params.get("include_existing")
    with transaction.atomic():
        still_in = members.filter(pk=OuterRef("customer_id"))
        open_stays.filter(~Exists(still_in)).update(left_at=now)
        newcomers = (
            segment_newcomers(scenario, segment.rules, now=now)
            .order_by("pk")
            .annotate(
                m_scenario=Value(scenario.pk, output_field=IntegerField()),
                m_customer=F("pk"),
                m_entered_at=Value(now, output_field=DateTimeField()),
                m_baseline=Value(baseline, output_field=BooleanField()),
            )
            .values_list("m_scenario", "m_customer", "m_entered_at", "m_baseline")
        )
        entered = insert_select(
            SegmentMember,
            ("scenario_id", "customer_id", "entered_at", "baseline"),
            newcomers,
            ignore_conflicts=True,
        )
    return 0 if baseline else entered


# --- the registry -----------------------------------------------------------------------------


def _product_kinds() -> list[tuple[str, str]]:
    return [(str(v), str(label)) for v, label in ProductKind.choices]


def _segment_keys() -> list[tuple[str, str]]:
    return list(Segment.objects.values_list("key", "name"))


def _cpm_choices() -> list[tuple[str, str]]:
    tables = segments.analytics_snapshot()
    return list(tables.labels["cpm_segment"].items()) if tables else []


KIND = Param("product_kind", "商品区分で絞る", "choice", choices=_product_kinds)
PRODUCTS = Param(
    "products", "商品で絞る", "choices", choices=segments.product_choices, help="空なら全商品"
)

TRIGGERS: dict[str, Trigger] = {
    t.kind.value: t
    for t in (
        Trigger(TriggerKind.SIGNUP, _signup, help="会員登録した時", transactional=True),
        Trigger(
            TriggerKind.FIRST_PURCHASE,
            _first_purchase,
            (KIND, PRODUCTS),
            has_order=True,
            help="初めて注文した時(キャンセル・返品された注文は数えません)",
            transactional=True,
        ),
        Trigger(
            TriggerKind.NTH_PURCHASE,
            _nth_purchase,
            (Param("n", "何回目", "int", 2, True, 2, 50), KIND, PRODUCTS),
            has_order=True,
            help="n回目の注文をした時",
            transactional=True,
        ),
        Trigger(
            TriggerKind.SHIPMENT,
            _shipments("shipped_on", "shipment:"),
            (KIND,),
            has_order=True,
            help="注文が出荷された日",
            transactional=True,
        ),
        Trigger(
            TriggerKind.DELIVERY,
            _shipments("delivered_on", "delivery:"),
            (KIND,),
            has_order=True,
            help="注文がお届けされた日",
            transactional=True,
        ),
        Trigger(
            TriggerKind.CART_ABANDONMENT,
            _cart_abandonment,
            (Param("hours", "何時間後", "int", 3, True, 1, 168),),
            help="カート追加・購入手続き開始のあと、N時間以内に注文がない時"
            "(N時間以内に次のカート操作があれば、最後の操作から数えます)",
        ),
        Trigger(
            TriggerKind.BROWSE_ABANDONMENT,
            _browse_abandonment,
            (Param("hours", "何時間後", "int", 24, True, 1, 168),),
            help="商品を閲覧したあと、N時間以内にカート追加・注文・次の閲覧がない時",
        ),
        Trigger(
            TriggerKind.NO_PURCHASE,
            _no_purchase,
            (Param("days", "何日間", "int", 120, True, 7, 1095),),
            has_order=True,
            help="注文のあとN日間、次の注文がなかった時(N日目に始まります)",
            every_minutes=60,
        ),
        Trigger(
            TriggerKind.CPM_CHANGE,
            _cpm_change,
            (
                Param("from", "変化前", "choices", choices=_cpm_choices, help="空なら指定なし"),
                Param("to", "変化後", "choices", choices=_cpm_choices, help="空なら指定なし"),
            ),
            available=_cpm_available,
            help="最新の分析でCPMセグメントが前回の分析から変わった時",
            unavailable_note="分析アプリが導入されると使えます",
            every_minutes=60,
        ),
        Trigger(
            TriggerKind.BIRTHDAY, _birthday, help="誕生日(日本時間の0時から)", every_minutes=60
        ),
        Trigger(
            TriggerKind.FIRST_PURCHASE_ANNIVERSARY,
            _anniversary,
            has_order=True,
            help="初回購入から1年ごとの同じ日",
            every_minutes=60,
        ),
        Trigger(
            TriggerKind.POINTS_EARNED,
            _points_earned,
            (Param("min_points", "最低ポイント", "int", 1, False, 1, 100000),),
            help="ポイントが付与された時",
            transactional=True,
        ),
        Trigger(
            TriggerKind.POINTS_EXPIRING,
            _points_expiring,
            (Param("days", "失効の何日前", "int", 30, True, 1, 365),),
            has_delivery_date=False,
            help="ポイントの有効期限のN日前(残高がある人のみ)",
            every_minutes=60,
        ),
        Trigger(
            TriggerKind.SUBSCRIPTION_BEFORE_DELIVERY,
            _before_delivery,
            (Param("days", "お届けの何日前", "int", 3, True, 0, 60),),
            has_delivery_date=True,
            help="継続中の定期の次回お届け予定日のN日前",
            every_minutes=60,
            transactional=True,
        ),
        Trigger(
            TriggerKind.SUBSCRIPTION_SKIP,
            _subscription_skip,
            has_delivery_date=True,
            help="定期のお届けがスキップされた時",
            every_minutes=60,
            transactional=True,
        ),
        Trigger(
            TriggerKind.SUBSCRIPTION_CANCEL,
            _subscription_cancel,
            help="定期が解約された日(解約受付の記録から)",
            every_minutes=60,
            transactional=True,
        ),
        Trigger(
            TriggerKind.NPS_ANSWER,
            _nps_answer,
            (
                Param("score_min", "スコア(下限)", "int", 0, False, 0, 10),
                Param("score_max", "スコア(上限)", "int", 10, False, 0, 10),
            ),
            available=_nps_available,
            help="NPSアンケートに回答した時",
            unavailable_note="アンケート(NPS)の記録はコンタクトセンター機能で追加予定です",
            transactional=True,
        ),
        Trigger(
            TriggerKind.SEGMENT_ENTERED,
            _segment_entered,
            (
                Param("segment", "セグメント", "segment", required=True, choices=_segment_keys),
                Param("include_existing", "稼働開始時点の該当者も対象にする", "bool", False),
            ),
            help="指定したセグメントの条件に新しく当てはまった時",
            every_minutes=60,
        ),
    )
}


def validate_params(kind: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The trigger's parameters with defaults filled in, and what is wrong with them."""
    trigger = TRIGGERS.get(kind)
    if trigger is None:
        return {}, ["きっかけを選んでください"]
    if not trigger.available():
        return {}, [f"「{trigger.label}」は現在使えません: {trigger.unavailable_note}"]
    cleaned: dict[str, Any] = {}
    errors = [
        f"「{trigger.label}」には設定「{name}」はありません"
        for name in sorted(set(params) - {p.name for p in trigger.params})
    ]
    for param in trigger.params:
        value = params.get(param.name, param.default)
        if value in (None, "", []):
            if param.required:
                errors.append(f"{param.label}を入力してください")
            continue
        message = _param_error(param, value)
        if message:
            errors.append(message)
        else:
            cleaned[param.name] = bool(value) if param.kind == "bool" else value
    if cleaned.get("score_min", 0) > cleaned.get("score_max", 10):
        errors.append("スコアの下限が上限を超えています")
    return cleaned, errors


def _param_error(param: Param, value: Any) -> str:
    if param.kind == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            return f"{param.label}は整数で入力してください"
        if not param.low <= value <= param.high:
            return f"{param.label}は{param.low}〜{param.high}で入力してください"
        return ""
    allowed = {k for k, _ in param.choices()} if param.choices else set()
    if param.kind in ("choice", "segment") and str(value) not in allowed:
        return f"{param.label}: 選べない値です({value})"
    if param.kind == "choices" and (
        not isinstance(value, list) or any(str(v) not in allowed for v in value)
    ):
        return f"{param.label}: 選べない値が含まれています"
    return ""


# --- enrolling --------------------------------------------------------------------------------


def holdout_draw(scenario_key: str, customer_id: int, percent: int) -> bool:
    """Whether this customer is in this scenario's holdout group.

    A hash of (scenario key, customer id): the same customer stays in (or out of) the control
    group of a scenario on every occurrence, on every machine, and after an export/load into
    another database — and the draw is independent between scenarios.
    """
    if percent <= 0:
        return False
    digest = hashlib.blake2b(f"{scenario_key}:{customer_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 < percent * 100


def holdout_percent(scenario: Scenario) -> int:
    """The share of entrants `scenario` holds out: none when it says 取引連絡. Such a notice
    (発送のお知らせ…) is owed to every customer; validate_scenario refuses a holdout on it,
    and one stored before that rule is sent to everyone rather than withheld from some."""
    return 0 if scenario.purpose == Purpose.TRANSACTIONAL else scenario.holdout_percent


def can_enter(
    customers: QuerySet[Customer], scenario: Scenario, *, now: dt.datetime
) -> QuerySet[Customer]:
    """`customers` narrowed to those `scenario` may enroll: live records (not merged into
    another), not withdrawn (退会), and in the scenario's audience if it has one. The one rule
    for enrolling (candidate_query) and for counting who would enter before activating."""
    eligible = customers.filter(merged_into__isnull=True).exclude(
        member_status=MemberStatus.WITHDRAWN
    )
    if scenario.audience_id is not None and scenario.audience is not None:
        eligible = eligible.filter(segments.compile_validated(scenario.audience.rules, now=now))
    return eligible


def candidate_query(
    scenario: Scenario, window: Window, *, exclude_enrolled: bool = True
) -> QuerySet[Any]:
    """The one query that finds who enters `scenario` in `window` (not yet enrolled, unless
    `exclude_enrolled` is false: for an INSERT whose ON CONFLICT leaves them out)."""
    trigger = TRIGGERS[scenario.trigger_kind]
    rows = trigger.candidates(scenario, window, scenario.trigger_params)
    # Checked per candidate (EXISTS on the customer's row), not as `cid IN (eligible)`: SQLite
    # builds the whole IN list first — every live customer, on every trigger query of every
    # tick (0.05–0.1 s each at 100,000 customers, ten times that at 1M) — while a tick's
    # candidates are few.
    eligible = can_enter(Customer.objects.filter(pk=OuterRef("cid")), scenario, now=window.now)
    rows = rows.filter(Exists(eligible))
    if not exclude_enrolled:
        return rows
    enrolled = Enrollment.objects.filter(
        scenario=scenario, customer_id=OuterRef("cid"), occurrence=OuterRef("occ")
    )
    return rows.filter(~Exists(enrolled))


@dataclass(frozen=True)
class Enrolled:
    treated: int
    holdout: int


ENROLLMENT_COLUMNS = (
    "scenario_id", "customer_id", "occurrence", "holdout", "enrolled_at", "anchor_at",
    "anchor_date", "order_id", "subscription_id", "product_id", "delivery_date",
)  # fmt: skip
"""The columns of an enrollment row, in the order `enrollment_query` selects them."""


def enrollment_query(
    scenario: Scenario, window: Window, *, at_trigger: bool = False, exclude_enrolled: bool = True
) -> QuerySet[Any]:
    """The new enrollments the trigger finds in `window` as one SELECT of ENROLLMENT_COLUMNS
    (holdout still false: the draw is a hash computed in Python, see `holdout_draw`).

    The anchor is computed in the database: the trigger moment and its JST date; date-only
    events start at 0:00 JST; "N hours / days after" triggers start when the waiting is over;
    "N days before" triggers on that day. `at_trigger` dates each enrollment at its anchor
    rather than at `window.now`: for writing history (the demo), where the scheduler would
    have enrolled them back then. `exclude_enrolled` as for `candidate_query`.
    """
    params = scenario.trigger_params
    kind = scenario.trigger_kind
    at: Any = F("at")
    day: Any = F("day")
    if kind in (TriggerKind.CART_ABANDONMENT, TriggerKind.BROWSE_ABANDONMENT):
        at = Later(at, hours=int(params["hours"]))
    elif kind == TriggerKind.NO_PURCHASE:
        at = Later(at, days=int(params["days"]))
    elif kind in (TriggerKind.POINTS_EXPIRING, TriggerKind.SUBSCRIPTION_BEFORE_DELIVERY):
        day = Coalesce(DaysBefore(F("ddate"), days=int(params["days"])), day)
    if at_trigger:
        window = dataclasses.replace(window, history=True)
    rows = candidate_query(scenario, window, exclude_enrolled=exclude_enrolled).annotate(
        e_scenario=Value(scenario.pk, output_field=IntegerField()),
        e_occurrence=Substr("occ", 1, 64),
        e_holdout=Value(False, output_field=BooleanField()),
        e_anchor_at=Coalesce(at, JstMidnight(day), output_field=DateTimeField()),
        e_anchor_date=Coalesce(JstDate(at), day, output_field=DateField()),
    )
    enrolled_at: Any = (
        F("e_anchor_at") if at_trigger else Value(window.now, output_field=DateTimeField())
    )
    selected: QuerySet[Any] = rows.annotate(e_enrolled_at=enrolled_at).values_list(
        "e_scenario", "cid", "e_occurrence", "e_holdout", "e_enrolled_at", "e_anchor_at",
        "e_anchor_date", "oid", "sid", "pid", "ddate",
    )  # fmt: skip
    return selected


def enrollment_rows(
    scenario: Scenario, window: Window, *, at_trigger: bool = False
) -> list[tuple[Any, ...]]:
    """`enrollment_query`'s rows with the holdout drawn, for callers that insert them
    themselves (the demo writes history in a fixed order)."""
    key, percent = scenario.key, holdout_percent(scenario)
    return [
        (*row[:3], holdout_draw(key, row[1], percent), *row[4:])
        for row in enrollment_query(scenario, window, at_trigger=at_trigger)
    ]


def enroll(scenario: Scenario, window: Window) -> Enrolled:
    """Enroll everyone the trigger finds in `window`; safe to run again (and concurrently):
    the unique (scenario, customer, occurrence) key keeps each occurrence to one row.

    One INSERT … SELECT from the trigger's query, so no row passes through Python; then, when
    the scenario has a control group, one UPDATE marks the new enrollments the hash draws —
    in the same transaction, so no control-group customer is ever seen as treated.
    """
    with transaction.atomic():
        if scenario.trigger_kind == TriggerKind.SEGMENT_ENTERED:
            refresh_segment_members(scenario, now=window.now)
        # A segment's entrants were written just before, in this transaction, so PostgreSQL's
        # statistics do not know them: planned as one row, the anti-join against enrollments
        # became a probe, once per entrant, of the index range this very INSERT is filling
        # (93,000 entrants at a million customers: 283 s instead of about a second). For
        # them the unique key alone (ON CONFLICT DO NOTHING) leaves out who is enrolled. Other
        # triggers read analysed tables and keep the anti-join: it skips the week's already
        # enrolled candidates more cheaply than failed inserts would (cart abandonment at
        # 1M: 1.3 s against 1.6 s a tick).
        fresh_rows = scenario.trigger_kind == TriggerKind.SEGMENT_ENTERED
        query = enrollment_query(scenario, window, exclude_enrolled=not fresh_rows)
        inserted = insert_select(Enrollment, ENROLLMENT_COLUMNS, query, ignore_conflicts=True)
        held = 0
        key, percent = scenario.key, holdout_percent(scenario)
        if inserted and percent > 0:
            new = Enrollment.objects.filter(
                scenario=scenario, enrolled_at=window.now, holdout=False
            ).values_list("pk", "customer_id")
            drawn = [pk for pk, cid in new if holdout_draw(key, cid, percent)]
            for start in range(0, len(drawn), 5000):
                chunk = drawn[start : start + 5000]
                held += Enrollment.objects.filter(pk__in=chunk).update(holdout=True)
    return Enrolled(treated=inserted - held, holdout=held)


# --- purpose ----------------------------------------------------------------------------------


def sending_purpose(scenario: Scenario, *, offer: bool = False) -> Purpose:
    """What a scenario's message is sent as: 取引連絡 only when the scenario says so, its trigger
    is the customer's own transaction or account (Trigger.transactional) and the message
    carries no offer; 販促 otherwise.

    services.validate_scenario refuses anything else as 取引連絡, but a scenario stored before
    it did (or written to the table directly) still says so: its coupons and reminders go out
    as 販促 — consent, opt-out link and sender block, quiet hours and the frequency cap — not
    as what the row claims."""
    trigger = TRIGGERS.get(scenario.trigger_kind)
    if (
        scenario.purpose == Purpose.TRANSACTIONAL
        and trigger is not None
        and trigger.transactional
        and not offer
    ):
        return Purpose.TRANSACTIONAL
    return Purpose.MARKETING


# --- exits ------------------------------------------------------------------------------------


def apply_exits(scenario: Scenario, *, now: dt.datetime) -> dict[str, int]:
    """End active enrollments whose customer bought, cancelled or opted out since entering
    (as the scenario's exit rules say), and those opted out or withdrawn for any marketing
    scenario (one whose trigger makes it marketing counts, whatever it says: sending_purpose).
    One UPDATE per rule."""
    active = Enrollment.objects.filter(scenario=scenario, status=EnrollmentStatus.ACTIVE)
    rules = set(scenario.exit_on)
    if sending_purpose(scenario) == Purpose.MARKETING:
        rules.add(ExitRule.OPT_OUT)
    conditions: dict[str, Q] = {}
    if ExitRule.PURCHASE in rules:
        bought = _valid_orders().filter(
            customer=OuterRef("customer_id"), ordered_at__gt=OuterRef("anchor_at")
        )
        conditions[ExitRule.PURCHASE] = Q(Exists(bought))
    if ExitRule.CANCEL in rules:
        reversed_ = OrderReversal.objects.filter(order=OuterRef("order_id"))
        cancelled = Subscription.objects.filter(
            customer=OuterRef("customer_id"),
            status=SubscriptionStatus.CANCELLED,
            cancelled_on__gte=OuterRef("anchor_date"),
        )
        conditions[ExitRule.CANCEL] = Q(Exists(reversed_)) | Q(Exists(cancelled))
    if ExitRule.OPT_OUT in rules:
        withdrew = ConsentEvent.objects.filter(
            customer=OuterRef("customer_id"),
            action=ConsentEvent.Action.WITHDRAW,
            at__gte=OuterRef("enrolled_at"),
        )
        gone = Customer.objects.filter(pk=OuterRef("customer_id")).filter(
            Q(member_status=MemberStatus.WITHDRAWN) | Q(merged_into__isnull=False)
        )
        conditions[ExitRule.OPT_OUT] = Q(Exists(withdrew)) | Q(Exists(gone))
    counts: dict[str, int] = {}
    for reason, condition in conditions.items():
        counts[reason] = active.filter(condition).update(
            status=EnrollmentStatus.EXITED, exit_reason=reason, exited_at=now
        )
    return counts


__all__ = [
    "TRIGGERS",
    "Enrolled",
    "Trigger",
    "Window",
    "apply_exits",
    "candidate_query",
    "enroll",
    "enrollment_query",
    "enrollment_rows",
    "holdout_draw",
    "holdout_percent",
    "sending_purpose",
    "validate_params",
]
