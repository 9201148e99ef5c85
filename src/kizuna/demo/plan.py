"""The vocabulary of a simulated customer history: time, chance, and the planned rows.

A `Story` is one customer's history in plain Python objects (no database): kizuna.demo.people,
.purchases and .engagement fill it in, kizuna.demo.rows turns it into model instances.

Times are aware datetimes in JST. Nothing reads the clock: every date derives from the build's
`as_of`, and every event is strictly before `Calendar.cutoff` (the midnight after as_of), except
a subscription's next delivery and the end of a pause, which are in the future by nature.
"""

from __future__ import annotations

import bisect
import datetime as dt
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeVar
from zoneinfo import ZoneInfo

from kizuna.commerce.models import SalesChannel
from kizuna.customers.models import AcquisitionChannel as Ch
from kizuna.customers.models import (
    BehaviourKind,
    ConsentChannel,
    ConsentMethod,
    Gender,
    MemberStatus,
)
from kizuna.demo import names, story
from kizuna.demo.story import Line, ProductSpec
from kizuna.subscriptions.models import CancelReason, CycleKind, SubscriptionStatus

JST = ZoneInfo("Asia/Tokyo")
T = TypeVar("T")

# --- Chance ----------------------------------------------------------------------------------------


def cumulative(weights: Sequence[float]) -> tuple[float, ...]:
    return tuple(itertools.accumulate(weights))


def pick(rng: random.Random, items: Sequence[T], cum_weights: Sequence[float]) -> T:
    """One item, by cumulative weights (a bisect, so cheap even for long tables)."""
    return items[bisect.bisect(cum_weights, rng.random() * cum_weights[-1])]


def chance(rng: random.Random, p: float) -> bool:
    return rng.random() < p


def one_of(rng: random.Random, items: Sequence[T]) -> T:
    return items[rng.randrange(len(items))]


# --- Time ----------------------------------------------------------------------------------------

# Hour-of-day weights. Web orders peak in the evening; the call centre and the team that types
# in postcards work office hours; subscription orders are created by a night batch.
WEB_HOURS = cumulative(
    (3, 2, 1, 0.5, 0.3, 0.5, 1, 2, 3, 4, 4, 5, 6, 5, 4, 4, 4, 5, 6, 7, 9, 10, 8, 5)
)
CALL_HOURS = cumulative((0,) * 9 + (6, 10, 10, 6, 8, 9, 8, 7, 5, 4, 3, 2) + (0,) * 3)
OFFICE_HOURS = cumulative((0,) * 9 + (6, 10, 10, 4, 9, 10, 9, 7, 3) + (0,) * 6)
BATCH_HOURS = cumulative((0, 0, 1) + (0,) * 21)  # 02:00–02:59
_HOURS = tuple(range(24))


def moment(rng: random.Random, day: dt.date, hours: Sequence[float]) -> dt.datetime:
    """A random second of `day`, the hour drawn from cumulative hour weights."""
    hour = pick(rng, _HOURS, hours)
    return dt.datetime(
        day.year, day.month, day.day, hour, rng.randrange(60), rng.randrange(60), tzinfo=JST
    )


def at_time(day: dt.date, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(day.year, day.month, day.day, hour, minute, tzinfo=JST)


def days_after(at: dt.datetime | dt.date, days: int) -> dt.date:
    day = at.date() if isinstance(at, dt.datetime) else at
    return day + dt.timedelta(days=days)


def years_later(day: dt.date, years: int) -> dt.date:
    """The same calendar day `years` later (29 February becomes 28 February)."""
    try:
        return day.replace(year=day.year + years)
    except ValueError:
        return day.replace(year=day.year + years, day=28)


def wording_version(at: dt.datetime) -> str:
    """The consent wording in force: the shop revises it every April and October."""
    if at.month >= 10:
        return f"{at.year}-10"
    if at.month >= 4:
        return f"{at.year}-04"
    return f"{at.year - 1}-10"


class Calendar:
    """The build's time frame and the acquisition curve over it."""

    def __init__(self, as_of: dt.date) -> None:
        self.as_of = as_of
        self.first_day = years_later(as_of, -story.YEARS_OF_HISTORY) + dt.timedelta(days=1)
        self.cutoff = at_time(as_of + dt.timedelta(days=1), 0)  # exclusive
        self.behaviour_from = self.cutoff - dt.timedelta(days=story.BEHAVIOUR_WINDOW_DAYS)
        # When the demo's scenarios take over the step mails and points reminders.
        self.scenarios_from = at_time(as_of - dt.timedelta(days=story.SCENARIO_HISTORY_DAYS), 0)
        n_days = (as_of - self.first_day).days + 1
        self.days = tuple(self.first_day + dt.timedelta(days=i) for i in range(n_days))
        weights = [
            story.ACQUISITION_GROWTH ** (i / max(1, n_days - 1))
            * story.MONTH_SEASONALITY[day.month]
            * story.WEEKDAY_SEASONALITY[day.weekday()]
            for i, day in enumerate(self.days)
        ]
        self.acquisition_cum = cumulative(weights)

    def acquisition_day(self, rng: random.Random) -> tuple[dt.date, float]:
        """A day a customer arrived, and how far through the history it is (0–1)."""
        i = bisect.bisect(self.acquisition_cum, rng.random() * self.acquisition_cum[-1])
        return self.days[i], i / max(1, len(self.days) - 1)


# --- What a story is made of ---------------------------------------------------------------------


@dataclass(slots=True)
class Profile:
    index: int
    customer_id: int
    channel: Ch
    line: Line
    registered_at: dt.datetime
    gender: Gender
    birthday: dt.date | None
    family: names.Name
    given: names.Name
    company: str
    prefecture: int
    postal_code: str
    address1: str
    address2: str
    notes: str
    payment: str
    email_display: str  # as typed, "" when none
    phone_national: str  # "09012345678", "" when none
    phone_display: str  # as typed
    is_mobile: bool
    has_cart_member: bool
    has_pbx_caller: bool

    @property
    def digital(self) -> bool:
        return self.channel in story.DIGITAL_CHANNELS


@dataclass(slots=True)
class PlannedOrder:
    at: dt.datetime
    channel: SalesChannel
    lines: list[tuple[ProductSpec, int]]
    payment: str
    shipped_on: dt.date
    delivered_on: dt.date
    carrier: str
    discount: int = 0
    discount_reason: str = ""
    fate: str = "ok"  # "ok", "cancel" (before shipping) or "return" (after delivery)
    reversal_at: dt.datetime | None = None
    reversal_reason: str = ""
    subscription: PlannedSubscription | None = None
    sequence: int = 0  # n-th delivery of its subscription
    # Set when the rows are made (kizuna.demo.rows):
    id: int = 0
    number: str = ""
    total: int = 0

    @property
    def subtotal(self) -> int:
        return sum(product.price * quantity for product, quantity in self.lines)

    def reversed_by(self, cutoff: dt.datetime) -> bool:
        """Cancelled or returned before the end of the history."""
        return self.fate != "ok" and self.reversal_at is not None and self.reversal_at < cutoff


@dataclass(slots=True)
class PlannedDelivery:
    sequence: int
    scheduled_on: dt.date
    order: PlannedOrder | None
    skipped: bool = False


@dataclass(slots=True)
class PlannedSubscription:
    product: ProductSpec
    quantity: int
    cycle_kind: CycleKind
    cycle_days: int | None
    monthly_day: int | None
    started_at: dt.datetime
    commitment: int
    status: SubscriptionStatus = SubscriptionStatus.ACTIVE
    next_delivery_on: dt.date | None = None
    paused_until: dt.date | None = None
    cancelled_at: dt.datetime | None = None
    cancel_reason: CancelReason | None = None
    cancel_note: str = ""
    deliveries: list[PlannedDelivery] = field(default_factory=list)
    pauses: list[tuple[dt.datetime, dt.date]] = field(default_factory=list)  # (from, until)

    @property
    def cycle_label(self) -> str:
        if self.cycle_kind == CycleKind.DAYS:
            return f"{self.cycle_days}日ごと"
        return f"毎月{self.monthly_day}日"

    def active_at(self, at: dt.datetime) -> bool:
        return self.started_at <= at and (self.cancelled_at is None or at < self.cancelled_at)

    def next_slot(self, day: dt.date) -> dt.date:
        """The delivery date after `day`: one cycle later, or the monthly day at least 20 days
        on (so a box is never followed by another within three weeks)."""
        if self.cycle_days is not None:
            return day + dt.timedelta(days=self.cycle_days)
        monthly_day = self.monthly_day or 1
        year, month = day.year, day.month
        while (dt.date(year, month, monthly_day) - day).days < 20:
            year, month = (year + 1, 1) if month == 12 else (year, month + 1)
        return dt.date(year, month, monthly_day)


@dataclass(slots=True)
class PlannedConsent:
    channel: ConsentChannel
    granted_at: dt.datetime | None = None
    method: ConsentMethod | None = None
    source_form: str = ""
    opted_out_at: dt.datetime | None = None
    opt_out_method: ConsentMethod | None = None

    def active_at(self, at: dt.datetime) -> bool:
        return (
            self.granted_at is not None
            and self.granted_at <= at
            and (self.opted_out_at is None or at < self.opted_out_at)
        )


@dataclass(slots=True)
class PlannedContact:
    at: dt.datetime
    channel: str  # support.models.ContactChannel value
    direction: str  # support.models.Direction value
    reason: str
    summary: str
    order: PlannedOrder | None = None
    subscription: PlannedSubscription | None = None


@dataclass(slots=True)
class PlannedBehaviour:
    kind: BehaviourKind
    at: dt.datetime
    product: ProductSpec | None
    url: str
    session: str


@dataclass(slots=True)
class Story:
    profile: Profile
    trial_first: bool = False
    orders: list[PlannedOrder] = field(default_factory=list)
    subscriptions: list[PlannedSubscription] = field(default_factory=list)
    member_status: MemberStatus = MemberStatus.MEMBER
    withdrawn_at: dt.datetime | None = None
    consents: dict[ConsentChannel, PlannedConsent] = field(default_factory=dict)
    contacts: list[PlannedContact] = field(default_factory=list)
    messages: list[tuple[dt.datetime, str, str]] = field(default_factory=list)  # at, ch, title
    behaviour: list[PlannedBehaviour] = field(default_factory=list)

    def consent_active(self, channel: ConsentChannel, at: dt.datetime) -> bool:
        consent = self.consents.get(channel)
        return consent is not None and consent.active_at(at)

    def subscribed_at(self, at: dt.datetime) -> bool:
        return any(sub.active_at(at) for sub in self.subscriptions)

    @property
    def running_subscription(self) -> bool:
        return any(sub.status != SubscriptionStatus.CANCELLED for sub in self.subscriptions)
