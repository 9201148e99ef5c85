"""Segments: a rule tree over customers, validated and compiled to ONE SQL query.

A rule tree is JSON:

    {"op": "and", "rules": [
        {"field": "prefecture", "operator": "in", "value": [13, 14]},
        {"op": "or", "rules": [
            {"field": "order_count", "operator": "gte", "value": 2},
            {"field": "cart_add", "operator": "within_days", "value": 7,
             "products": ["SK-MN-01"]}
        ]}
    ]}

Each condition compiles to a `Q` on Customer built from plain lookups, `Exists` and
`Subquery`, so a whole tree is one WHERE clause: counting, sampling, exporting and the
scheduler's audience checks each run as one statement, never a Python loop over customers.
Conditions are registered in `conditions()`; the analytics ones (CPM, RFM, P(alive), CLV on the
latest snapshot) appear only when the analytics app and its snapshot tables are installed.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from django.apps import apps
from django.core.exceptions import ValidationError
from django.db import connection, models, transaction
from django.db.models import Count, Exists, OuterRef, Q, QuerySet, Subquery, Sum, Value
from django.db.models.functions import Coalesce
from django.db.models.lookups import Exact, GreaterThanOrEqual, In, LessThanOrEqual

from kizuna.campaigns.automation.clock import JST, jst_at, jst_date, years_before
from kizuna.campaigns.automation.models import (
    MessageTemplate,
    Offer,
    Scenario,
    ScenarioStep,
    Segment,
    TriggerKind,
)
from kizuna.campaigns.automation.sqlfuncs import MonthOf
from kizuna.campaigns.consent_checks import gone_customers
from kizuna.commerce.models import Order, OrderLine, OrderStatus, Product, ProductKind
from kizuna.core import jp
from kizuna.core.audit import Actor, audit_record, audited_delete, diff
from kizuna.core.limits import TextLimit, too_long
from kizuna.core.spreadsheet import XLSX_MAX_ROWS
from kizuna.customers.models import (
    IDENTITY_NEWEST_FIRST,
    AcquisitionChannel,
    BehaviourEvent,
    BehaviourKind,
    Consent,
    ConsentChannel,
    Customer,
    Gender,
    Identity,
    IdentityKind,
    MemberStatus,
    Tag,
)
from kizuna.loyalty.models import PointEntry
from kizuna.loyalty.selectors import unspent_through
from kizuna.subscriptions.models import Subscription, SubscriptionStatus

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")  # the length is the column's (key_error)
NamedModel = TypeVar("NamedModel", Segment, MessageTemplate, Offer, Scenario)


def key_error(key: Any, model: type[models.Model], *, example: str, label: str = "") -> str | None:
    """What is wrong with a new 識別名 for `model` (a segment, scenario, step, template or
    offer), or None; `label` names whose key it is (「テンプレートの識別名は…」).

    A key too long for its column is told so: it was refused as 「半角英小文字・数字・ハイフン
    で」, which the key already was."""
    prefix = f"{label}の" if label else ""
    if isinstance(key, str) and (
        reason := TextLimit.of(model, "key").reason(key, ask="で入力してください")
    ):
        return prefix + reason
    if not isinstance(key, str) or not KEY_RE.match(key):
        return f"{prefix}識別名は半角英小文字・数字・ハイフンで入力してください(例: {example})"
    return None


def name_key(name: str) -> str:
    """A name as people tell names apart: 「ＱＡ　シナリオ」, 「qa シナリオ」 and 「QAシナリオ」
    are the same name in a list (full/half width by NFKC, case, and spaces: none counts,
    full-width U+3000 included, which NFKC makes a space)."""
    return "".join(unicodedata.normalize("NFKC", name).casefold().split())


def name_error(
    name: str, model: type[NamedModel], instance: NamedModel | None, *, label: str
) -> str | None:
    """Refuses a name another `model` row (a scenario, segment, template or offer) has, by
    name_key: the scenario editor's lists would show two identical labels. Checked only for a
    new name: two rows that shared a name before this rule can still be edited, each keeping
    its own; `label` names the kind (「シナリオ」)."""
    if not name or (instance is not None and name_key(name) == name_key(instance.name)):
        return None
    wanted = name_key(name)
    others = model._default_manager.all()
    if instance is not None:
        others = others.exclude(pk=instance.pk)
    for key, other in others.order_by("pk").values_list("key", "name"):
        if name_key(other) == wanted:
            return name_taken(name, label=label, other=other, key=key)
    return None


def name_taken(name: str, *, label: str, other: str, key: str) -> str:
    """Why `name` is refused: the {label} `other` (識別名 `key`) has it (name_error)."""
    return (
        f"名前「{name}」は既に{label}「{other}」(識別名 {key})で使われています。"
        "一覧や絞り込みで区別できるよう、別の名前にしてください"
    )


MAX_DEPTH = 4
MAX_CONDITIONS = 40
MAX_DAYS = 3650
# Beyond these a number overflows the database's integer and a date its calendar (500s).
MAX_NUMBER = 10**12
MAX_AGE = 150
FIRST_DATE, LAST_DATE = dt.date(1900, 1, 1), dt.date(2999, 12, 31)
# Orders that did not happen (cancelled before shipping, returned) never count as purchases.
VOID_ORDER = (OrderStatus.CANCELLED, OrderStatus.RETURNED)


class SegmentError(ValueError):
    """A rule tree that cannot be used; `messages` say what to fix, in Japanese."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


class Shape(enum.StrEnum):
    """What an operator's value looks like."""

    CHOICES = "choices"  # a non-empty list of choice keys
    NUMBER = "number"  # an integer ≥ 0
    RANGE = "range"  # [low, high]
    DAYS = "days"  # a number of days, 1–3650
    DATE_RANGE = "date_range"  # ["YYYY-MM-DD", "YYYY-MM-DD"]
    NONE = "none"  # no value


OPERATORS: dict[str, tuple[str, Shape]] = {
    "in": ("のいずれか", Shape.CHOICES),
    "not_in": ("のいずれでもない", Shape.CHOICES),
    "gte": ("以上", Shape.NUMBER),
    "lte": ("以下", Shape.NUMBER),
    "eq": ("ちょうど", Shape.NUMBER),
    "between": ("の範囲", Shape.RANGE),
    "within_days": ("過去N日以内", Shape.DAYS),
    "none_within_days": ("過去N日以内になし", Shape.DAYS),
    "before_days": ("N日以上前", Shape.DAYS),
    "next_days": ("今後N日以内", Shape.DAYS),
    "between_dates": ("期間を指定", Shape.DATE_RANGE),
    "exists": ("あり", Shape.NONE),
    "not_exists": ("なし", Shape.NONE),
}


@dataclass(frozen=True)
class Clock:
    """The moment a segment is evaluated at, and its Japanese date."""

    now: dt.datetime
    today: dt.date

    def midnight(self, day: dt.date) -> dt.datetime:
        return jst_at(day)


Compiler = Callable[[str, Any, "Condition", Mapping[str, Any], Clock], Q]


@dataclass(frozen=True)
class Condition:
    key: str
    label: str
    group: str
    operators: tuple[str, ...]
    compile: Compiler
    choices: Callable[[], list[tuple[str, str]]] | None = None
    unit: str = ""
    # Behaviour conditions may narrow to products: {"products": ["SK-MN-01", …]}.
    with_products: bool = False
    help: str = ""
    max_value: int = MAX_NUMBER

    def choice_list(self) -> list[tuple[str, str]]:
        return self.choices() if self.choices is not None else []


# --- compiling helpers ------------------------------------------------------------------------


def _valid_orders() -> QuerySet[Order]:
    return Order.objects.filter(customer=OuterRef("pk")).exclude(status__in=VOID_ORDER)


def _number_q(expression: Any, operator: str, value: Any) -> Q:
    if operator == "gte":
        return Q(GreaterThanOrEqual(expression, value))
    if operator == "lte":
        return Q(LessThanOrEqual(expression, value))
    if operator == "eq":
        return Q(Exact(expression, value))
    low, high = value
    return Q(GreaterThanOrEqual(expression, low)) & Q(LessThanOrEqual(expression, high))


def _number_filter(field_name: str, operator: str, value: Any) -> dict[str, Any]:
    if operator == "gte":
        return {f"{field_name}__gte": value}
    if operator == "lte":
        return {f"{field_name}__lte": value}
    if operator == "eq":
        return {field_name: value}
    return {f"{field_name}__range": (value[0], value[1])}


def _choice_q(lookup: str, operator: str, value: Sequence[Any]) -> Q:
    q = Q(**{f"{lookup}__in": list(value)})
    return q if operator == "in" else ~q


def _exists_q(queryset: QuerySet[Any], operator: str) -> Q:
    return Q(Exists(queryset)) if operator in ("in", "exists") else ~Q(Exists(queryset))


def _customer_in(rows: QuerySet[Any], customer: str, *, negate: bool) -> Q:
    """Customers with (or, `negate`, without) one of `rows`, whose `customer` is the customer's
    id: `pk IN (one uncorrelated SELECT)`, for tables that also have an index leading with what
    the condition filters on (kind and time, product, status and date).

    Without statistics SQLite runs a correlated EXISTS through that index for every customer
    instead of the customer's own index: minutes over 100,000 customers, where this reads the
    matching rows once. PostgreSQL plans an EXISTS well, and runs `NOT IN (SELECT …)` row by
    row once the ids outgrow its work_mem, so a negated condition stays NOT EXISTS there."""
    if negate and connection.vendor == "postgresql":
        return ~Q(Exists(rows.filter(**{customer: OuterRef("pk")})))
    q = Q(pk__in=rows.values(customer))
    return ~q if negate else q


def _date_bounds(operator: str, value: Any, clock: Clock) -> tuple[dt.date | None, dt.date | None]:
    """The JST dates (first, last) a date condition accepts, either end open."""
    if operator == "within_days":  # the last N days, today included
        return clock.today - dt.timedelta(days=value - 1), None
    if operator == "before_days":
        return None, clock.today - dt.timedelta(days=value)
    if operator == "next_days":
        return clock.today, clock.today + dt.timedelta(days=value)
    first, last = (dt.date.fromisoformat(v) for v in value)
    return first, last


def _moment_filter(field_name: str, operator: str, value: Any, clock: Clock) -> dict[str, Any]:
    first, last = _date_bounds(operator, value, clock)
    bounds: dict[str, Any] = {}
    if first is not None:
        bounds[f"{field_name}__gte"] = clock.midnight(first)
    if last is not None:
        bounds[f"{field_name}__lt"] = clock.midnight(last + dt.timedelta(days=1))
    return bounds


def _day_filter(field_name: str, operator: str, value: Any, clock: Clock) -> dict[str, Any]:
    first, last = _date_bounds(operator, value, clock)
    bounds: dict[str, Any] = {}
    if first is not None:
        bounds[f"{field_name}__gte"] = first
    if last is not None:
        bounds[f"{field_name}__lte"] = last
    return bounds


# --- profile ----------------------------------------------------------------------------------


def _simple_choice(lookup: str, cast: Callable[[str], Any] = str) -> Compiler:
    def compile_(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
        return _choice_q(lookup, op, [cast(v) for v in value])

    return compile_


def _age(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    # Age ≥ a ⇔ born on or before today a years ago; age ≤ b ⇔ born after today b+1 years ago.
    if op == "eq":
        low, high = value, value
    else:
        low, high = (value, None) if op == "gte" else (None, value) if op == "lte" else value
    q = Q(birthday__isnull=False)
    if low is not None:
        q &= Q(birthday__lte=years_before(clock.today, low))
    if high is not None:
        q &= Q(birthday__gt=years_before(clock.today, high + 1))
    return q


def _registered(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    return Q(**_moment_filter("registered_at", op, value, clock))


def _tags(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    through = Customer.tags.through.objects.filter(customer_id=OuterRef("pk"), tag__name__in=value)
    return _exists_q(through, op)


def _birthday_month(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    # Not `birthday__month`: Django extracts the month through Python for every customer on
    # SQLite (1.5 s over a million). The IS NOT NULL keeps what Django's negation gives:
    # "not in May" includes customers whose birthday is unknown.
    q = Q(In(MonthOf("birthday"), [int(v) for v in value])) & Q(birthday__isnull=False)
    return q if op == "in" else ~q


# --- consent ----------------------------------------------------------------------------------


def _consent(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    granted = Consent.objects.filter(customer=OuterRef("pk"), channel__in=value, granted=True)
    return _exists_q(granted, op)


# --- orders -----------------------------------------------------------------------------------


def _order_count(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    counted = _valid_orders().order_by().values("customer").annotate(n=Count("pk")).values("n")
    return _number_q(Coalesce(Subquery(counted), Value(0)), op, value)


def _order_total(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    summed = _valid_orders().order_by().values("customer").annotate(s=Sum("total")).values("s")
    return _number_q(Coalesce(Subquery(summed), Value(0)), op, value)


def _last_order(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    orders = _valid_orders()
    if op == "not_exists":
        return ~Q(Exists(orders))
    if op == "exists":
        return Q(Exists(orders))
    first, last = _date_bounds(op, value, clock)
    q = Q(Exists(orders))
    if first is not None:
        q &= Q(Exists(orders.filter(ordered_at__gte=clock.midnight(first))))
    if last is not None:
        q &= ~Q(Exists(orders.filter(ordered_at__gte=clock.midnight(last + dt.timedelta(1)))))
    return q


def _first_order(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    orders = _valid_orders()
    first, last = _date_bounds(op, value, clock)
    q = Q(Exists(orders))
    if first is not None:
        q &= ~Q(Exists(orders.filter(ordered_at__lt=clock.midnight(first))))
    if last is not None:
        q &= Q(Exists(orders.filter(ordered_at__lt=clock.midnight(last + dt.timedelta(1)))))
    return q


def _bought(lookup: str) -> Compiler:
    def compile_(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
        lines = OrderLine.objects.filter(**{f"{lookup}__in": value})
        bought = lines.exclude(order__status__in=VOID_ORDER)
        return _customer_in(bought, "order__customer_id", negate=op not in ("in", "exists"))

    return compile_


# --- subscriptions ----------------------------------------------------------------------------


def _subscription_status(
    op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock
) -> Q:
    return _exists_q(Subscription.objects.filter(customer=OuterRef("pk"), status__in=value), op)


def _deliveries(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    subs = Subscription.objects.filter(
        customer=OuterRef("pk"), **_number_filter("delivery_count", op, value)
    )
    return Q(Exists(subs))


def _next_delivery(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    subs = Subscription.objects.filter(
        status=SubscriptionStatus.ACTIVE,
        **_day_filter("next_delivery_on", op, value, clock),
    )
    return _customer_in(subs, "customer_id", negate=False)


# --- points -----------------------------------------------------------------------------------


def _balance_expression() -> Coalesce:
    latest = PointEntry.objects.filter(customer=OuterRef("pk")).order_by("-seq")
    return Coalesce(Subquery(latest.values("balance_after")[:1]), Value(0))


def _points_balance(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    return _number_q(_balance_expression(), op, value)


def _points_expiring(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
    # Points expiring in the window that the customer still holds: spending takes the
    # soonest-expiring points first (loyalty.selectors.unspent_through, the rule the
    # points-expiry trigger and its message follow), so points earned for that date but spent
    # since are not "expiring", even while later points keep the balance above zero.
    held = PointEntry.objects.filter(
        customer=OuterRef("pk"),
        amount__gt=0,
        **_day_filter("expires_on", op, value, clock),
    ).annotate(held=unspent_through(OuterRef("customer_id"), OuterRef("expires_on")))
    return Q(Exists(held.filter(held__gt=0)))


# --- behaviour --------------------------------------------------------------------------------


def _behaviour(kind: BehaviourKind) -> Compiler:
    def compile_(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
        since = clock.now - dt.timedelta(days=value)
        events = BehaviourEvent.objects.filter(kind=kind, occurred_at__gte=since)
        if rule.get("products"):
            events = events.filter(product__code__in=rule["products"])
        return _customer_in(events, "customer_id", negate=op != "within_days")

    return compile_


# --- choices ----------------------------------------------------------------------------------


def _str_choices(choices: Sequence[tuple[Any, str]]) -> Callable[[], list[tuple[str, str]]]:
    return lambda: [(str(value), label) for value, label in choices]


def _tag_choices() -> list[tuple[str, str]]:
    return [(name, name) for name in Tag.objects.values_list("name", flat=True)]


def product_choices() -> list[tuple[str, str]]:
    return [
        (code, f"{name}({code})")
        for code, name in Product.objects.order_by("code").values_list("code", "name")
    ]


MONTHS = [(str(m), f"{m}月") for m in range(1, 13)]
NUMBER_OPS = ("gte", "lte", "eq", "between")
DATE_OPS = ("within_days", "before_days", "between_dates")
CHOICE_OPS = ("in", "not_in")


def _core_conditions() -> list[Condition]:
    profile, consent, orders, subs, points, behaviour = (
        "プロフィール",
        "配信同意",
        "購入",
        "定期",
        "ポイント",
        "サイト行動",
    )
    behaviour_conditions = [
        Condition(
            key=kind.value,
            label=label,
            group=behaviour,
            operators=("within_days", "none_within_days"),
            compile=_behaviour(kind),
            with_products=True,
            unit="日",
        )
        for kind, label in (
            (BehaviourKind.PRODUCT_VIEW, "商品を閲覧"),
            (BehaviourKind.CART_ADD, "カートに追加"),
            (BehaviourKind.CHECKOUT_START, "購入手続きを開始"),
            (BehaviourKind.PAGE_VIEW, "サイトを訪問"),
        )
    ]
    return [
        Condition(
            "prefecture",
            "都道府県",
            profile,
            CHOICE_OPS,
            _simple_choice("prefecture", int),
            _str_choices(jp.PREFECTURE_CHOICES),
        ),
        Condition(
            "gender",
            "性別",
            profile,
            CHOICE_OPS,
            _simple_choice("gender"),
            _str_choices(Gender.choices),
        ),
        Condition("age", "年齢", profile, NUMBER_OPS, _age, unit="歳", max_value=MAX_AGE),
        Condition(
            "acquisition_channel",
            "獲得経路",
            profile,
            CHOICE_OPS,
            _simple_choice("acquisition_channel"),
            _str_choices(AcquisitionChannel.choices),
        ),
        Condition("registered", "登録日", profile, DATE_OPS, _registered, unit="日"),
        Condition("tags", "タグ", profile, CHOICE_OPS, _tags, _tag_choices),
        Condition(
            "member_status",
            "会員状態",
            profile,
            CHOICE_OPS,
            _simple_choice("member_status"),
            _str_choices(MemberStatus.choices),
        ),
        Condition("birthday_month", "誕生月", profile, CHOICE_OPS, _birthday_month, lambda: MONTHS),
        Condition(
            "consent",
            "配信同意",
            consent,
            CHOICE_OPS,
            _consent,
            _str_choices(ConsentChannel.choices),
            help="「のいずれか」はどれか1つでも同意あり、「のいずれでもない」はどれにも同意なし",
        ),
        Condition("order_count", "購入回数", orders, NUMBER_OPS, _order_count, unit="回"),
        Condition("order_total", "累計購入金額", orders, NUMBER_OPS, _order_total, unit="円"),
        Condition(
            "last_order", "最終購入日", orders, (*DATE_OPS, "not_exists"), _last_order, unit="日"
        ),
        Condition("first_order", "初回購入日", orders, DATE_OPS, _first_order, unit="日"),
        Condition(
            "bought_product",
            "購入した商品",
            orders,
            CHOICE_OPS,
            _bought("product__code"),
            product_choices,
        ),
        Condition(
            "bought_kind",
            "購入した商品区分",
            orders,
            CHOICE_OPS,
            _bought("product__kind"),
            _str_choices(ProductKind.choices),
        ),
        Condition(
            "subscription_status",
            "定期の状態",
            subs,
            CHOICE_OPS,
            _subscription_status,
            _str_choices(SubscriptionStatus.choices),
        ),
        Condition(
            "subscription_deliveries", "定期のお届け回数", subs, NUMBER_OPS, _deliveries, unit="回"
        ),
        Condition(
            "next_delivery",
            "次回お届け予定日",
            subs,
            ("next_days", "between_dates"),
            _next_delivery,
            unit="日",
        ),
        Condition("points_balance", "ポイント残高", points, NUMBER_OPS, _points_balance, unit="pt"),
        Condition(
            "points_expiring",
            "失効予定のポイント",
            points,
            ("next_days",),
            _points_expiring,
            unit="日",
        ),
        *behaviour_conditions,
    ]


# --- analytics (registered only when its snapshot tables exist) -------------------------------

# Columns of the analytics app's per-customer snapshot (kizuna.analytics CustomerScore) that
# segments may use: (label, value shape, unit). P(alive) is stored as 0–1 and entered in %.
ANALYTICS_FIELDS: dict[str, tuple[str, Shape, str]] = {
    "cpm_segment": ("CPMセグメント", Shape.CHOICES, ""),
    "rfm_segment": ("RFMセグメント", Shape.CHOICES, ""),
    "p_alive": ("生存確率 P(alive)", Shape.NUMBER, "%"),
    "clv_12m": ("予測LTV(12か月)", Shape.NUMBER, "円"),
}


@dataclass(frozen=True)
class SnapshotTables:
    """The analytics app's run and per-customer score models, and their segment labels."""

    run: type[models.Model]
    score: type[models.Model]
    done: str
    labels: dict[str, dict[str, str]]

    def latest_runs(self) -> QuerySet[Any]:
        """Finished runs whose per-customer rows are still kept, newest first."""
        runs = self.run._default_manager.filter(status=self.done, customer_rows_kept=True)
        return runs.order_by("-as_of", "-id")

    def latest_scores(self, customer: str = "pk") -> QuerySet[Any]:
        """Score rows of the newest such run, for the outer query's customer."""
        newest = self.latest_runs().values("pk")[:1]
        return self.score._default_manager.filter(customer=OuterRef(customer), run=Subquery(newest))


def analytics_snapshot() -> SnapshotTables | None:
    """The analytics snapshot tables, or None while the analytics app is not installed."""
    if not apps.is_installed("kizuna.analytics"):
        return None
    try:
        from kizuna.analytics.models import AnalyticsRun, CustomerScore, RunStatus
        from kizuna.analytics.pipeline.segments import CPM_SEGMENTS, RFM_SEGMENTS
    except ImportError:
        return None
    return SnapshotTables(
        run=AnalyticsRun,
        score=CustomerScore,
        done=RunStatus.DONE.value,
        labels={"cpm_segment": dict(CPM_SEGMENTS), "rfm_segment": dict(RFM_SEGMENTS)},
    )


def _fixed_choices(choices: Mapping[str, str]) -> Callable[[], list[tuple[str, str]]]:
    return lambda: list(choices.items())


def _analytics_compiler(tables: SnapshotTables, name: str) -> Compiler:
    def compile_(op: str, value: Any, c: Condition, rule: Mapping[str, Any], clock: Clock) -> Q:
        rows = tables.latest_scores()
        if op in CHOICE_OPS:
            return _exists_q(rows.filter(**{f"{name}__in": value}), op)
        if name == "p_alive":
            value = [v / 100 for v in value] if isinstance(value, list) else value / 100
        return Q(Exists(rows.filter(**_number_filter(name, op, value))))

    return compile_


def _analytics_conditions(tables: SnapshotTables) -> list[Condition]:
    result = []
    for name, (label, shape, unit) in ANALYTICS_FIELDS.items():
        choices = tables.labels.get(name, {})
        result.append(
            Condition(
                key=name,
                label=label,
                group="分析(最新のスナップショット)",
                operators=CHOICE_OPS if shape == Shape.CHOICES else ("gte", "lte", "between"),
                compile=_analytics_compiler(tables, name),
                choices=_fixed_choices(choices) if shape == Shape.CHOICES else None,
                unit=unit,
                # A percentage above 100 is no probability: it matched nobody, silently.
                max_value=100 if unit == "%" else MAX_NUMBER,
            )
        )
    return result


def conditions() -> dict[str, Condition]:
    """Every condition a rule may use right now, by key, in menu order."""
    found = _core_conditions()
    tables = analytics_snapshot()
    if tables is not None:
        found.extend(_analytics_conditions(tables))
    return {c.key: c for c in found}


ANALYTICS_PENDING_NOTE = (
    "分析(CPM・RFM・P(alive)・予測LTV)の条件は、分析アプリが導入されると使えるようになります。"
)


# --- validation -------------------------------------------------------------------------------


@dataclass
class _Checker:
    registry: dict[str, Condition]
    errors: list[str] = field(default_factory=list)
    count: int = 0
    # Choices that live in the database are read once per validation, not per condition.
    _choice_cache: dict[str, set[str]] = field(default_factory=dict)

    def choices(self, condition: Condition) -> set[str]:
        if condition.key not in self._choice_cache:
            self._choice_cache[condition.key] = {k for k, _ in condition.choice_list()}
        return self._choice_cache[condition.key]

    def node(self, node: Any, where: str, depth: int) -> None:
        if not isinstance(node, dict):
            self.errors.append(f"{where}: 条件の形式が正しくありません")
            return
        if "rules" in node or "op" in node:
            self.group(node, where, depth)
        else:
            self.condition(node, where)

    def group(self, node: Mapping[str, Any], where: str, depth: int) -> None:
        if depth > MAX_DEPTH:
            self.errors.append(f"{where}: グループの入れ子は{MAX_DEPTH}段までです")
            return
        if node.get("op") not in ("and", "or"):
            self.errors.append(f"{where}: 「すべて(AND)」か「いずれか(OR)」を選んでください")
        rules = node.get("rules")
        if not isinstance(rules, list) or not rules:
            self.errors.append(f"{where}: 条件を1つ以上追加してください")
            return
        for index, child in enumerate(rules, start=1):
            self.node(child, f"{where} > {index}", depth + 1)

    def condition(self, node: Mapping[str, Any], where: str) -> None:
        self.count += 1
        key = node.get("field")
        condition = self.registry.get(str(key))
        if condition is None:
            if key in ANALYTICS_FIELDS:
                self.errors.append(f"{where}: {ANALYTICS_PENDING_NOTE}")
            else:
                self.errors.append(f"{where}: 項目を選んでください")
            return
        where = f"{where}({condition.label})"
        operator = node.get("operator")
        if operator not in condition.operators:
            self.errors.append(f"{where}: 条件の種類を選んでください")
            return
        message = self.value(condition, OPERATORS[operator][1], node.get("value"))
        if message:
            self.errors.append(f"{where}: {message}")
        products = node.get("products")
        if products:
            if not condition.with_products or not isinstance(products, list):
                self.errors.append(f"{where}: 商品の指定が正しくありません")
            else:
                known = {k for k, _ in product_choices()}
                unknown = [p for p in products if p not in known]
                if unknown:
                    self.errors.append(f"{where}: 登録されていない商品です: {', '.join(unknown)}")

    def value(self, condition: Condition, shape: Shape, value: Any) -> str:
        if shape == Shape.NONE:
            return ""
        if shape == Shape.CHOICES:
            if not isinstance(value, list) or not value:
                return "1つ以上選んでください"
            unknown = [str(v) for v in value if str(v) not in self.choices(condition)]
            return f"選べない値です: {', '.join(unknown)}" if unknown else ""
        if shape in (Shape.NUMBER, Shape.DAYS):
            return _number_error(shape, value, condition)
        if shape == Shape.RANGE:
            return _range_error(value, condition)
        return _date_range_error(value)


def _allowed(condition: Condition) -> str:
    """The values a number condition takes, as its message names them: 0〜150, 0〜100%."""
    return f"0〜{condition.max_value:,}{'%' if _percent(condition) else ''}"


def _percent(condition: Condition) -> bool:
    return condition.unit == "%"


def _number_error(shape: Shape, value: Any, condition: Condition) -> str:
    if shape == Shape.DAYS and not (_is_int(value) and 1 <= value <= MAX_DAYS):
        # One message naming the whole range: "0以上" first, then "1〜" for 0, misled.
        return f"日数は1〜{MAX_DAYS}の整数で入力してください"
    # A percentage names its whole range: "0以上" told someone typing 0.5 (a probability) or
    # -1 nothing, since the limit they missed is the 100.
    if (not _is_int(value) or value < 0) and not _percent(condition):
        return "0以上の整数を入力してください"
    if not _is_int(value) or not 0 <= value <= condition.max_value:
        return f"{_allowed(condition)}の整数で入力してください"
    return ""


def _range_error(value: Any, condition: Condition) -> str:
    if not isinstance(value, list) or len(value) != 2:
        return "範囲の始まりと終わりを入力してください"
    if not all(_is_int(v) and v >= 0 for v in value):
        return f"範囲は{_allowed(condition) if _percent(condition) else '0以上'}の整数で入力してください"
    if any(v > condition.max_value for v in value):
        return f"範囲は{_allowed(condition)}の整数で入力してください"
    if value[0] > value[1]:
        return "下限が上限より大きくなっています"
    return ""


def _date_range_error(value: Any) -> str:
    """Each way a 期間 can be wrong named on its own: a well-formed date that is out of range
    or after the end date is not a format error."""
    dates = _period(value)
    if isinstance(dates, str):
        return dates
    first, last = dates
    if not (FIRST_DATE <= first <= LAST_DATE and FIRST_DATE <= last <= LAST_DATE):
        return f"日付は {FIRST_DATE}〜{LAST_DATE} の間で入力してください"
    if first > last:
        return "開始日が終了日より後です"
    return ""


def _period(value: Any) -> tuple[dt.date, dt.date] | str:
    """The two dates of a 期間, or what keeps them from being read."""
    if not isinstance(value, list) or len(value) != 2 or not all(value):
        return "開始日と終了日を入力してください"
    if any(isinstance(v, dt.date) for v in value):
        # A scenario file's unquoted 2026-01-01 reads as a YAML date, which the rule tree
        # (JSON) cannot store: saving it failed with a message about lists and mappings.
        return "日付は文字で書いてください(YAML では '2026-01-01' のように引用符で囲みます)"
    if all(isinstance(v, str) for v in value):
        try:
            return dt.date.fromisoformat(value[0]), dt.date.fromisoformat(value[1])
        except ValueError:
            pass
    return "日付は YYYY-MM-DD の形で入力してください"


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_rules(rules: Any) -> list[str]:
    """What is wrong with a rule tree, as Japanese messages naming the place ([] when fine)."""
    if not isinstance(rules, dict):
        return ["条件の形式が正しくありません(JSONのオブジェクトにしてください)"]
    checker = _Checker(conditions())
    checker.group(rules, "条件", 1)
    if checker.count > MAX_CONDITIONS:
        checker.errors.append(f"条件は{MAX_CONDITIONS}個までです")
    return checker.errors


# --- compiling --------------------------------------------------------------------------------


def _compile_node(node: Mapping[str, Any], registry: dict[str, Condition], clock: Clock) -> Q:
    if "rules" in node:
        parts = [_compile_node(child, registry, clock) for child in node["rules"]]
        combined = parts[0]
        for part in parts[1:]:
            combined = combined & part if node["op"] == "and" else combined | part
        return combined
    condition = registry[node["field"]]
    return condition.compile(node["operator"], node.get("value"), condition, node, clock)


def clock_at(now: dt.datetime) -> Clock:
    return Clock(now=now, today=jst_date(now))


def compile_rules(rules: Mapping[str, Any], *, now: dt.datetime) -> Q:
    """The rule tree as one Q on Customer; raises SegmentError when it is not valid."""
    errors = validate_rules(rules)
    if errors:
        raise SegmentError(errors)
    return _compile_node(rules, conditions(), clock_at(now))


def _live() -> QuerySet[Customer]:
    """Customers not merged away. Written as NOT (… IS NOT NULL) so that SQLite, which has no
    statistics, does not search the merged_into index for it: nearly every customer matches,
    and reading all of them through that index (a million at 1M customers) costs more than the
    rules' own index or a plain scan. PostgreSQL plans both spellings alike."""
    return Customer.objects.filter(~Q(merged_into__isnull=False))


def segment_customers(rules: Mapping[str, Any], *, now: dt.datetime) -> QuerySet[Customer]:
    """The customers the rules select: live records only (not merged away)."""
    return _live().filter(compile_rules(rules, now=now))


def compile_validated(rules: Mapping[str, Any], *, now: dt.datetime) -> Q:
    """compile_rules for a tree already validated (saved segments): no validation queries."""
    return _compile_node(rules, conditions(), clock_at(now))


def members(rules: Mapping[str, Any], *, now: dt.datetime) -> QuerySet[Customer]:
    """segment_customers for a saved (already validated) rule tree: no validation queries."""
    return _live().filter(compile_validated(rules, now=now))


EMPTY_RULES: dict[str, Any] = {"op": "and", "rules": []}


def describe(rules: Mapping[str, Any]) -> str:
    """A rule tree in one line of Japanese, for lists and audit rows."""
    if not rules.get("rules"):
        return "全顧客"
    return _describe_node(rules, conditions())


def _describe_node(node: Mapping[str, Any], registry: dict[str, Condition]) -> str:
    if "rules" in node:
        joiner = " かつ " if node.get("op") == "and" else " または "
        inner = joiner.join(_describe_node(child, registry) for child in node["rules"])
        return f"({inner})" if len(node["rules"]) > 1 else inner
    condition = registry.get(str(node.get("field")))
    if condition is None:
        return "(使えない条件)"
    label, shape = OPERATORS.get(str(node.get("operator")), ("", Shape.NONE))
    value = node.get("value")
    if shape == Shape.CHOICES and isinstance(value, list):
        names = dict(condition.choice_list())
        shown = "・".join(names.get(str(v), str(v)) for v in value)
        text = f"{condition.label}が{shown}{label}"
    elif shape == Shape.DATE_RANGE and isinstance(value, list):
        # A period is two dates, not a count of days: 登録日が2026年1月1日〜2026年2月1日.
        text = f"{condition.label}が{_date_words(value[0])}〜{_date_words(value[1])}"
    elif shape == Shape.RANGE and isinstance(value, list):
        text = f"{condition.label}が{value[0]}〜{value[1]}{condition.unit}"
    elif shape == Shape.DAYS:
        text = f"{condition.label}: {label.replace('N', str(value))}"
    elif shape == Shape.NONE:
        text = f"{condition.label}{label}"
    else:
        text = f"{condition.label}が{value}{condition.unit}{label}"
    if node.get("products"):
        text += f"(商品: {'・'.join(node['products'])})"
    return text


def _date_words(value: Any) -> str:
    """A rule's date as staff write it (2026年1月1日); left as stored if it is not one."""
    try:
        day = dt.date.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return jp.format_date(day)


# --- services ---------------------------------------------------------------------------------


@transaction.atomic
def segment_save(
    *,
    segment: Segment | None,
    key: str,
    name: str,
    description: str,
    rules: dict[str, Any],
    acting_user: Any,
    check_name: bool = True,
) -> Segment:
    """Create or change a segment. Refuses (SegmentError) rules that do not validate.
    `check_name=False`: the caller checked the name against the final state of a scenario file
    (yaml_io), where two segments may swap names."""
    errors = validate_rules(rules)
    if not name.strip():
        errors.insert(0, "名前を入力してください")
    errors[:0] = too_long(Segment, name=name.strip())
    if segment is None:
        if message := key_error(key, Segment, example="trial-buyers"):
            errors.insert(0, message)
        elif Segment.objects.filter(key=key).exists():
            errors.insert(0, f"識別名「{key}」のセグメントは既にあります")
    if check_name and (message := name_error(name.strip(), Segment, segment, label="セグメント")):
        errors.insert(0, message)
    if errors:
        raise SegmentError(errors)
    actor = Actor.of(acting_user)
    before = {} if segment is None else _segment_values(segment)
    if segment is None:
        segment = Segment(key=key, created_by_id=actor.user_id)
    segment.name = name.strip()
    segment.description = description.strip()
    segment.rules = rules
    segment.save()
    audit_record(
        actor=actor,
        action="segment.create" if not before else "segment.update",
        instance=segment,
        customer_id=None,
        changes=diff(before, _segment_values(segment)),
    )
    return segment


def _segment_values(segment: Segment) -> dict[str, Any]:
    return {
        "name": segment.name,
        "description": segment.description,
        "rules": describe(segment.rules),
    }


# --- deleting ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SegmentUse:
    scenario: Scenario
    places: list[str]


def segment_uses(segment: Segment) -> list[SegmentUse]:
    """The scenarios that read this segment, and where: as the audience, as a step's send
    condition, or in a "segment entered" trigger. The trigger names the segment by its key in
    the trigger's settings, which no foreign key protects: deleted from under it, the scenario
    would fail at every scheduler run."""
    conditions: dict[int, list[str]] = {}
    for scenario_id, step_key in (
        ScenarioStep.objects.filter(condition=segment)
        .order_by("position", "pk")
        .values_list("scenario_id", "key")
    ):
        conditions.setdefault(scenario_id, []).append(step_key)
    scenarios = Scenario.objects.filter(
        Q(audience=segment)
        | Q(pk__in=list(conditions))
        | Q(trigger_kind=TriggerKind.SEGMENT_ENTERED, trigger_params__segment=segment.key)
    ).order_by("name", "pk")
    uses = []
    for scenario in scenarios:
        places = []
        if scenario.trigger_kind == TriggerKind.SEGMENT_ENTERED and (
            scenario.trigger_params.get("segment") == segment.key
        ):
            places.append(f"きっかけ「{TriggerKind.SEGMENT_ENTERED.label}」")
        if scenario.audience_id == segment.pk:
            places.append("対象セグメント")
        places += [f"ステップ「{key}」の送信条件" for key in conditions.get(scenario.pk, [])]
        uses.append(SegmentUse(scenario, places))
    return uses


@transaction.atomic
def segment_delete(*, segment: Segment, acting_user: Any) -> None:
    """Delete a segment no scenario uses, leaving an audit row of what it was. Refuses
    (SegmentError, naming the scenarios) one that is still used: its foreign keys PROTECT it,
    but a trigger's reference would not stop the delete."""
    uses = segment_uses(segment)
    if uses:
        names = "、".join(f"「{use.scenario.name}」({'・'.join(use.places)})" for use in uses)
        raise SegmentError(
            [
                f"セグメント「{segment.name}」は次のシナリオで使われているため削除できません: "
                f"{names}。先にシナリオの設定からこのセグメントを外してください。"
            ]
        )
    audited_delete(
        actor=Actor.of(acting_user),
        action="segment.delete",
        instance=segment,
        values={"key": segment.key, **_segment_values(segment)},
    )


EXPORT_HEADER = (
    "顧客ID",
    "姓",
    "名",
    "セイ",
    "メイ",
    "メールアドレス",
    "電話番号",
    "郵便番号",
    "都道府県",
    "住所1",
    "住所2",
    "会員状態",
    "登録日",
)


def segment_export_rows(
    *, segment: Segment, now: dt.datetime, acting_user: Any, file_format: str = "csv"
) -> Iterator[list[str]]:
    """The segment's members as rows for a CSV or Excel file (header first), read in chunks
    from one query. Erased (anonymised) records are left out, as on the paper lists.

    The export itself is recorded in the audit log before the first row is produced
    (RELIABILITY D3): who took which segment, when, in which format, and how many customers
    it held. A segment larger than an Excel sheet is refused for Excel (ValidationError, on
    the first row) rather than cut short.
    """
    # An erased record stays a member for counts and scenarios, where it is 退会 and gets no
    # marketing; exported it would be a row without name or address (merged-away records are
    # never members).
    members = segment_customers(segment.rules, now=now).exclude(gone_customers())
    size = members.count()
    if file_format == "xlsx" and size > XLSX_MAX_ROWS:
        raise ValidationError(
            f"Excelの1シートに入るのは{XLSX_MAX_ROWS:,}人までです(このセグメントは{size:,}人)。"
            "CSVで書き出してください"
        )
    audit_record(
        actor=Actor.of(acting_user),
        action="segment.export",
        instance=segment,
        customer_id=None,
        changes={
            "rows": [None, size],
            "rules": [None, describe(segment.rules)],
            "format": [None, file_format],
        },
    )

    def sent_to(kind: IdentityKind) -> Subquery:
        # The address messages go to (IDENTITY_NEWEST_FIRST), as a mailing tool needs it.
        found = Identity.objects.filter(customer=OuterRef("pk"), kind=kind).order_by(
            *IDENTITY_NEWEST_FIRST
        )
        return Subquery(found.values("display_value")[:1])

    rows = (
        members.order_by("pk")
        .annotate(
            email=sent_to(IdentityKind.EMAIL),
            phone=sent_to(IdentityKind.PHONE),
        )
        .values_list(
            "pk",
            "family_name",
            "given_name",
            "family_kana",
            "given_kana",
            "email",
            "phone",
            "postal_code",
            "prefecture",
            "address1",
            "address2",
            "member_status",
            "registered_at",
        )
    )
    statuses = dict(MemberStatus.choices)
    yield list(EXPORT_HEADER)
    for row in rows.iterator(chunk_size=2000):
        (pk, fam, given, fkana, gkana, email, phone, postal, pref, a1, a2, status, reg) = row
        yield [
            str(pk),
            fam,
            given,
            fkana,
            gkana,
            email or "",
            phone or "",
            # 573-1259, as the postal DM list and the customer page write it
            jp.format_postal_code(postal),
            jp.PREFECTURES[pref - 1] if pref else "",
            a1,
            a2,
            statuses.get(status, status),
            f"{reg.astimezone(JST):%Y-%m-%d}",
        ]


__all__ = [
    "OPERATORS",
    "Clock",
    "Condition",
    "SegmentError",
    "SegmentUse",
    "Shape",
    "compile_rules",
    "conditions",
    "describe",
    "members",
    "name_error",
    "name_key",
    "segment_customers",
    "segment_delete",
    "segment_export_rows",
    "segment_save",
    "segment_uses",
    "validate_rules",
]
