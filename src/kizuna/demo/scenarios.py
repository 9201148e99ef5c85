"""The demo shop's running scenarios, with six months of history and measurable lift.

    seed_demo_scenarios(as_of=datetime.date(2025, 6, 30), seed=42)

Called after kizuna.demo.build.build_demo. It loads the demo's segments, templates, offers and
seven scenarios (the YAML below, the same format as `kizuna scenarios load`), activates them
half a year before `as_of`, and writes what the scheduler would have done since:

* enrollments, from the scenarios' own trigger queries over the history window, each dated
  at its trigger moment; holdout customers drawn by the same hash as in live running;
* one StepDispatch per step each enrollment reached before it ended (a purchase, a
  cancellation or an opt-out ends it, as the scenario's exit rules say);
* the outbox rows the delivery worker would have left — `sent` where the customer had
  consented to the channel at that time, `skipped` with the reason where not — and a timeline
  row per message sent;
* the customers' responses: the story says a message makes a customer who would not have
  bought within the attribution window buy with a small probability (RESPONSE). Only
  customers who were sent a message can respond, so the holdout buys exactly as the
  simulated history says and the treated group slightly more. The lift page then measures
  that difference from the orders like any other; nothing in kizuna...lift knows about it.

Everything is written in bulk and derived from `seed` and the data, never from the clock.
Orders written here bypass commerce.order_upsert for speed, as the demo builder does; they
carry their lines, shipment and timeline rows but earn no points.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.core.management.color import no_style
from django.db import connection, transaction
from django.db.models import DateField, Max, OuterRef, Subquery

from kizuna.campaigns.automation import triggers
from kizuna.campaigns.automation.clock import jst_at, jst_date
from kizuna.campaigns.automation.models import (
    DispatchStatus,
    Enrollment,
    ExitRule,
    Offer,
    Scenario,
    ScenarioStep,
    StepDispatch,
    TriggerKind,
)
from kizuna.campaigns.automation.recommendations import copurchase_refresh, copurchase_table
from kizuna.campaigns.automation.scheduler import (
    complete_finished,
    dedupe_key,
    due_enrollments,
    due_moment,
)
from kizuna.campaigns.automation.services import (
    scenario_activate,
    scenario_archive,
    scenario_pause,
    scenario_save,
)
from kizuna.campaigns.automation.templating import (
    compile_stored,
    content_for,
    customer_contexts,
    offer_context,
    points_expiry_values,
)
from kizuna.campaigns.automation.yaml_io import load_yaml
from kizuna.campaigns.consent_checks import NO_CONSENT, OPTED_OUT
from kizuna.campaigns.delivery import CAPPED_CHANNELS, timeline_title
from kizuna.campaigns.models import (
    Channel,
    DeliveryList,
    DeliverySettings,
    OutboxMessage,
    OutboxStatus,
    Purpose,
)
from kizuna.commerce.models import (
    Order,
    OrderLine,
    OrderReversal,
    OrderStatus,
    Product,
    ProductKind,
    SalesChannel,
    Shipment,
)
from kizuna.core.audit import Actor
from kizuna.core.bulk import analyze, insert_rows
from kizuna.customers.models import (
    Consent,
    ConsentChannel,
    ConsentEvent,
    TimelineEvent,
    TimelineKind,
)
from kizuna.customers.timeline import TIMELINE_COLUMNS
from kizuna.demo import story
from kizuna.subscriptions.models import DeliveryStatus, Subscription, SubscriptionDelivery

ACTOR = Actor.system("demo")
HISTORY_DAYS = story.SCENARIO_HISTORY_DAYS
OUTBOX_BATCH = 5_000  # messages rendered and written at a time
VOID = (OrderStatus.CANCELLED, OrderStatus.RETURNED)

# The chance that a message makes a customer buy who would not have bought within the
# scenario's attribution window otherwise, per scenario (the story behind the lift).
RESPONSE: dict[str, float] = {
    "trial-step-mail": 0.08,
    "f2-push-day30": 0.05,
    "dormant-winback-120": 0.04,
    "birthday": 0.03,
    "points-expiry-30": 0.05,
    "cart-abandonment-3h": 0.10,
    "subscription-pre-delivery": 0.03,
}
# What the responding customer buys: their line's main product, unless the scenario says.
RESPONSE_PRODUCT: dict[str, str] = {
    "birthday": story.CREAM.code,
    "subscription-pre-delivery": story.POUCH.code,
}
# Consent each channel needs; 同梱物 travel in the customer's own parcel and need none.
CONSENT_FOR: dict[str, ConsentChannel | None] = {
    Channel.EMAIL: ConsentChannel.EMAIL,
    Channel.LINE: ConsentChannel.LINE,
    Channel.SMS: ConsentChannel.SMS,
    Channel.POSTAL: ConsentChannel.POSTAL,
    Channel.CALL: ConsentChannel.PHONE,
    Channel.INSERT: None,
    Channel.ONSITE: None,
}
BEST_ORDER = (Channel.EMAIL, Channel.LINE, Channel.SMS, Channel.POSTAL)

DEMO_SCENARIOS = """\
version: 1
segments:
- key: email-consented
  name: メール配信に同意しているお客様
  description: ''
  rules: {op: and, rules: [{field: consent, operator: in, value: [email]}]}
- key: active-subscribers
  name: 定期継続中のお客様
  description: ''
  rules: {op: and, rules: [{field: subscription_status, operator: in, value: [active]}]}
- key: loyal-30000
  name: 累計3万円以上・直近180日に購入
  description: 優良客の候補
  rules:
    op: and
    rules:
    - {field: order_total, operator: gte, value: 30000}
    - {field: last_order, operator: within_days, value: 180}
templates:
- key: trial-guide
  name: トライアル お届け日の使い方ガイド
  subject: '{{ name }} 様、{{ last_product }}の使い方のご案内'
  text: |
    {{ name }} 様

    このたびは{{ last_product }}をお選びいただき、ありがとうございます。
    商品はお手元に届きましたでしょうか。効果を実感していただくための使い方をご案内します。

    ・朝晩の洗顔後、2プッシュを手のひらで温めてからなじませてください。
    ・最初の1週間は毎日続けるのがおすすめです。
    {% if recommendations %}
    同じ商品をお使いのお客様には、こちらも人気です:
    {% for r in recommendations %}・{{ r.name }}({{ r.price|yen }})
    {% endfor %}{% endif %}
  html: ''
- key: trial-coupon
  name: トライアル 本品クーポン
  subject: 【トライアルご購入者様限定】本品{{ offer.label }}クーポン
  text: |
    {{ name }} 様

    トライアルセットはいかがでしたか。続けてお使いいただけるよう、本品に使える
    {{ offer.label }}クーポンをご用意しました。

    クーポンコード: {{ offer.code }}
    有効期限: {{ offer.expires_on|jdate }}まで
  html: ''
- key: f2-push
  name: 2回目購入のご案内(30日目)
  subject: '{{ name }} 様、そろそろ次のご準備はいかがですか'
  text: |
    {{ name }} 様

    {{ last_product }}をお使いいただき、約1か月になります。
    なくなる前に次のご準備をどうぞ。今なら{{ offer.label }}でお届けします。
    クーポンコード: {{ offer.code }}({{ offer.expires_on|jdate }}まで)
  html: ''
- key: winback
  name: 休眠のお客様へ(お久しぶりです)
  subject: お久しぶりです、{{ name }} 様
  text: |
    {{ name }} 様

    前回のご購入({{ last_order_date|jdate }})から少し時間がたちました。
    お元気でお過ごしでしょうか。感謝の気持ちを込めて、{{ offer.label }}クーポンをお送りします。
    クーポンコード: {{ offer.code }}({{ offer.expires_on|jdate }}まで)
  html: ''
- key: birthday
  name: お誕生日のお祝い
  subject: お誕生日おめでとうございます、{{ name }} 様
  text: |
    {{ name }} 様

    お誕生日おめでとうございます。日頃のご愛顧に感謝して、お誕生日のお祝いに
    {{ offer.label }}クーポンをお贈りします。

    クーポンコード: {{ offer.code }}
    有効期限: {{ offer.expires_on|jdate }}まで
  html: ''
- key: points-expiry
  name: ポイント失効のお知らせ
  subject: 【ご愛用感謝】{{ points_expiring|comma }}ポイントが{{ points_expiry_date|jdate }}に失効します
  text: |
    {{ name }} 様

    {{ points_expiry_date|jdate }}に{{ points_expiring|comma }}ポイントが有効期限を迎えます。
    現在のポイント残高は{{ points_balance|comma }}ptです。1ポイント1円として、次回のお買い物にご利用ください。
  html: ''
- key: cart-reminder
  name: カゴ落ちのお知らせ
  subject: お買い物カゴに商品が残っています
  text: |
    {{ name }} 様

    {% if product %}「{{ product }}」が{% else %}商品が{% endif %}お買い物カゴに残っています。
    ご不明な点があれば、お気軽にお問い合わせください。
  html: ''
- key: pre-delivery
  name: 定期 次回お届けのお知らせ
  subject: 次回お届け予定のお知らせ
  text: |
    {{ name }} 様

    いつも定期便をご利用いただき、ありがとうございます。まもなく次回のお届けです。
    お届け日の変更・スキップはマイページから承ります。
    今回のお届けに商品を追加されると{{ offer.label }}でお届けします。
  html: ''
offers:
- {key: addon-free-shipping, name: 同梱追加で送料無料, kind: free_shipping, value: 0, code: '', valid_days: 7}
- {key: birthday-500, name: お誕生日500円OFF, kind: yen_off, value: 500, code: BIRTHDAY500, valid_days: 30}
- {key: f2-500, name: 2回目500円OFF, kind: yen_off, value: 500, code: NEXT500, valid_days: 14}
- {key: main-1000, name: '本品1,000円OFF', kind: yen_off, value: 1000, code: TRIAL1000, valid_days: 14}
- {key: winback-10, name: おかえりなさい10%OFF, kind: percent_off, value: 10, code: WELCOME10, valid_days: 21}
scenarios:
- key: trial-step-mail
  name: トライアル購入者ステップメール
  description: トライアル購入者に、お届け日の使い方ガイド、使用開始7日後の本品クーポン、購入21日後のリマインドを送ります。
  status: active
  trigger: {kind: first_purchase, product_kind: trial}
  audience: null
  holdout_percent: 10
  purpose: marketing
  exit_on: [purchase]
  first_use_days: 3
  attribution_days: 30
  steps:
  - {key: guide, anchor: delivery, offset_days: 0, send_time: '10:00', repeat_monthly: 0, channel: email, template: trial-guide, offer: null, condition: null}
  - {key: coupon, anchor: first_use, offset_days: 7, send_time: '10:00', repeat_monthly: 0, channel: email, template: trial-coupon, offer: main-1000, condition: null}
  - {key: reminder, anchor: purchase, offset_days: 21, send_time: '12:00', repeat_monthly: 0, channel: best, template: trial-coupon, offer: main-1000, condition: null}
- key: f2-push-day30
  name: F2転換 30日目のご案内
  description: 初回購入から30日たっても2回目の購入がないお客様に、次回購入のご案内を送ります。
  status: active
  trigger: {kind: first_purchase}
  audience: null
  holdout_percent: 10
  purpose: marketing
  exit_on: [purchase]
  first_use_days: 3
  attribution_days: 60
  steps:
  - {key: day30, anchor: purchase, offset_days: 30, send_time: '10:00', repeat_monthly: 0, channel: best, template: f2-push, offer: f2-500, condition: null}
- key: dormant-winback-120
  name: 休眠掘り起こし(120日)
  description: 最後の購入から120日間購入のないお客様に、クーポン付きのご案内と2週間後のDMを送ります。
  status: active
  trigger: {kind: no_purchase, days: 120}
  audience: null
  holdout_percent: 10
  purpose: marketing
  exit_on: [purchase]
  first_use_days: 3
  attribution_days: 30
  steps:
  - {key: mail, anchor: trigger, offset_days: 0, send_time: '10:00', repeat_monthly: 0, channel: email, template: winback, offer: winback-10, condition: null}
  - {key: dm, anchor: trigger, offset_days: 14, send_time: '10:00', repeat_monthly: 0, channel: postal, template: winback, offer: winback-10, condition: null}
- key: birthday
  name: お誕生日のお祝い
  description: お誕生日の朝に、お祝いのクーポンをお送りします。
  status: active
  trigger: {kind: birthday}
  audience: null
  holdout_percent: 10
  purpose: marketing
  exit_on: []
  first_use_days: 3
  attribution_days: 30
  steps:
  - {key: greeting, anchor: trigger, offset_days: 0, send_time: '09:00', repeat_monthly: 0, channel: best, template: birthday, offer: birthday-500, condition: null}
- key: points-expiry-30
  name: ポイント失効30日前のお知らせ
  description: ポイントの有効期限の30日前に、残高と期限をお知らせします。
  status: active
  trigger: {kind: points_expiring, days: 30}
  audience: null
  holdout_percent: 10
  purpose: marketing
  exit_on: [purchase]
  first_use_days: 3
  attribution_days: 30
  steps:
  - {key: notice, anchor: trigger, offset_days: 0, send_time: '10:00', repeat_monthly: 0, channel: email, template: points-expiry, offer: null, condition: null}
- key: cart-abandonment-3h
  name: カゴ落ちフォロー(3時間後)
  description: カートに入れたまま3時間注文のないお客様にお知らせします。
  status: active
  trigger: {kind: cart_abandonment, hours: 3}
  audience: null
  holdout_percent: 10
  purpose: marketing
  exit_on: [purchase]
  first_use_days: 3
  attribution_days: 7
  steps:
  - {key: reminder, anchor: trigger, offset_days: 0, send_time: null, repeat_monthly: 0, channel: email, template: cart-reminder, offer: null, condition: null}
- key: subscription-pre-delivery
  name: 定期 お届け5日前のお知らせ
  description: 定期便のお届け5日前に、お届け予定と追加購入のご案内を送ります。
  status: active
  trigger: {kind: subscription_before_delivery, days: 5}
  audience: null
  holdout_percent: 10
  purpose: marketing
  exit_on: [cancel]
  first_use_days: 3
  attribution_days: 30
  steps:
  - {key: notice, anchor: trigger, offset_days: 0, send_time: '10:00', repeat_monthly: 0, channel: email, template: pre-delivery, offer: addon-free-shipping, condition: null}
"""


# A campaign that ran before the demo's history and is over: stopped and archived, so the
# scenario list's アーカイブ tab shows what that state is for on day one. Its run predates the
# history, so it has no enrollments; the scheduler never runs it.
FINISHED_CAMPAIGN: dict[str, Any] = {
    "key": "limited-campaign-ended",
    "name": "期間限定キャンペーン(終了)",
    "description": (
        "初回購入のお客様に、期間限定で2回目のご購入のご案内を送ったキャンペーンです。"
        "終了したためアーカイブしています(稼働せず、一覧では「アーカイブ」に表示されます)。"
    ),
    "trigger": {"kind": "first_purchase"},
    "holdout_percent": 10,
    "exit_on": ["purchase"],
    "attribution_days": 30,
    "steps": [
        {
            "key": "second-order",
            "anchor": "purchase",
            "offset_days": 14,
            "send_time": "10:00",
            "repeat_monthly": 0,
            "channel": "email",
            "template": "f2-push",
            "offer": "f2-500",
            "condition": None,
        }
    ],
}


def _seed_finished_campaign(history_start: dt.datetime) -> None:
    """FINISHED_CAMPAIGN, run for two months ending a month before the history, archived."""
    saved = scenario_save(scenario=None, spec=FINISHED_CAMPAIGN, acting_user=ACTOR)
    at = history_start - dt.timedelta(days=90)
    saved = scenario_activate(scenario=saved, acting_user=ACTOR, at=at)
    saved = scenario_pause(scenario=saved, acting_user=ACTOR)
    scenario_archive(scenario=saved, acting_user=ACTOR)


class DemoScenariosExistError(RuntimeError):
    """The demo scenarios are written once, into the freshly built demo database."""


def seed_demo_scenarios(*, as_of: dt.date, seed: int) -> None:
    """Create the demo scenarios and their history up to the start of `as_of` (JST)."""
    start, now = jst_at(as_of - dt.timedelta(days=HISTORY_DAYS)), jst_at(as_of)
    if Scenario.objects.filter(key__in=RESPONSE).exists():
        raise DemoScenariosExistError(
            "デモのシナリオは作成済みです。作り直すには空のデータベースからデモを作成してください。"
        )
    with transaction.atomic():
        seed_demo_sender()
        # Loaded as drafts and started at the beginning of the history, not at the clock.
        load_yaml(DEMO_SCENARIOS.replace("status: active", "status: draft"), acting_user=ACTOR)
        for scenario in Scenario.objects.filter(key__in=RESPONSE).order_by("pk"):
            scenario_activate(scenario=scenario, acting_user=ACTOR, at=start)
        _seed_finished_campaign(start)
        copurchase_refresh(now=now)
    history = _History(now=now, seed=seed, recommendations=copurchase_table())
    for scenario in Scenario.objects.filter(key__in=RESPONSE).order_by("pk"):
        with transaction.atomic():
            history.scenario(scenario, start)
    with transaction.atomic():
        _file_on_weekly_lists(now)
    # Outbox ids were given explicitly: move PostgreSQL's sequence past them.
    with connection.cursor() as cursor:
        for statement in connection.ops.sequence_reset_sql(no_style(), [OutboxMessage]):
            cursor.execute(statement)
    # The history is a bulk load like the build's: without statistics on these tables the
    # first scenario tick after the build planned its queries as if they were empty.
    analyze(HISTORY_TABLES)


# What the history writes (the customers' rows were analysed by the build).
HISTORY_TABLES = (
    Enrollment, StepDispatch, OutboxMessage, DeliveryList, TimelineEvent, Order, OrderLine,
    Shipment,
)  # fmt: skip


# The made-up shop behind the demo's sender block (特定電子メール法, S8): without one, every
# marketing message the running demo queues would be held, and the delivery page would say so.
DEMO_SENDER = {
    "sender_name": "きずなコスメ公式通販(デモ)",
    "sender_address": "〒150-0000 東京都渋谷区デモ町1-2-3 きずなビル5階",
    "sender_contact": "0120-000-000(平日10:00〜18:00)/ support@example.jp",
}


def seed_demo_sender() -> None:
    """Fill the sender block on the delivery settings, where the shop has not set its own."""
    row = DeliverySettings.load()
    changed = [name for name, value in DEMO_SENDER.items() if not getattr(row, name)]
    for name in changed:
        setattr(row, name, DEMO_SENDER[name])
    if changed:
        row.save(update_fields=changed)


# Who closed the history's lists: the print and packing lists the marketer, call lists the
# contact center (the demo logins of those roles).
LIST_CLOSERS: dict[str, str] = {
    Channel.POSTAL: "marketer",
    Channel.INSERT: "marketer",
    Channel.CALL: "operator",
}


def _file_on_weekly_lists(now: dt.datetime) -> None:
    """Put the history's postal DM, 同梱物 and call messages on the lists they would have gone
    out on: one list per channel and JST week (Monday to Sunday), closed the next Monday at
    10:00 by the role that hands it over. The week of `now` stays open, as a running shop's
    would, so the worker's next messages join it."""
    this_week = _monday(jst_date(now))
    lists: dict[tuple[str, dt.date], DeliveryList] = {}
    members: dict[int, list[int]] = {}
    sent = OutboxMessage.objects.filter(
        status=OutboxStatus.SENT, sent_channel__in=list(LIST_CLOSERS), delivery_list__isnull=True
    ).order_by("sent_at", "id")
    for pk, channel, sent_at in sent.values_list("id", "sent_channel", "sent_at").iterator():
        assert sent_at is not None  # noqa: S101 - every sent message has its time
        week = _monday(jst_date(sent_at))
        delivery_list = lists.get((channel, week))
        if delivery_list is None:
            closed = week != this_week
            delivery_list = lists[channel, week] = DeliveryList.objects.create(
                channel=channel,
                created_at=sent_at,
                closed_at=jst_at(week + dt.timedelta(days=7), dt.time(10)) if closed else None,
                closed_by=LIST_CLOSERS[channel] if closed else "",
            )
        members.setdefault(delivery_list.pk, []).append(pk)
    for list_id, ids in members.items():
        for start in range(0, len(ids), LIST_UPDATE_CHUNK):
            OutboxMessage.objects.filter(pk__in=ids[start : start + LIST_UPDATE_CHUNK]).update(
                delivery_list_id=list_id
            )


LIST_UPDATE_CHUNK = 5_000  # ids per UPDATE: SQLite allows 32,766 parameters per statement


def _monday(day: dt.date) -> dt.date:
    return day - dt.timedelta(days=day.weekday())


@dataclass
class _Sent:
    enrollment_id: int
    customer_id: int
    sent_at: dt.datetime
    last_product_id: int | None
    cart_product_id: int | None
    bought_within_window: bool


class _History:
    def __init__(
        self,
        *,
        now: dt.datetime,
        seed: int,
        recommendations: dict[int, list[tuple[int, str, int]]],
    ) -> None:
        self.now = now
        self.seed = seed
        self.recommendations = recommendations
        self.orders_written = 0

    def scenario(self, scenario: Scenario, start: dt.datetime) -> None:
        window = triggers.Window(now=self.now, since=start)
        if scenario.trigger_kind == TriggerKind.SUBSCRIPTION_BEFORE_DELIVERY:
            enrollments = _delivery_history(scenario, window)
        else:
            enrollments = triggers.enrollment_rows(scenario, window, at_trigger=True)
        # Insert in a fixed order (anchor, customer, occurrence): ids, and so the random draws
        # made in id order, must not depend on the order the database returned the rows in.
        enrollments.sort(key=lambda row: (row[5], row[1], row[2]))
        insert_rows(Enrollment, triggers.ENROLLMENT_COLUMNS, enrollments)
        steps = list(
            scenario.steps.select_related("template", "offer", "condition").order_by("position")
        )
        rng = random.Random(f"{self.seed}:{scenario.key}")
        for index, step in enumerate(steps):
            for repeat in range(step.repeat_monthly + 1):
                sent = self.dispatch(scenario, step, repeat, rng)
                if index == 0 and repeat == 0:
                    self.respond(scenario, step, sent, rng)
        complete_finished(scenario, steps, now=self.now)
        triggers.apply_exits(scenario, now=self.now)

    # -- steps ---------------------------------------------------------------------------------

    def dispatch(
        self, scenario: Scenario, step: ScenarioStep, repeat: int, rng: random.Random
    ) -> list[_Sent]:
        rows = list(_due_with_exits(scenario, step, repeat, self.now))
        if not rows:
            return []
        dispatches: list[tuple[Any, ...]] = []
        messages: list[tuple[dict[str, Any], dt.datetime]] = []
        expiring = self.points_expiring(scenario, step, repeat, rows)
        for row in rows:
            due_at = due_moment(scenario, step, repeat, row["anchor_at"], row["anchor_value"])
            if row["exit_at"] is not None and row["exit_at"] <= due_at:
                continue  # the enrollment had ended before this step
            status = (
                DispatchStatus.HELD_OUT
                if row["holdout"]
                else DispatchStatus.QUEUED
                if row["in_condition"]
                else DispatchStatus.SKIPPED
            )
            if expiring is not None and status == DispatchStatus.QUEUED:
                # As the scheduler renders it: the points still held expiring on the
                # enrollment's date when the message was due; none left, not sent.
                day = triggers.expiry_of_occurrence(row["occurrence"])
                left = 0 if day is None else expiring.get((row["customer_id"], day), 0)
                if left:
                    row["points_expiry"] = (day, left)
                else:
                    status = DispatchStatus.SKIPPED
            dispatches.append((row["pk"], step.pk, repeat, due_at, status.value, due_at))
            if status == DispatchStatus.QUEUED:
                delay = dt.timedelta(minutes=rng.randint(0, 25), seconds=rng.randint(0, 59))
                messages.append((row, due_at + delay))
        insert_rows(StepDispatch, DISPATCH_COLUMNS, dispatches)
        # Rendered in batches: a step can message a third of a million customers at 1,000,000,
        # and their contexts and contents need not all be in memory at once.
        sent: list[_Sent] = []
        for start in range(0, len(messages), OUTBOX_BATCH):
            batch = messages[start : start + OUTBOX_BATCH]
            sent += self.outbox(scenario, step, repeat, batch)
        return sent

    def points_expiring(
        self, scenario: Scenario, step: ScenarioStep, repeat: int, rows: list[dict[str, Any]]
    ) -> dict[tuple[int, dt.date], int] | None:
        """For a "points expiring" scenario: the points each enrollment's customer held
        expiring on its date, counted on the ledger up to the moment the step was due."""
        if scenario.trigger_kind != TriggerKind.POINTS_EXPIRING:
            return None
        wanted: list[tuple[int, dt.date, dt.datetime | None]] = []
        for row in rows:
            day = triggers.expiry_of_occurrence(row["occurrence"])
            if day is not None:
                due_at = due_moment(scenario, step, repeat, row["anchor_at"], row["anchor_value"])
                wanted.append((row["customer_id"], day, due_at))
        return points_expiry_values(wanted)

    def outbox(
        self,
        scenario: Scenario,
        step: ScenarioStep,
        repeat: int,
        messages: list[tuple[dict[str, Any], dt.datetime]],
    ) -> list[_Sent]:
        """The outbox rows the delivery worker would have left, and the timeline rows of the
        messages it sent."""
        if not messages:
            return []
        compiled = compile_stored(step.template)
        customers = [row["customer_id"] for row, _ in messages]
        contexts = customer_contexts(
            customers,
            today=jst_date(self.now),
            uses=compiled.uses,
            recommendations=self.recommendations,
        )
        consents = _consents(customers)
        first_id = (OutboxMessage.objects.aggregate(last=Max("id"))["last"] or 0) + 1
        outbox: list[tuple[Any, ...]] = []
        timeline: list[tuple[Any, ...]] = []
        sent: list[_Sent] = []
        window = dt.timedelta(days=scenario.attribution_days)
        for number, (row, sent_at) in enumerate(messages):
            pk, customer_id = first_id + number, row["customer_id"]
            context = {
                **contexts.get(customer_id, {}),
                "offer": offer_context(step.offer, today=jst_date(sent_at)),
                "product": row["product__name"] or "",
            }
            if "points_expiry" in row:
                context["points_expiry_date"], context["points_expiring"] = row["points_expiry"]
            content = content_for(step.channel, compiled.render(context))
            channel, reason = _channel_at(step.channel, consents, customer_id, sent_at)
            key = dedupe_key(scenario, step, customer_id, row["occurrence"], repeat)
            outbox.append(
                (pk, customer_id, step.channel, "" if reason else channel, Purpose.MARKETING.value,
                 key, content, sent_at, sent_at, scenario.pk, step.key, row["pk"],
                 OutboxStatus.SKIPPED.value if reason else OutboxStatus.SENT.value,
                 0 if reason else 1, None if reason else sent_at, reason, sent_at,
                 # as the worker leaves a capped send: it counts against the frequency cap
                 sent_at if not reason and channel in CAPPED_CHANNELS else None)
            )  # fmt: skip
            if reason:
                continue
            detail = {
                "outbox_id": pk,
                "channel": channel,
                "purpose": Purpose.MARKETING.value,
                "scenario_id": scenario.pk,
                "step_key": step.key,
            }
            timeline.append(
                (customer_id, sent_at, TimelineKind.MESSAGE.value,
                 timeline_title(channel, content)[:200], detail, OutboxMessage._meta.label, pk)
            )  # fmt: skip
            next_order = row["next_order"]
            sent.append(
                _Sent(
                    enrollment_id=row["pk"],
                    customer_id=customer_id,
                    sent_at=sent_at,
                    last_product_id=row["last_product_id"],
                    cart_product_id=row["product_id"],
                    bought_within_window=next_order is not None
                    and next_order <= row["anchor_at"] + window,
                )
            )
        insert_rows(OutboxMessage, OUTBOX_COLUMNS, outbox)
        insert_rows(TimelineEvent, TIMELINE_COLUMNS, timeline)
        return sent

    # -- responses -----------------------------------------------------------------------------

    def respond(
        self, scenario: Scenario, step: ScenarioStep, sent: Iterable[_Sent], rng: random.Random
    ) -> None:
        """Some customers who were sent the first message buy because of it (RESPONSE)."""
        chance = RESPONSE.get(scenario.key, 0.0)
        window = min(scenario.attribution_days, 10)
        orders: list[tuple[_Sent, dt.datetime, str]] = []
        for message in sent:
            if message.bought_within_window or rng.random() >= chance:
                continue
            at = message.sent_at + dt.timedelta(hours=rng.uniform(2, 24 * window))
            if at < self.now:
                orders.append((message, at, _response_product(scenario.key, message)))
        _write_orders(scenario, step, orders, now=self.now)


DISPATCH_COLUMNS = ("enrollment_id", "step_id", "repeat", "due_at", "status", "decided_at")
OUTBOX_COLUMNS = (
    "id", "customer_id", "channel", "sent_channel", "purpose", "dedupe_key", "content",
    "send_after", "next_attempt_at", "scenario_id", "step_key", "enrollment_id", "status",
    "attempts", "sent_at", "reason", "created_at", "cap_counted_at",
)  # fmt: skip


def _due_with_exits(
    scenario: Scenario, step: ScenarioStep, repeat: int, now: dt.datetime
) -> Iterable[dict[str, Any]]:
    """The step's due enrollments, with when each enrollment ended (if it did) by the
    scenario's exit rules, and what the customer bought last before it began."""
    orders_after = (
        Order.objects.filter(customer=OuterRef("customer_id"), ordered_at__gt=OuterRef("anchor_at"))
        .exclude(status__in=VOID)
        .order_by("ordered_at")
    )
    last_line = (
        OrderLine.objects.filter(
            order__customer=OuterRef("customer_id"), order__ordered_at__lte=OuterRef("anchor_at")
        )
        .exclude(order__status__in=VOID)
        .order_by("-order__ordered_at", "-id")
    )
    rows = due_enrollments(scenario, step, repeat, now=now).annotate(
        next_order=Subquery(orders_after.values("ordered_at")[:1]),
        last_product_id=Subquery(last_line.values("product_id")[:1]),
        withdrew=Subquery(
            ConsentEvent.objects.filter(
                customer=OuterRef("customer_id"),
                action=ConsentEvent.Action.WITHDRAW,
                at__gte=OuterRef("enrolled_at"),
            )
            .order_by("at")
            .values("at")[:1]
        ),
        cancelled=Subquery(
            OrderReversal.objects.filter(order=OuterRef("order_id"))
            .order_by("occurred_at")
            .values("occurred_at")[:1]
        ),
        sub_cancelled=Subquery(
            Subscription.objects.filter(
                customer=OuterRef("customer_id"), cancelled_on__gte=OuterRef("anchor_date")
            )
            .order_by("cancelled_on")
            .values("cancelled_on")[:1],
            output_field=DateField(),
        ),
    )
    exits = set(scenario.exit_on) | {ExitRule.OPT_OUT}
    for row in rows.values(
        "pk", "customer_id", "holdout", "occurrence", "anchor_at", "anchor_value",
        "in_condition", "product__name", "product_id", "next_order", "last_product_id",
        "withdrew", "cancelled", "sub_cancelled",
    ):  # fmt: skip
        ends = [row["withdrew"]]
        if ExitRule.PURCHASE in exits:
            ends.append(row["next_order"])
        if ExitRule.CANCEL in exits:
            ends.append(row["cancelled"])
            if row["sub_cancelled"] is not None:
                ends.append(jst_at(row["sub_cancelled"]))
        present = [end for end in ends if end is not None]
        row["exit_at"] = min(present) if present else None
        yield row


def _delivery_history(scenario: Scenario, window: triggers.Window) -> list[tuple[Any, ...]]:
    """ "N days before delivery" over the past: the subscription's delivery rows (the live
    trigger reads the next delivery date, which only knows the future)."""
    ahead = dt.timedelta(days=int(scenario.trigger_params["days"]))
    rows = (
        SubscriptionDelivery.objects.filter(
            scheduled_on__gte=window.since_day + ahead,
            scheduled_on__lt=window.today + ahead,
        )
        .exclude(status=DeliveryStatus.SKIPPED)
        .values_list(
            "subscription_id",
            "subscription__customer_id",
            "subscription__product_id",
            "scheduled_on",
        )
    )
    enrollments = []
    for sub_id, customer_id, product_id, scheduled_on in rows:
        day = scheduled_on - ahead
        holdout = triggers.holdout_draw(
            scenario.key, customer_id, triggers.holdout_percent(scenario)
        )
        enrollments.append(
            (scenario.pk, customer_id, f"delivery:{sub_id}:{scheduled_on:%Y-%m-%d}", holdout,
             jst_at(day), jst_at(day), day, None, sub_id, product_id, scheduled_on)
        )  # fmt: skip
    return enrollments


def _consents(customer_ids: list[int]) -> dict[tuple[int, str], tuple[Any, Any]]:
    """(granted at, opted out at) per (customer, channel), read 5,000 customers at a time
    (SQLite refuses statements with more than 32,766 parameters)."""
    found: dict[tuple[int, str], tuple[Any, Any]] = {}
    for start in range(0, len(customer_ids), 5000):
        rows = Consent.objects.filter(customer_id__in=customer_ids[start : start + 5000])
        for customer_id, channel, granted_at, opted_out_at in rows.values_list(
            "customer_id", "channel", "granted_at", "opted_out_at"
        ):
            found[(customer_id, channel)] = (granted_at, opted_out_at)
    return found


def _channel_at(
    channel: str,
    consents: dict[tuple[int, str], tuple[Any, Any]],
    customer_id: int,
    at: dt.datetime,
) -> tuple[str, str]:
    """(channel used, reason it was not sent) as the delivery worker would have decided."""

    def problem(kind: str) -> str:
        needed = CONSENT_FOR.get(kind)
        if needed is None:
            return ""
        granted_at, opted_out_at = consents.get((customer_id, needed), (None, None))
        if opted_out_at is not None and opted_out_at <= at:
            return OPTED_OUT
        if granted_at is None or granted_at > at:
            return NO_CONSENT
        return ""

    if channel != Channel.BEST:
        return channel, problem(channel)
    for candidate in BEST_ORDER:
        if not problem(candidate):
            return candidate, ""
    return "", NO_CONSENT


_MAIN_OF: dict[str, str] = {
    code: line.main.code
    for line in story.LINES.values()
    for code in (line.trial.code, line.main.code, line.subscription.code)
}
_CODE_OF: dict[int, str] = {p.id: p.code for p in story.CATALOGUE}


def _response_product(key: str, message: _Sent) -> str:
    if key in RESPONSE_PRODUCT:
        return RESPONSE_PRODUCT[key]
    for product_id in (message.cart_product_id, message.last_product_id):
        code = _CODE_OF.get(product_id or 0)
        if code in _MAIN_OF:
            return _MAIN_OF[code]
    return story.LINES["skincare"].main.code


def _write_orders(
    scenario: Scenario,
    step: ScenarioStep,
    orders: list[tuple[_Sent, dt.datetime, str]],
    *,
    now: dt.datetime,
) -> None:
    if not orders:
        return
    products = {p.code: p for p in Product.objects.filter(code__in={c for _, _, c in orders})}
    offer = step.offer
    built: list[tuple[Order, Any, dt.date]] = []
    for message, at, code in orders:
        product = products[code]
        discount = _discount(offer, product.price)
        shipping = (
            0
            if product.price >= story.FREE_SHIPPING_FROM or product.kind == ProductKind.TRIAL
            else story.SHIPPING_FEE
        )
        if offer is not None and offer.kind == "free_shipping":
            shipping = 0
        day = jst_date(at)
        delivered = day + dt.timedelta(days=2)
        order = Order(
            number=f"KZS-{scenario.pk:02d}-{message.enrollment_id:07d}",
            customer_id=message.customer_id,
            ordered_at=at,
            status=OrderStatus.DELIVERED if jst_at(delivered) < now else OrderStatus.RECEIVED,
            channel=SalesChannel.WEB,
            subtotal=product.price,
            discount=discount,
            shipping_fee=shipping,
            total=product.price - discount + shipping,
            payment_method="クレジットカード",
            source="demo",
        )
        built.append((order, product, delivered))
    Order.objects.bulk_create([o for o, _, _ in built], batch_size=2000)
    OrderLine.objects.bulk_create(
        [
            OrderLine(
                order=o,
                product=p,
                product_name=p.name,
                unit_price=p.price,
                quantity=1,
                amount=p.price,
            )
            for o, p, _ in built
        ],
        batch_size=2000,
    )
    shipped = [(o, d) for o, _, d in built if o.status == OrderStatus.DELIVERED]
    shipments = Shipment.objects.bulk_create(
        [
            Shipment(
                order=o, shipped_on=d - dt.timedelta(days=1), delivered_on=d, carrier="ヤマト運輸"
            )
            for o, d in shipped
        ],
        batch_size=2000,
    )
    timeline = [
        TimelineEvent(
            customer_id=o.customer_id,
            kind=TimelineKind.ORDER,
            title=f"注文 {o.number}(¥{o.total:,})",
            occurred_at=o.ordered_at,
            ref_entity=Order._meta.label,
            ref_id=o.pk,
            detail={"scenario": scenario.key},
        )
        for o, _, _ in built
    ]
    for shipment, (o, d) in zip(shipments, shipped, strict=True):
        timeline.append(
            TimelineEvent(
                customer_id=o.customer_id,
                kind=TimelineKind.SHIPMENT,
                title=f"出荷 {o.number}",
                occurred_at=jst_at(d - dt.timedelta(days=1), dt.time(12)),
                ref_entity=Shipment._meta.label,
                ref_id=shipment.pk,
            )
        )
        timeline.append(
            TimelineEvent(
                customer_id=o.customer_id,
                kind=TimelineKind.DELIVERY,
                title=f"お届け {o.number}",
                occurred_at=jst_at(d, dt.time(12)),
                ref_entity=Shipment._meta.label,
                ref_id=shipment.pk,
            )
        )
    TimelineEvent.objects.bulk_create(timeline, batch_size=2000)


def _discount(offer: Offer | None, price: int) -> int:
    if offer is None:
        return 0
    if offer.kind == "yen_off":
        return min(int(offer.value), price)
    if offer.kind == "percent_off":
        return price * int(offer.value) // 100
    return 0


__all__ = ["DEMO_SCENARIOS", "RESPONSE", "seed_demo_scenarios"]
