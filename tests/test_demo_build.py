"""The demo data builder: reproducible, internally consistent, and telling the shop's story.

One build of 1,500 customers is shared by the TestStory class (rolled back afterwards); the
reproducibility tests make their own small builds, each rolled back before the next.
"""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import itertools
import statistics
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.db import models, transaction
from django.db.models import Count, F, Max, Min, Sum

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
from kizuna.core import jp
from kizuna.core.models import AuditLog
from kizuna.customers.models import (
    AcquisitionChannel,
    BehaviourEvent,
    BehaviourKind,
    Consent,
    ConsentChannel,
    ConsentEvent,
    Customer,
    Identity,
    IdentityKind,
    TimelineEvent,
)
from kizuna.demo import geo, story
from kizuna.demo.build import DemoDatabaseNotEmptyError, DemoSummary, build_demo
from kizuna.demo.plan import Calendar
from kizuna.demo.simulate import customer_rng, simulate_customer
from kizuna.loyalty.models import PointEntry, PointKind
from kizuna.subscriptions.models import (
    DeliveryStatus,
    Subscription,
    SubscriptionDelivery,
    SubscriptionStatus,
)
from kizuna.support.models import Contact
from tests.factories import make_customer, make_product

JST = ZoneInfo("Asia/Tokyo")
AS_OF = dt.date(2025, 6, 30)
CUTOFF = dt.datetime(2025, 7, 1, tzinfo=JST)  # the first moment after as_of
FIRST_DAY = dt.date(2022, 7, 1)

# The columns that carry the data (created_at/updated_at record when rows were written).
DIGEST: tuple[tuple[type[models.Model], tuple[str, ...]], ...] = (
    (Customer, ("id", "family_name", "given_name", "family_kana", "given_kana", "company",
                "postal_code", "prefecture", "address1", "address2", "birthday", "gender",
                "acquisition_channel", "registered_at", "member_status", "notes")),
    (Customer.tags.through, ("customer_id", "tag_id")),
    (Identity, ("id", "customer_id", "kind", "value", "display_value")),
    (Consent, ("id", "customer_id", "channel", "granted", "granted_at", "opted_out_at")),
    (ConsentEvent, ("id", "customer_id", "channel", "action", "at", "method")),
    (Order, ("id", "number", "customer_id", "ordered_at", "status", "channel", "subtotal",
             "discount", "shipping_fee", "points_used", "total", "payment_method")),
    (OrderLine, ("id", "order_id", "product_id", "quantity", "amount")),
    (Shipment, ("id", "order_id", "shipped_on", "delivered_on", "carrier", "tracking_number")),
    (OrderReversal, ("id", "order_id", "kind", "occurred_at", "refund_amount")),
    (Subscription, ("id", "customer_id", "status", "started_on", "next_delivery_on",
                    "delivery_count", "cancelled_on", "cancel_reason")),
    (SubscriptionDelivery, ("id", "subscription_id", "sequence", "scheduled_on", "status",
                            "order_id")),
    (PointEntry, ("id", "customer_id", "seq", "kind", "amount", "balance_after", "occurred_at")),
    (Contact, ("id", "customer_id", "occurred_at", "reason", "summary")),
    (BehaviourEvent, ("id", "customer_id", "kind", "occurred_at", "product_id")),
    (TimelineEvent, ("id", "customer_id", "occurred_at", "kind", "title", "ref_entity", "ref_id")),
)  # fmt: skip


def _digest() -> str:
    digest = hashlib.sha256()
    for model, columns in DIGEST:
        for row in model._default_manager.order_by("pk").values_list(*columns).iterator():
            digest.update(repr(row).encode())
    return digest.hexdigest()


def _build_and_digest(**options: Any) -> tuple[DemoSummary, str]:
    """Build, fingerprint the data, and roll the build back."""
    with transaction.atomic():
        summary = build_demo(**{"as_of": AS_OF, **options})
        digest = _digest()
        transaction.set_rollback(True)
    return summary, digest


def _jst_date(value: dt.datetime) -> dt.date:
    return value.astimezone(JST).date()


# --- Reproducibility and safety ------------------------------------------------------------------


@pytest.mark.django_db
def test_same_seed_and_day_give_identical_data_whatever_the_chunk_size() -> None:
    summary, digest = _build_and_digest(customers=300, seed=7, chunk_size=300)
    again = _build_and_digest(customers=300, seed=7, chunk_size=64)
    assert again == (summary, digest)
    assert summary.customers == 300
    assert summary.orders > 300


@pytest.mark.django_db
def test_another_seed_or_day_gives_other_data() -> None:
    _, digest = _build_and_digest(customers=200, seed=7)
    _, other_seed = _build_and_digest(customers=200, seed=8)
    _, other_day = _build_and_digest(customers=200, seed=7, as_of=AS_OF - dt.timedelta(days=1))
    assert len({digest, other_seed, other_day}) == 3


@pytest.mark.django_db
def test_refuses_to_build_into_a_database_that_has_customers() -> None:
    make_customer()
    with pytest.raises(DemoDatabaseNotEmptyError, match="空のデータベース"):
        build_demo(customers=10, as_of=AS_OF)
    assert Customer.objects.count() == 1
    assert not Product.objects.exists()


@pytest.mark.django_db
def test_refuses_to_build_next_to_an_existing_catalogue() -> None:
    make_product()
    with pytest.raises(DemoDatabaseNotEmptyError, match=r"commerce\.Product"):
        build_demo(customers=10, as_of=AS_OF)
    assert not Customer.objects.exists()


@pytest.mark.django_db
def test_rows_read_back_as_the_story_wrote_them() -> None:
    # The builder writes plain tuples past the ORM: times must land as the same instants (not
    # shifted by the JST offset), JSON must read back as objects, and the columns the builder
    # leaves out must hold their model defaults.
    build_demo(customers=20, seed=3, as_of=AS_OF)
    cal = Calendar(AS_OF)
    for index, customer in enumerate(Customer.objects.order_by("pk")):
        story = simulate_customer(customer_rng(3, index), cal, index, customer.pk)
        assert customer.registered_at == story.profile.registered_at
        # Lookups compare stored values: on SQLite they must be in Django's UTC form.
        assert Customer.objects.get(registered_at=story.profile.registered_at) == customer
        assert customer.birthday == story.profile.birthday
        assert customer.name_key == jp.name_key(customer.family_name + customer.given_name)
        assert customer.merged_into_id is None
        assert customer.created_at is not None
        orders = list(Order.objects.filter(customer=customer).order_by("ordered_at", "id"))
        assert [o.ordered_at for o in orders] == [o.at for o in story.orders]
        entry = TimelineEvent.objects.get(ref_entity="commerce.Order", ref_id=orders[0].pk)
        assert entry.detail == {"total": orders[0].total, "channel": orders[0].channel}
    assert not Customer.objects.exclude(created_at=F("updated_at")).exists()


def test_landline_prefixes_cannot_produce_the_same_number() -> None:
    # All fixed-line numbers have nine national digits, so none may start another's prefix.
    prefixes = {line.prefix for line in geo.LANDLINES.values()}
    for a, b in itertools.permutations(prefixes, 2):
        assert not b.startswith(a), (a, b)
    for prefecture, municipalities in geo.MUNICIPALITIES.items():
        for municipality in municipalities:
            assert geo.postal3_is_plausible(prefecture, municipality.postal3), municipality


# --- The story -----------------------------------------------------------------------------------


@pytest.fixture(scope="class")
def demo(django_db_setup: None, django_db_blocker: Any) -> Iterator[DemoSummary]:
    """One build for the whole class, rolled back when the class is done."""
    with django_db_blocker.unblock(), transaction.atomic():
        yield build_demo(customers=1_500, seed=42, as_of=AS_OF, chunk_size=500)
        transaction.set_rollback(True)


@pytest.mark.django_db
@pytest.mark.usefixtures("demo")
class TestStory:
    def test_summary_counts_the_rows_written(self, demo: DemoSummary) -> None:
        assert demo.customers == Customer.objects.count() == 1_500
        assert demo.orders == Order.objects.count()
        assert demo.order_lines == OrderLine.objects.count()
        assert demo.subscriptions == Subscription.objects.count() > 0
        assert demo.deliveries == SubscriptionDelivery.objects.count()
        assert demo.point_entries == PointEntry.objects.count()
        assert demo.timeline_events == TimelineEvent.objects.count()
        assert demo.audit_logs == AuditLog.objects.count()
        assert demo.products == Product.objects.count() >= 10

    def test_new_rows_after_the_build_get_fresh_ids(self) -> None:
        # On PostgreSQL the build resets the sequences it bypassed with explicit ids.
        top = Customer.objects.aggregate(top=Max("id"))["top"]
        assert make_customer().pk > top

    # Funnel -------------------------------------------------------------------------------------

    def test_f2_conversion_is_realistic_and_differs_by_channel_and_first_product(self) -> None:
        orders = dict(Customer.objects.annotate(n=Count("orders")).values_list("id", "n"))
        channel = dict(Customer.objects.values_list("id", "acquisition_channel"))
        first_kind = _first_product_kinds()
        repeat: dict[int, bool] = {cid: n >= 2 for cid, n in orders.items()}

        def rate(ids: list[int]) -> float:
            return sum(repeat[cid] for cid in ids) / len(ids)

        assert 0.20 <= rate(list(repeat)) <= 0.40
        by_channel = {
            ch: rate([cid for cid in repeat if channel[cid] == ch])
            for ch in (
                AcquisitionChannel.PAPER,
                AcquisitionChannel.PHONE,
                AcquisitionChannel.AFFILIATE,
            )
        }
        assert by_channel[AcquisitionChannel.PAPER] > 1.8 * by_channel[AcquisitionChannel.AFFILIATE]
        assert by_channel[AcquisitionChannel.PHONE] > 1.8 * by_channel[AcquisitionChannel.AFFILIATE]
        trial = rate([cid for cid, kind in first_kind.items() if kind == ProductKind.TRIAL])
        main = rate([cid for cid, kind in first_kind.items() if kind == ProductKind.MAIN])
        assert main > trial + 0.05

    def test_trial_buyers_move_up_to_the_main_product(self) -> None:
        first_kind = _first_product_kinds()
        trial_buyers = [cid for cid, kind in first_kind.items() if kind == ProductKind.TRIAL]
        upgraded = set(
            OrderLine.objects.filter(
                order__customer_id__in=trial_buyers,
                product__kind__in=[ProductKind.MAIN, ProductKind.SUBSCRIPTION],
            ).values_list("order__customer_id", flat=True)
        )
        assert 0.10 <= len(upgraded) / len(trial_buyers) <= 0.40

    def test_most_second_purchases_come_within_one_to_three_months(self) -> None:
        gaps = []
        for _, orders in itertools.groupby(
            Order.objects.order_by("customer_id", "ordered_at").values_list(
                "customer_id", "ordered_at"
            ),
            key=lambda row: row[0],
        ):
            times = [at for _, at in orders]
            if len(times) >= 2:
                gaps.append((times[1] - times[0]).days)
        assert 30 <= statistics.median(gaps) <= 90
        assert sum(gap <= 120 for gap in gaps) / len(gaps) > 0.8

    def test_some_customers_become_loyal_and_many_lapse(self) -> None:
        spend = (
            Order.objects.exclude(status__in=[OrderStatus.CANCELLED, OrderStatus.RETURNED])
            .values("customer_id")
            .annotate(total=Sum("total"), first=Min("ordered_at"), last=Max("ordered_at"))
        )
        loyal = [r for r in spend if r["total"] > 70_000 and (r["last"] - r["first"]).days >= 210]
        assert loyal
        single = Customer.objects.annotate(n=Count("orders")).filter(n=1).count()
        assert single / Customer.objects.count() > 0.5

    def test_acquisition_and_orders_peak_at_year_end(self) -> None:
        def per_day(months: set[int], values: Any) -> float:
            days = sum(1 for d in _days() if d.month in months)
            return sum(1 for at in values if _jst_date(at).month in months) / days

        registered = list(Customer.objects.values_list("registered_at", flat=True))
        assert per_day({11, 12}, registered) > 1.3 * per_day({2, 8}, registered)
        ordered = list(Order.objects.values_list("ordered_at", flat=True))
        assert per_day({12}, ordered) > 1.3 * per_day({8}, ordered)

    # Subscriptions --------------------------------------------------------------------------------

    def test_subscription_continuation_falls_with_each_delivery(self) -> None:
        counts = list(Subscription.objects.values_list("delivery_count", flat=True))
        reached = [sum(c >= n for c in counts) / len(counts) for n in range(1, 9)]
        assert reached[0] > 0.95
        assert reached[1] > reached[3] > reached[7]
        assert reached == sorted(reached, reverse=True)

    def test_cancellations_spike_when_the_commitment_ends(self) -> None:
        ended = collections.Counter(
            Subscription.objects.filter(
                status=SubscriptionStatus.CANCELLED, commitment_count=3
            ).values_list("delivery_count", flat=True)
        )
        assert ended.most_common(1)[0][0] == 3
        assert not Subscription.objects.filter(
            status=SubscriptionStatus.CANCELLED, delivery_count__lt=models.F("commitment_count")
        ).exists()

    def test_subscription_states_are_consistent_with_as_of(self) -> None:
        subs = Subscription.objects.all()
        assert {s.status for s in subs} >= {SubscriptionStatus.ACTIVE, SubscriptionStatus.CANCELLED}
        reasons = collections.Counter(s.cancel_reason for s in subs if s.cancel_reason)
        assert len(reasons) >= 5
        for sub in subs:
            assert sub.started_on <= AS_OF
            if sub.status == SubscriptionStatus.CANCELLED:
                assert sub.cancelled_on is not None
                assert sub.cancelled_on <= AS_OF
                assert sub.cancel_reason
                assert sub.next_delivery_on is None
            elif sub.status == SubscriptionStatus.ACTIVE:
                assert sub.next_delivery_on is not None
                assert sub.next_delivery_on > AS_OF
                upcoming = sub.deliveries.filter(
                    order__isnull=True, status=DeliveryStatus.SCHEDULED
                )
                assert [d.scheduled_on for d in upcoming] == [sub.next_delivery_on]
            else:
                assert sub.paused_until is not None
                assert sub.paused_until > AS_OF

    def test_each_delivered_subscription_box_has_its_order_and_shipment(self) -> None:
        deliveries = SubscriptionDelivery.objects.select_related("order", "subscription")
        sequences = collections.defaultdict(list)
        for delivery in deliveries:
            sequences[delivery.subscription_id].append(delivery.sequence)
            if delivery.status == DeliveryStatus.DELIVERED:
                order = delivery.order
                assert order is not None
                assert order.channel == SalesChannel.SUBSCRIPTION
                assert order.customer_id == delivery.subscription.customer_id
                assert order.lines.count() == 1
                shipment = order.shipments.get()
                assert shipment.delivered_on is not None
                assert shipment.delivered_on <= AS_OF
            if delivery.status == DeliveryStatus.SKIPPED:
                assert delivery.order is None
        for seqs in sequences.values():
            assert sorted(seqs) == list(range(1, len(seqs) + 1))

    # Orders and points ----------------------------------------------------------------------------

    def test_order_amounts_add_up(self) -> None:
        statuses: collections.Counter[str] = collections.Counter()
        for order in Order.objects.annotate(lines_sum=Sum("lines__amount")):
            assert order.total == (
                order.subtotal - order.discount + order.shipping_fee - order.points_used
            )
            assert order.total >= 0
            assert order.subtotal == order.lines_sum
            statuses[order.status] += 1
        total = sum(statuses.values())
        assert statuses[OrderStatus.DELIVERED] / total > 0.9
        assert 0.005 < statuses[OrderStatus.CANCELLED] / total < 0.04
        assert 0.002 < statuses[OrderStatus.RETURNED] / total < 0.03
        assert Order.objects.values("number").distinct().count() == total

    def test_shipments_follow_their_orders(self) -> None:
        for shipment in Shipment.objects.select_related("order"):
            ordered_on = _jst_date(shipment.order.ordered_at)
            assert 1 <= (shipment.shipped_on - ordered_on).days <= 2
            assert shipment.shipped_on <= AS_OF
            if shipment.delivered_on is not None:
                assert 1 <= (shipment.delivered_on - shipment.shipped_on).days <= 3
                assert shipment.delivered_on <= AS_OF
            assert shipment.carrier in {"ヤマト運輸", "佐川急便", "日本郵便"}
        unshipped = Order.objects.filter(shipments__isnull=True)
        assert set(unshipped.values_list("status", flat=True)) <= {
            OrderStatus.CANCELLED,
            OrderStatus.RECEIVED,
        }
        reversed_orders = OrderReversal.objects.values_list("order__status", "kind")
        assert set(reversed_orders) <= {
            (OrderStatus.CANCELLED, OrderReversal.Kind.CANCEL),
            (OrderStatus.RETURNED, OrderReversal.Kind.RETURN),
        }

    def test_points_ledger_is_an_exact_running_sum(self) -> None:
        orders = {o.id: o for o in Order.objects.all()}
        earned: set[int] = set()
        entries = PointEntry.objects.order_by("customer_id", "seq")
        for _, group in itertools.groupby(entries, key=lambda e: e.customer_id):
            balance, previous = 0, None
            for seq, entry in enumerate(group, start=1):
                assert entry.seq == seq
                balance += entry.amount
                assert entry.balance_after == balance >= 0
                assert previous is None or entry.occurred_at >= previous
                previous = entry.occurred_at
                assert entry.occurred_at < CUTOFF
                if entry.kind == PointKind.EARN:
                    assert entry.order_id is not None
                    assert entry.order_id not in earned
                    earned.add(entry.order_id)
                    order = orders[entry.order_id]
                    assert order.status == OrderStatus.DELIVERED
                    assert entry.amount == order.total // 100
                    assert entry.expires_on is not None
                    valid = entry.expires_on - _jst_date(entry.occurred_at)
                    assert valid.days in (365, 366)  # one year
                elif entry.kind == PointKind.REDEEM:
                    assert entry.order_id is not None
                    assert -entry.amount == orders[entry.order_id].points_used
        kinds = set(PointEntry.objects.values_list("kind", flat=True))
        assert kinds == {PointKind.EARN, PointKind.REDEEM, PointKind.EXPIRE}
        used = Order.objects.filter(points_used__gt=0).count()
        assert used == PointEntry.objects.filter(kind=PointKind.REDEEM).count()

    # Timeline, dates, people ----------------------------------------------------------------------

    def test_every_order_and_point_movement_is_on_the_customers_timeline(self) -> None:
        def refs(entity: str) -> set[tuple[int, int | None]]:
            rows = TimelineEvent.objects.filter(ref_entity=entity)
            return set(rows.values_list("customer_id", "ref_id"))

        assert refs("commerce.Order") == set(Order.objects.values_list("customer_id", "id"))
        assert refs("loyalty.PointEntry") == set(
            PointEntry.objects.values_list("customer_id", "id")
        )
        assert refs("support.Contact") == set(Contact.objects.values_list("customer_id", "id"))
        delivered = Shipment.objects.filter(delivered_on__isnull=False).count()
        assert TimelineEvent.objects.filter(kind="delivery").count() == delivered
        assert TimelineEvent.objects.filter(kind="message").exists()
        assert TimelineEvent.objects.filter(title__startswith="注文 KZ").exists()

    def test_hand_sent_step_mails_and_reminders_stop_where_the_scenarios_take_over(
        self,
    ) -> None:
        """From then on the demo's scenarios send them (kizuna.demo.scenarios): a timeline
        showing both would read as two mails for one purchase or one expiry."""
        takeover = Calendar(AS_OF).scenarios_from
        titles = [title for _, _, title in story.STEP_MAILS] + [story.POINT_REMINDER_TITLE]
        sent = TimelineEvent.objects.filter(kind="message", title__in=titles)
        assert sent.filter(occurred_at__lt=takeover).exists()
        assert not sent.filter(occurred_at__gte=takeover).exists()

    def test_nothing_happens_after_as_of_except_upcoming_deliveries(self) -> None:
        first = dt.datetime.combine(FIRST_DAY, dt.time(), JST) - dt.timedelta(hours=1)
        for model, column in (
            (Customer, "registered_at"),
            (Order, "ordered_at"),
            (OrderReversal, "occurred_at"),
            (PointEntry, "occurred_at"),
            (ConsentEvent, "at"),
            (Contact, "occurred_at"),
            (TimelineEvent, "occurred_at"),
            (AuditLog, "at"),
        ):
            bounds = model._default_manager.aggregate(lo=Min(column), hi=Max(column))
            assert first <= bounds["lo"], model
            assert bounds["hi"] < CUTOFF, model
        behaviour = BehaviourEvent.objects.aggregate(lo=Min("occurred_at"), hi=Max("occurred_at"))
        assert CUTOFF - dt.timedelta(days=60) <= behaviour["lo"]
        assert behaviour["hi"] < CUTOFF
        assert not SubscriptionDelivery.objects.filter(
            scheduled_on__gt=AS_OF, order__isnull=False, status=DeliveryStatus.DELIVERED
        ).exists()

    def test_some_carts_are_abandoned(self) -> None:
        carts = BehaviourEvent.objects.filter(kind=BehaviourKind.CART_ADD)
        assert carts.exists()
        ordered_around = 0
        for event in carts:
            window = (event.occurred_at, event.occurred_at + dt.timedelta(hours=1))
            ordered_around += Order.objects.filter(
                customer_id=event.customer_id, ordered_at__range=window
            ).exists()
        assert 0 < ordered_around < carts.count()

    def test_customers_look_japanese_and_well_formed(self) -> None:
        customers = list(Customer.objects.all())
        for customer in customers:
            assert jp.is_kana(customer.kana_key), customer.kana_key
            assert customer.kana_key == jp.normalize_kana(
                customer.family_kana + customer.given_kana
            )
            assert customer.name_key == jp.name_key(customer.family_name + customer.given_name)
            # the given name alone is searchable too (customers.selectors.customer_search)
            assert customer.given_name_key == jp.name_key(customer.given_name)
            assert customer.given_kana_key == jp.normalize_kana(customer.given_kana)
            assert customer.given_name_key
            assert len(customer.postal_code) == 7
            assert customer.postal_code.isdigit()
            assert customer.prefecture is not None
            assert geo.postal3_is_plausible(customer.prefecture, int(customer.postal_code[:3]))
            assert customer.address1
        assert len({c.family_name for c in customers}) > 100
        assert sum(c.gender == "female" for c in customers) / len(customers) > 0.7
        unknown_birthday = sum(c.birthday is None for c in customers) / len(customers)
        assert 0.05 < unknown_birthday < 0.15
        tokyo = sum(c.prefecture == 13 for c in customers) / len(customers)
        assert 0.07 < tokyo < 0.15
        assert Customer.tags.through.objects.exists()
        assert len({c.acquisition_channel for c in customers}) == len(AcquisitionChannel)

    def test_identities_are_unique_and_normalised(self) -> None:
        identities = list(Identity.objects.all())
        assert len({(i.kind, i.value) for i in identities}) == len(identities)
        kinds = collections.Counter(i.kind for i in identities)
        assert set(kinds) >= {
            IdentityKind.EMAIL,
            IdentityKind.PHONE,
            IdentityKind.CART_MEMBER,
            IdentityKind.LINE_USER,
            IdentityKind.PBX_CALLER,
        }
        mobiles = landlines = 0
        for identity in identities:
            if identity.kind in (IdentityKind.PHONE, IdentityKind.PBX_CALLER):
                assert identity.value.startswith("+81")
                assert jp.normalize_phone(identity.display_value) == identity.value
                mobiles += identity.value[3:5] in ("70", "80", "90")
                landlines += identity.value[3:5] not in ("70", "80", "90")
            elif identity.kind == IdentityKind.EMAIL:
                assert jp.normalize_email(identity.display_value) == identity.value
            elif identity.kind == IdentityKind.LINE_USER:
                assert len(identity.value) == 33
                assert identity.value.startswith("U")
            assert identity.source == "demo"
        assert mobiles > landlines > 0
        typed_differently = [i for i in identities if i.display_value != i.value]
        assert any(i.kind == IdentityKind.EMAIL for i in typed_differently)

    def test_consents_have_evidence(self) -> None:
        consents = list(Consent.objects.all())
        assert len(consents) == 5 * Customer.objects.count()
        grants = set(
            ConsentEvent.objects.filter(action=ConsentEvent.Action.GRANT).values_list(
                "customer_id", "channel"
            )
        )
        withdrawals = set(
            ConsentEvent.objects.filter(action=ConsentEvent.Action.WITHDRAW).values_list(
                "customer_id", "channel"
            )
        )
        for consent in consents:
            key = (consent.customer_id, consent.channel)
            assert (consent.granted_at is not None) == (key in grants)
            assert (consent.opted_out_at is not None) == (key in withdrawals)
            if consent.granted:
                assert consent.granted_at is not None
                assert consent.opted_out_at is None
                assert consent.wording_version
                assert consent.source_form
        email = [c for c in consents if c.channel == ConsentChannel.EMAIL]
        assert 0.6 < sum(c.granted_at is not None for c in email) / len(email) < 0.8
        given = [c for c in consents if c.granted_at is not None]
        assert 0.04 < sum(c.opted_out_at is not None for c in given) / len(given) < 0.15

    def test_audit_log_records_each_customer_creation(self) -> None:
        registered = dict(Customer.objects.values_list("id", "registered_at"))
        logs = AuditLog.objects.filter(action="customer.create", actor_label="system:demo")
        assert {log.customer_id: log.at for log in logs} == registered
        assert {log.entity for log in logs} == {"customers.Customer"}

    def test_about_one_customer_in_ten_has_contacted_the_shop(self) -> None:
        share = Contact.objects.values("customer_id").distinct().count() / Customer.objects.count()
        assert 0.05 < share < 0.2
        assert Contact.objects.filter(reason="定期の解約希望", subscription__isnull=False).exists()


def _first_product_kinds() -> dict[int, str]:
    """Each customer's first purchase: trial or main product (free samples aside)."""
    first: dict[int, str] = {}
    lines = (
        OrderLine.objects.exclude(product__kind=ProductKind.SAMPLE)
        .order_by("order__ordered_at", "id")
        .values_list("order__customer_id", "product__kind")
    )
    for customer_id, kind in lines:
        first.setdefault(customer_id, kind)
    return first


def _days() -> Iterator[dt.date]:
    day = FIRST_DAY
    while day <= AS_OF:
        yield day
        day += dt.timedelta(days=1)
