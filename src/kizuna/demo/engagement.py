"""Everything around the orders: membership, consents, inquiries, marketing, site activity.

These depend on the purchase history (a lapsed customer may delete their account, inquiries
are about orders, the site shows the click path before each web order), so they are simulated
after kizuna.demo.purchases.
"""

from __future__ import annotations

import datetime as dt
import random

from kizuna.commerce.models import SalesChannel
from kizuna.customers.models import AcquisitionChannel as Ch
from kizuna.customers.models import BehaviourKind, ConsentChannel, ConsentMethod, MemberStatus
from kizuna.demo import story
from kizuna.demo.plan import (
    CALL_HOURS,
    WEB_HOURS,
    Calendar,
    PlannedBehaviour,
    PlannedConsent,
    PlannedContact,
    Story,
    at_time,
    chance,
    cumulative,
    days_after,
    moment,
    one_of,
    pick,
)

_FORMS: dict[Ch, tuple[str, ConsentMethod]] = {
    Ch.PHONE: ("電話受注", ConsentMethod.PHONE),
    Ch.PAPER: ("申込はがき", ConsentMethod.PAPER),
}
_WEB_FORM = ("購入フォーム", ConsentMethod.WEB_FORM)
_LINE_FORM = ("LINE友だち追加", ConsentMethod.LINE)
_OPT_OUT_METHODS = {
    ConsentChannel.EMAIL: ConsentMethod.UNSUBSCRIBE,  # the link in every mail
    ConsentChannel.SMS: ConsentMethod.UNSUBSCRIBE,
    ConsentChannel.LINE: ConsentMethod.LINE,  # blocked the account
    ConsentChannel.POSTAL: ConsentMethod.STAFF,  # asked the call centre
    ConsentChannel.PHONE: ConsentMethod.STAFF,
}
_CONTACT_CHANNELS = tuple(name for name, _ in story.CONTACT_CHANNELS)
_CONTACT_CHANNEL_CUM = cumulative([w for _, w in story.CONTACT_CHANNELS])
_REASON_CUM = {
    True: cumulative([w for _, w, _ in story.CONTACT_REASONS]),
    False: cumulative([0 if r == "肌トラブル" else w for r, w, _ in story.CONTACT_REASONS]),
}


def membership(rng: random.Random, cal: Calendar, st: Story) -> None:
    """Guests (one-off buyers who never registered) and withdrawn members (退会)."""
    profile = st.profile
    if len(st.orders) == 1:
        digital_trial = st.trial_first and profile.digital
        share = story.GUEST_SHARE_SINGLE_TRIAL if digital_trial else story.GUEST_SHARE_OTHER
        if chance(rng, share):
            st.member_status = MemberStatus.GUEST
            return
    last_order = max(order.at for order in st.orders)
    lapsed_since = last_order + dt.timedelta(days=story.LAPSED_DAYS)
    if (
        not st.running_subscription
        and lapsed_since < cal.cutoff
        and chance(rng, story.WITHDRAWN_SHARE)
    ):
        span = (cal.cutoff - lapsed_since).total_seconds()
        day = (lapsed_since + dt.timedelta(seconds=rng.random() * span)).date()
        st.member_status = MemberStatus.WITHDRAWN
        st.withdrawn_at = max(lapsed_since, moment(rng, day, CALL_HOURS))


def consents(rng: random.Random, cal: Calendar, st: Story) -> None:
    """One consent per channel. Most are given on the order form at registration, LINE often
    later (友だち追加 after a campaign); some are withdrawn again, and 退会 withdraws all."""
    for channel in ConsentChannel:
        st.consents[channel] = PlannedConsent(channel)
    _grants(rng, cal, st)
    for consent in st.consents.values():
        if consent.granted_at is None:
            continue
        if chance(rng, story.OPT_OUT_SHARE):
            span = (cal.cutoff - consent.granted_at).total_seconds()
            out = consent.granted_at + dt.timedelta(seconds=span * rng.random())
            if out - consent.granted_at > dt.timedelta(days=1):
                consent.opted_out_at = out
                consent.opt_out_method = _OPT_OUT_METHODS[consent.channel]
        if st.withdrawn_at is not None and consent.active_at(st.withdrawn_at):
            consent.opted_out_at = st.withdrawn_at
            consent.opt_out_method = ConsentMethod.STAFF


def _grants(rng: random.Random, cal: Calendar, st: Story) -> None:
    profile = st.profile
    channel = profile.channel
    reg = profile.registered_at
    form = _FORMS.get(channel, _WEB_FORM)

    def grant(consent: ConsentChannel, at: dt.datetime, how: tuple[str, ConsentMethod]) -> None:
        if at < cal.cutoff and (st.withdrawn_at is None or at < st.withdrawn_at):
            planned = st.consents[consent]
            planned.granted_at, (planned.source_form, planned.method) = at, how

    if profile.email_display and chance(rng, story.EMAIL_CONSENT_SHARE[profile.digital]):
        grant(ConsentChannel.EMAIL, reg, form)
    if profile.is_mobile and chance(rng, story.SMS_CONSENT_SHARE):
        grant(ConsentChannel.SMS, reg, form)
    if chance(rng, story.LINE_CONSENT_SHARE[channel]):
        if channel == Ch.LINE:  # added the shop as a friend, then ordered from the LINE ad
            grant(ConsentChannel.LINE, reg - dt.timedelta(minutes=rng.randint(2, 30)), _LINE_FORM)
        else:
            later = moment(rng, days_after(reg, rng.randint(1, 300)), WEB_HOURS)
            grant(ConsentChannel.LINE, later, _LINE_FORM)
    if chance(rng, story.POSTAL_CONSENT_SHARE[profile.digital]):
        grant(ConsentChannel.POSTAL, reg, form)
    if chance(rng, story.PHONE_CONSENT_SHARE.get(channel, 0.04)):
        grant(ConsentChannel.PHONE, reg, form)


def contact_channel(rng: random.Random, st: Story) -> str:
    """How a customer gets in touch: letters from paper customers, chat and LINE only from
    customers who came online, e-mail only from those who gave an address."""
    channel = pick(rng, _CONTACT_CHANNELS, _CONTACT_CHANNEL_CUM)
    profile = st.profile
    if channel == "letter" and profile.channel != Ch.PAPER:
        return "phone"
    if channel in ("chat", "line") and not profile.digital:
        return "phone"
    if channel == "email" and not profile.email_display:
        return "phone"
    return channel


def inquiries(rng: random.Random, cal: Calendar, st: Story) -> None:
    """General inquiries about an order: how to use it, delivery dates, payment…"""
    if not chance(rng, story.CONTACT_SHARE):
        return
    count = 2 if chance(rng, story.SECOND_CONTACT_SHARE) else 1
    skincare = st.profile.line.key == "skincare"
    for _ in range(count):
        order = one_of(rng, st.orders)
        at = moment(rng, days_after(order.at, rng.randint(0, 10)), CALL_HOURS)
        if at <= order.at or at >= cal.cutoff:
            continue
        if chance(rng, story.OUTBOUND_SHARE):
            summary = one_of(rng, story.OUTBOUND_SUMMARIES)
            st.contacts.append(PlannedContact(at, "phone", "outbound", "確認連絡", summary, order))
            continue
        reason, _, summaries = pick(rng, story.CONTACT_REASONS, _REASON_CUM[skincare])
        channel = contact_channel(rng, st)
        st.contacts.append(
            PlannedContact(at, channel, "inbound", reason, one_of(rng, summaries), order)
        )


def messages(rng: random.Random, cal: Calendar, st: Story) -> None:
    """Marketing sent to consenting customers: step mails after the first order (until the
    demo's scenarios take them over, cal.scenarios_from) and seasonal campaigns. (Point-expiry
    reminders come with the points ledger, in kizuna.demo.rows.)"""
    first = st.orders[0].at
    for days, trial_only, title in story.STEP_MAILS:
        if trial_only and not st.trial_first:
            continue
        at = at_time(days_after(first, days), 10, rng.randrange(60))
        if at < cal.scenarios_from and st.consent_active(ConsentChannel.EMAIL, at):
            st.messages.append((at, "email", title))
    for year in range(cal.first_day.year, cal.as_of.year + 1):
        for month, day, channel, title in story.CAMPAIGNS:
            at = at_time(dt.date(year, month, day), 10)
            consenting = st.consent_active(ConsentChannel(channel), at)
            if st.profile.registered_at < at < cal.cutoff and consenting:
                st.messages.append((at, channel, title))


def behaviour(rng: random.Random, cal: Calendar, st: Story) -> None:
    """Site activity in the last BEHAVIOUR_WINDOW_DAYS (older tracking data is not kept)."""
    sessions = _Sessions(st)
    _order_paths(rng, cal, st, sessions)
    profile = st.profile
    share = story.BEHAVIOUR_OTHER_SHARE
    if profile.digital:
        recent = any(o.at >= cal.behaviour_from - dt.timedelta(days=365) for o in st.orders)
        if recent or st.running_subscription:
            share = story.BEHAVIOUR_ACTIVE_SHARE
    if st.member_status != MemberStatus.WITHDRAWN and chance(rng, share):
        _browsing(rng, cal, st, sessions)
    st.behaviour = [event for event in st.behaviour if event.at < cal.cutoff]


class _Sessions:
    def __init__(self, st: Story) -> None:
        self.prefix = f"{st.profile.customer_id:x}"
        self.count = 0

    def next(self) -> str:
        self.count += 1
        return f"{self.prefix}-{self.count}"


def _order_paths(rng: random.Random, cal: Calendar, st: Story, sessions: _Sessions) -> None:
    """The click path before each web or LINE order: landing page, product, cart, checkout."""
    for order in st.orders:
        if order.at < cal.behaviour_from or order.channel not in (
            SalesChannel.WEB,
            SalesChannel.LINE,
        ):
            continue
        session = sessions.next()
        product = order.lines[0][0]
        path = (
            (BehaviourKind.PAGE_VIEW, rng.randint(8, 40), None, st.profile.line.lp_url),
            (BehaviourKind.PRODUCT_VIEW, rng.randint(4, 7), product, f"/products/{product.code}"),
            (BehaviourKind.CART_ADD, 3, product, "/cart"),
            (BehaviourKind.CHECKOUT_START, 1, None, "/checkout"),
        )
        for kind, minutes_before, item, url in path:
            at = order.at - dt.timedelta(minutes=minutes_before, seconds=rng.randrange(60))
            if at >= cal.behaviour_from:
                st.behaviour.append(PlannedBehaviour(kind, at, item, url, session))


def _browsing(rng: random.Random, cal: Calendar, st: Story, sessions: _Sessions) -> None:
    """Visits that end without an order; some leave a cart behind (カゴ落ち)."""
    line = st.profile.line
    candidates = (line.main, line.subscription, line.trial, story.CREAM, line.main)
    visits = 1
    while visits < 6 and chance(rng, 0.5):
        visits += 1
    start = max(cal.behaviour_from, st.profile.registered_at)
    for _ in range(visits):
        day = days_after(cal.behaviour_from, rng.randrange(story.BEHAVIOUR_WINDOW_DAYS))
        at = moment(rng, day, WEB_HOURS)
        if at < start:
            continue
        session = sessions.next()
        events = st.behaviour
        events.append(PlannedBehaviour(BehaviourKind.PAGE_VIEW, at, None, "/", session))
        product = one_of(rng, candidates)
        url = f"/products/{product.code}"
        for _ in range(rng.randint(1, 2)):
            at += dt.timedelta(seconds=rng.randint(20, 240))
            events.append(PlannedBehaviour(BehaviourKind.PRODUCT_VIEW, at, product, url, session))
        if chance(rng, story.CART_ADD_SHARE):
            at += dt.timedelta(seconds=rng.randint(20, 300))
            events.append(PlannedBehaviour(BehaviourKind.CART_ADD, at, product, "/cart", session))
            if chance(rng, story.CHECKOUT_START_SHARE):
                at += dt.timedelta(seconds=rng.randint(20, 300))
                kind = BehaviourKind.CHECKOUT_START
                events.append(PlannedBehaviour(kind, at, None, "/checkout", session))
