"""What a demo customer buys: the first order, F2, repeat orders, 定期 and year-end sales.

The funnel, in the order it is simulated (parameters in kizuna.demo.story):

1. The first order, at registration: a trial or the main product of the customer's line.
2. F2: with a probability that depends on channel and first product, a second order one to
   three months later: the main product (after a trial: 引き上げ, often with a coupon), a
   subscription, or another line's product.
3. Repeat orders: each customer has their own loyalty (the chance of buying again after each
   order) and rhythm. Now and then a repeat buyer switches to a subscription.
4. A subscription delivers every cycle until it is cancelled: never within the commitment,
   very often right after it, then less and less often (each subscription has its own churn).
   Some cancelled subscribers come back to single orders later.
5. Each December, recent repeat customers may answer the 歳末感謝セール.
"""

from __future__ import annotations

import datetime as dt
import random

from kizuna.commerce.models import SalesChannel
from kizuna.customers.models import AcquisitionChannel as Ch
from kizuna.demo import story
from kizuna.demo.engagement import contact_channel
from kizuna.demo.people import payment_method
from kizuna.demo.plan import (
    BATCH_HOURS,
    CALL_HOURS,
    OFFICE_HOURS,
    WEB_HOURS,
    Calendar,
    PlannedContact,
    PlannedDelivery,
    PlannedOrder,
    PlannedSubscription,
    Profile,
    Story,
    at_time,
    chance,
    cumulative,
    days_after,
    moment,
    one_of,
    pick,
)
from kizuna.demo.story import Line, ProductSpec
from kizuna.subscriptions.models import CancelReason, CycleKind, SubscriptionStatus

Basket = list[tuple[ProductSpec, int]]

_LINES: tuple[Line, ...] = tuple(story.LINES.values())
_CARRIERS = tuple(name for name, _ in story.CARRIERS)
_CARRIER_CUM = cumulative([w for _, w in story.CARRIERS])
_QUANTITY_CUM = cumulative(story.QUANTITY_WEIGHTS)
_SECOND_CHOICES = ("main", "subscription", "cross")
_SECOND_CUM = {
    True: cumulative(story.SECOND_ORDER_AFTER_TRIAL),
    False: cumulative(story.SECOND_ORDER_AFTER_MAIN),
}
_CYCLE_CUM = cumulative([w for _, _, w in story.CYCLES])
_COMMITMENT_CUM = cumulative([w for _, w in story.COMMITMENTS])
_REASONS = tuple(story.CANCEL_REASON_WEIGHTS)
_REASON_CUM = {
    skincare: cumulative(
        [
            w * (story.SKIN_REASON_FACTOR_SKINCARE if skincare and r == CancelReason.SKIN else 1)
            for r, w in story.CANCEL_REASON_WEIGHTS.items()
        ]
    )
    for skincare in (True, False)
}
_FIRST_SALES_CHANNEL = {
    Ch.PHONE: SalesChannel.PHONE,
    Ch.PAPER: SalesChannel.PAPER,
    Ch.LINE: SalesChannel.LINE,
}
_SALES_HOURS = {
    SalesChannel.PHONE: CALL_HOURS,
    SalesChannel.PAPER: OFFICE_HOURS,
    SalesChannel.WEB: WEB_HOURS,
    SalesChannel.LINE: WEB_HOURS,
}


# --- Orders --------------------------------------------------------------------------------------


def _sales_channel(rng: random.Random, channel: Ch) -> SalesChannel:
    """Where a repeat order comes in: customers mostly keep to the channel they came by."""
    roll = rng.random()
    if channel == Ch.PHONE:
        return SalesChannel.PHONE if roll < 0.8 else SalesChannel.WEB
    if channel == Ch.PAPER:
        if roll < 0.65:
            return SalesChannel.PAPER
        return SalesChannel.PHONE if roll < 0.9 else SalesChannel.WEB
    if channel == Ch.LINE:
        return SalesChannel.LINE if roll < 0.6 else SalesChannel.WEB
    return SalesChannel.LINE if roll < 0.06 else SalesChannel.WEB


def _later(
    rng: random.Random, profile: Profile, base: dt.datetime, days: float
) -> tuple[dt.datetime, SalesChannel]:
    """When and through which channel the customer orders `days` after `base`."""
    channel = _sales_channel(rng, profile.channel)
    return moment(rng, days_after(base, max(1, round(days))), _SALES_HOURS[channel]), channel


def _payment(rng: random.Random, profile: Profile) -> str:
    if chance(rng, story.PAYMENT_METHOD_LOYALTY):
        return profile.payment
    return payment_method(rng, profile.digital)


def _ship_dates(rng: random.Random, at: dt.datetime, prefecture: int) -> tuple[dt.date, dt.date]:
    """Orders placed before 14:00 ship the next day, later ones the day after; delivery takes
    one or two days (one more to Hokkaido, Okinawa and the far south-west)."""
    shipped = days_after(at, 1 if at.hour < 14 else 2)
    transit = 1 + chance(rng, 0.35) + (prefecture in story.REMOTE_PREFECTURES)
    return shipped, days_after(shipped, min(transit, 3))


def _spot_order(
    rng: random.Random,
    cal: Calendar,
    st: Story,
    at: dt.datetime,
    lines: Basket,
    *,
    channel: SalesChannel,
    discount: int = 0,
    discount_reason: str = "",
) -> None:
    """A single (non-subscription) order, with its fate: most arrive, a few are cancelled
    before shipping or sent back within a week of delivery."""
    profile = st.profile
    shipped, delivered = _ship_dates(rng, at, profile.prefecture)
    order = PlannedOrder(
        at=at,
        channel=channel,
        lines=lines,
        payment=_payment(rng, profile),
        shipped_on=shipped,
        delivered_on=delivered,
        carrier=pick(rng, _CARRIERS, _CARRIER_CUM),
        discount=discount,
        discount_reason=discount_reason,
    )
    st.orders.append(order)
    roll = rng.random()
    if roll < story.ORDER_CANCEL_RATE:
        # Within half a day: always before the parcel leaves the warehouse.
        order.fate = "cancel"
        order.reversal_at = at + dt.timedelta(minutes=rng.randint(30, 12 * 60))
        order.reversal_reason = one_of(rng, story.ORDER_CANCEL_REASONS)
    elif roll < story.ORDER_CANCEL_RATE + story.ORDER_RETURN_RATE:
        order.fate = "return"
        order.reversal_at = moment(rng, days_after(delivered, rng.randint(2, 6)), OFFICE_HOURS)
        order.reversal_reason = one_of(rng, story.ORDER_RETURN_REASONS)
        if order.reversal_at < cal.cutoff and chance(rng, story.RETURN_CONTACT_SHARE):
            st.contacts.append(
                PlannedContact(
                    at=order.reversal_at - dt.timedelta(minutes=rng.randint(10, 180)),
                    channel=contact_channel(rng, st),
                    direction="inbound",
                    reason="返品・交換",
                    summary=f"返品希望({order.reversal_reason})。返送方法を案内。",
                    order=order,
                )
            )


def _basket(rng: random.Random, line: Line, choice: str) -> Basket:
    """A repeat order: the main product (sometimes two or three), or something from another
    line, plus the occasional cross-sell, pouch or free sample."""
    if choice == "cross":
        if line.key == "skincare" and chance(rng, 0.5):
            lines = [(story.CREAM, 1)]
        else:
            other = one_of(rng, [other for other in _LINES if other.key != line.key])
            lines = [(other.trial if chance(rng, 0.5) else other.main, 1)]
    else:
        lines = [(line.main, pick(rng, (1, 2, 3), _QUANTITY_CUM))]
        if line.key == "skincare" and chance(rng, story.CREAM_ADDON_SHARE):
            lines.append((story.CREAM, 1))
    if chance(rng, story.POUCH_ADDON_SHARE):
        lines.append((story.POUCH, 1))
    if line.key == "skincare" and chance(rng, story.SAMPLE_ADDON_SHARE):
        lines.append((story.SAMPLE, 1))
    return lines


def _first_order(rng: random.Random, cal: Calendar, st: Story) -> None:
    profile = st.profile
    line = profile.line
    st.trial_first = chance(rng, story.TRIAL_FIRST_SHARE[profile.channel])
    lines = [(line.trial if st.trial_first else line.main, 1)]
    if not st.trial_first and line.key == "skincare" and chance(rng, 0.3):
        lines.append((story.SAMPLE, 1))
    coupon = 0
    if not st.trial_first and profile.digital and chance(rng, story.FIRST_ORDER_COUPON_SHARE):
        coupon = story.FIRST_ORDER_COUPON_YEN
    _spot_order(
        rng,
        cal,
        st,
        profile.registered_at,
        lines,
        channel=_FIRST_SALES_CHANNEL.get(profile.channel, SalesChannel.WEB),
        discount=coupon,
        discount_reason="初回500円OFFクーポン" if coupon else "",
    )


def simulate_purchases(rng: random.Random, cal: Calendar, st: Story) -> None:
    _first_order(rng, cal, st)
    profile = st.profile
    line = profile.line
    if not chance(rng, story.F2_RATE[profile.channel][0 if st.trial_first else 1]):
        return  # most customers never come back
    lo, shape, scale = story.SECOND_GAP_TRIAL if st.trial_first else story.SECOND_GAP_MAIN
    at, channel = _later(rng, profile, profile.registered_at, lo + rng.gammavariate(shape, scale))
    choice = pick(rng, _SECOND_CHOICES, _SECOND_CUM[st.trial_first])
    loyalty = rng.betavariate(*story.REPEAT_LOYALTY_BETA)
    interval = rng.uniform(*story.REPEAT_INTERVAL_DAYS)
    upsell = st.trial_first  # the first main product after a trial may come with a coupon

    while at < cal.cutoff:
        if choice == "subscription":
            ended = _SubscriptionRun(rng, cal, st, at).run()
            if ended is None or not chance(rng, story.COMEBACK_AFTER_CANCEL):
                return
            at, channel = _later(rng, profile, ended, rng.randint(*story.COMEBACK_GAP_DAYS))
            loyalty *= 0.7
            choice = "main"
            continue
        discount, reason = 0, ""
        if upsell and choice == "main" and chance(rng, story.UPSELL_COUPON_SHARE):
            discount, reason = story.UPSELL_COUPON_YEN, "トライアル購入者限定1,000円OFF"
        upsell = False
        basket = _basket(rng, line, choice)
        _spot_order(
            rng, cal, st, at, basket, channel=channel, discount=discount, discount_reason=reason
        )
        if not chance(rng, loyalty):
            return  # lapsed
        shape = story.REPEAT_INTERVAL_SHAPE
        at, channel = _later(rng, profile, at, interval * rng.gammavariate(shape, 1 / shape))
        roll = rng.random()
        if roll < story.SWITCH_TO_SUBSCRIPTION:
            choice = "subscription"
        elif roll < story.SWITCH_TO_SUBSCRIPTION + story.CROSS_LINE_SHARE:
            choice = "cross"
        else:
            choice = "main"


# --- Subscriptions -------------------------------------------------------------------------------


class _SubscriptionRun:
    """One 定期 subscription, box by box, from its start to its cancellation or as_of."""

    def __init__(self, rng: random.Random, cal: Calendar, st: Story, at: dt.datetime) -> None:
        self.rng, self.cal, self.st = rng, cal, st
        kind, value, _ = pick(rng, story.CYCLES, _CYCLE_CUM)
        self.sub = PlannedSubscription(
            product=st.profile.line.subscription,
            quantity=2 if chance(rng, story.SUBSCRIPTION_QUANTITY_2_SHARE) else 1,
            cycle_kind=CycleKind.DAYS if kind == "days" else CycleKind.MONTHLY_DAY,
            cycle_days=value if kind == "days" else None,
            monthly_day=value if kind != "days" else None,
            started_at=at,
            commitment=pick(rng, story.COMMITMENTS, _COMMITMENT_CUM)[0],
        )
        st.subscriptions.append(self.sub)
        self.churn = rng.betavariate(*story.CHURN_BETA)
        self.delivered = 0  # boxes sent so far

    def run(self) -> dt.datetime | None:
        """Returns when the subscription was cancelled, or None when it is still running (or
        paused) at the end of the history."""
        rng, cal, sub = self.rng, self.cal, self.sub
        prefecture = self.st.profile.prefecture
        # The customer's own order starts the subscription and is its first box.
        shipped, arrives = _ship_dates(rng, sub.started_at, prefecture)
        scheduled = arrives
        self._box(1, sub.started_at, shipped, arrives, scheduled)
        sequence, boxed = 1, True
        while True:
            following = sub.next_slot(scheduled)
            if boxed and arrives <= cal.as_of and self.delivered >= sub.commitment:
                # After each box, once the 縛り is fulfilled: cancel, pause or carry on.
                cancelled = self._maybe_cancel(arrives, following)
                if cancelled is not None:
                    return cancelled
                following = self._maybe_pause(arrives, following)
                if sub.status == SubscriptionStatus.PAUSED:
                    return None
            scheduled, sequence = following, sequence + 1
            # The night batch creates each later order so that the box arrives on the day.
            transit = 1 + (prefecture in story.REMOTE_PREFECTURES)
            shipped = scheduled - dt.timedelta(days=transit)
            ordered_at = moment(rng, shipped - dt.timedelta(days=2), BATCH_HOURS)
            if ordered_at >= cal.cutoff:
                # The next box not yet ordered: its row is "scheduled" and has no order. (A box
                # ordered before as_of but not yet delivered has its order and its own row.)
                sub.deliveries.append(PlannedDelivery(sequence, scheduled, None))
                sub.next_delivery_on = scheduled
                return None
            boxed = not (scheduled <= cal.as_of and chance(rng, story.SKIP_RATE))
            if not boxed:
                self._skip(sequence, scheduled, shipped)
                continue
            arrives = scheduled + dt.timedelta(days=1 if chance(rng, 0.05) else 0)
            self._box(sequence, ordered_at, shipped, arrives, scheduled)

    def _box(
        self,
        sequence: int,
        ordered_at: dt.datetime,
        shipped: dt.date,
        arrives: dt.date,
        scheduled: dt.date,
    ) -> None:
        rng, st, sub = self.rng, self.st, self.sub
        order = PlannedOrder(
            at=ordered_at,
            channel=SalesChannel.SUBSCRIPTION,
            lines=[(sub.product, sub.quantity)],
            payment=_payment(rng, st.profile),
            shipped_on=shipped,
            delivered_on=arrives,
            carrier=pick(rng, _CARRIERS, _CARRIER_CUM),
            subscription=sub,
            sequence=sequence,
        )
        st.orders.append(order)
        sub.deliveries.append(PlannedDelivery(sequence, scheduled, order))
        self.delivered += 1
        if arrives <= self.cal.as_of and chance(rng, story.ADDON_ORDER_RATE):
            # A separate single order for something the subscription does not bring.
            at, channel = _later(rng, st.profile, at_time(arrives, 12), rng.randint(3, 20))
            if at < self.cal.cutoff:
                basket = _basket(rng, st.profile.line, "cross")
                _spot_order(rng, self.cal, st, at, basket, channel=channel)

    def _skip(self, sequence: int, scheduled: dt.date, shipped: dt.date) -> None:
        rng, st = self.rng, self.st
        self.sub.deliveries.append(PlannedDelivery(sequence, scheduled, None, skipped=True))
        if chance(rng, story.SKIP_CONTACT_SHARE):
            st.contacts.append(
                PlannedContact(
                    at=moment(rng, shipped - dt.timedelta(days=6), CALL_HOURS),
                    channel=contact_channel(rng, st),
                    direction="inbound",
                    reason="定期のスキップ希望",
                    summary=f"{sequence}回目のお届けをスキップ希望。対応済み。",
                    subscription=self.sub,
                )
            )

    def _maybe_cancel(self, arrived: dt.date, following: dt.date) -> dt.datetime | None:
        rng, sub = self.rng, self.sub
        hazard = self.churn
        if sub.commitment and self.delivered == sub.commitment:
            hazard += story.POST_COMMITMENT_SPIKE
        if not sub.commitment and self.delivered == 1:
            hazard += story.NO_COMMITMENT_FIRST_SPIKE
        if not chance(rng, hazard):
            return None
        # Customers call before the next box is prepared (about a week before it ships).
        latest = max(2, (following - arrived).days - 8)
        at = moment(rng, days_after(arrived, rng.randint(2, latest)), CALL_HOURS)
        if at >= self.cal.cutoff:
            return None  # decided after as_of: as far as the data knows, it is still running
        self._cancel(at)
        return at

    def _cancel(self, at: dt.datetime) -> None:
        rng, st, sub = self.rng, self.st, self.sub
        reason = pick(rng, _REASONS, _REASON_CUM[st.profile.line.key == "skincare"])
        sub.status = SubscriptionStatus.CANCELLED
        sub.cancelled_at = at
        sub.cancel_reason = reason
        sub.next_delivery_on = None
        if chance(rng, story.CANCEL_NOTE_SHARE):
            sub.cancel_note = one_of(rng, story.CANCEL_NOTES[reason])
        if chance(rng, story.CANCEL_CONTACT_SHARE):
            st.contacts.append(
                PlannedContact(
                    at=at,
                    channel="phone" if chance(rng, 0.7) else contact_channel(rng, st),
                    direction="inbound",
                    reason="定期の解約希望",
                    summary=f"定期便の解約希望({reason.label})。{self.delivered}回目お届け後に解約。",
                    subscription=sub,
                )
            )

    def _maybe_pause(self, arrived: dt.date, following: dt.date) -> dt.date:
        """Pause for a few cycles now and then; returns the next delivery date."""
        rng, sub = self.rng, self.sub
        if not chance(rng, story.PAUSE_RATE):
            return following
        paused_at = moment(rng, days_after(arrived, rng.randint(3, 10)), CALL_HOURS)
        if paused_at >= self.cal.cutoff:
            return following
        resume = following
        for _ in range(rng.randint(*story.PAUSE_CYCLES)):
            resume = sub.next_slot(resume)
        sub.pauses.append((paused_at, resume))
        if resume > self.cal.as_of:
            sub.status = SubscriptionStatus.PAUSED
            sub.paused_until = resume
            sub.next_delivery_on = resume
        return resume


# --- Year-end --------------------------------------------------------------------------------------


def year_end_campaigns(rng: random.Random, cal: Calendar, st: Story) -> None:
    """歳末感謝セール: repeat customers who bought recently get 10% off in early December."""
    profile = st.profile
    for year in range(cal.first_day.year, cal.as_of.year + 1):
        start = at_time(dt.date(year, 12, 1), 0)
        if not profile.registered_at < start < cal.cutoff:
            continue
        before = [order.at for order in st.orders if order.at < start]
        if len(before) < 2 or (start - max(before)).days > story.YEAR_END_ACTIVE_DAYS:
            continue
        if not chance(rng, story.YEAR_END_RESPONSE):
            continue
        channel = _sales_channel(rng, profile.channel)
        day = dt.date(year, 12, rng.randint(1, story.YEAR_END_LAST_DAY))
        at = moment(rng, day, _SALES_HOURS[channel])
        if at >= cal.cutoff:
            continue
        if st.subscribed_at(at):
            basket = _basket(rng, profile.line, "cross")  # subscribers add something extra
        else:
            basket = [(profile.line.main, one_of(rng, (1, 2, 2, 3)))]
            if chance(rng, 0.3):
                basket.append((story.POUCH, 1))
        subtotal = sum(product.price * quantity for product, quantity in basket)
        discount = round(subtotal * story.YEAR_END_DISCOUNT)
        reason = "歳末感謝セール10%OFF"
        _spot_order(
            rng, cal, st, at, basket, channel=channel, discount=discount, discount_reason=reason
        )
