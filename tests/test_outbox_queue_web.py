"""送信キュー: the messages themselves on the delivery page, filtered and paged, and the admin's
two corrections — cancel waiting messages (the restore procedure, RELIABILITY D8) and send
failed ones again."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.automation.models import Scenario, TriggerKind
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import Channel, DeliverySettings, OutboxMessage, OutboxStatus
from kizuna.campaigns.outbox import (
    QueueFilter,
    outbox_cancel,
    outbox_retry,
    queue_page,
)
from kizuna.core.models import AuditLog
from tests.delivery_support import (
    consenting_customer,
    mail,
    open_all_day,
)
from tests.factories import make_customer, make_user

pytestmark = pytest.mark.django_db

BASE = dt.datetime(2030, 5, 1, 1, 0, tzinfo=dt.UTC)  # 10:00 JST, far enough to stay pending


@pytest.fixture(autouse=True)
def _any_hour(db: None) -> None:
    open_all_day()


def ids_on(page: str) -> list[int]:
    return [int(n) for n in re.findall(r'<span class="muted small mono">#(\d+)</span>', page)]


def set_status(message: OutboxMessage, status: str, **fields: object) -> OutboxMessage:
    OutboxMessage.objects.filter(pk=message.pk).update(status=status, **fields)
    message.refresh_from_db()
    return message


def make_scenario(key: str, name: str) -> Scenario:
    return Scenario.objects.create(key=key, name=name, trigger_kind=TriggerKind.BIRTHDAY)


# --- who may do what ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.ADMIN, 200), (Role.MARKETER, 200), (Role.OPERATOR, 403), (Role.ANALYST, 403)],
)
def test_who_may_open_the_queue(client_for, role, status) -> None:  # type: ignore[no-untyped-def]
    assert client_for(role).get("/delivery/queue/").status_code == status


@pytest.mark.parametrize("role", [Role.MARKETER, Role.OPERATOR, Role.ANALYST])
def test_only_admins_cancel_or_resend_even_by_a_direct_post(client_for, role) -> None:  # type: ignore[no-untyped-def]
    message = mail(make_customer(), "keep", send_after=BASE)
    client = client_for(role)
    assert client.get("/delivery/queue/confirm/?action=cancel").status_code == 403
    for action in ("cancel", "retry"):
        response = client.post("/delivery/queue/action/", {"action": action, "ids": [message.pk]})
        assert response.status_code == 403
    response = client.post(
        "/delivery/queue/action/", {"action": "cancel", "scope": "matching", "up_to_id": "999999"}
    )
    assert response.status_code == 403
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    assert not AuditLog.objects.filter(action__startswith="outbox.").exists()


def test_a_marketer_sees_the_messages_but_no_actions(client_for) -> None:  # type: ignore[no-untyped-def]
    mail(make_customer(family_name="閲覧"), "seen", send_after=BASE)
    page = client_for(Role.MARKETER).get("/delivery/queue/").content.decode()
    assert "閲覧" in page
    assert 'name="ids"' not in page
    assert "取り消す" not in page
    admin_page = client_for(Role.ADMIN).get("/delivery/queue/").content.decode()
    assert 'name="ids"' in admin_page
    assert "選んだメッセージを取り消す" in admin_page


def test_the_delivery_page_links_to_the_queue(client_for) -> None:  # type: ignore[no-untyped-def]
    assert "/delivery/queue/" in client_for(Role.MARKETER).get("/delivery/").content.decode()
    assert "/delivery/queue/" not in client_for(Role.OPERATOR).get("/delivery/").content.decode()


# --- the list -------------------------------------------------------------------------------


def test_an_empty_queue_says_so_and_points_to_the_history(client_for) -> None:  # type: ignore[no-untyped-def]
    page = client_for(Role.ADMIN).get("/delivery/queue/").content.decode()
    assert "送信待ちのメッセージはありません" in page
    assert "?status=sent" in page
    # nothing to cancel: no "cancel everything" offer on an empty list
    assert "すべて取り消す" not in page
    filtered = client_for(Role.ADMIN).get("/delivery/queue/?channel=sms").content.decode()
    assert "条件に合うメッセージはありません" in filtered


def test_a_row_shows_what_staff_need(client_for) -> None:  # type: ignore[no-untyped-def]
    scenario = make_scenario("birthday", "お誕生日のお祝い")
    customer = make_customer(family_name="佐藤", given_name="一郎")
    message = mail(customer, "row", send_after=BASE, scenario_id=scenario.pk, step_key="greeting")
    set_status(message, OutboxStatus.PENDING, attempts=2, last_error="接続できません")
    page = client_for(Role.ADMIN).get("/delivery/queue/").content.decode()
    assert "2030-05-01 10:00" in page  # JST
    assert "メール" in page
    assert "販促" in page
    assert f'href="/customers/{customer.pk}/"' in page
    assert "佐藤 一郎" in page
    assert f'href="/scenarios/{scenario.pk}/"' in page
    assert "お誕生日のお祝い" in page
    assert "greeting" in page
    assert "送信待ち" in page
    assert "前回のエラー: 接続できません" in page
    assert '<td class="num">2</td>' in page


def test_filters_by_status_channel_scenario_and_date(client_for) -> None:  # type: ignore[no-untyped-def]
    scenario = make_scenario("cart", "カゴ落ち")
    customer = make_customer()
    day1 = mail(customer, "d1", send_after=BASE)
    day2 = mail(customer, "d2", send_after=BASE + dt.timedelta(days=1), scenario_id=scenario.pk)
    sms = mail(customer, "s", channel="sms", content={"text": "x"}, send_after=BASE)
    failed = set_status(mail(customer, "f", send_after=BASE), OutboxStatus.FAILED, reason="550")
    sent = set_status(
        mail(customer, "sent", send_after=BASE), OutboxStatus.SENT, sent_at=timezone.now()
    )
    client = client_for(Role.ADMIN)

    def shown(query: str) -> set[int]:
        response = client.get(f"/delivery/queue/{query}")
        assert response.status_code == 200
        return set(ids_on(response.content.decode()))

    assert shown("") == {day1.pk, day2.pk, sms.pk}  # waiting by default
    assert shown("?status=failed") == {failed.pk}
    assert shown("?status=sent") == {sent.pk}
    assert shown("?status=all") == {day1.pk, day2.pk, sms.pk, failed.pk, sent.pk}
    assert shown("?channel=sms") == {sms.pk}
    assert shown(f"?scenario={scenario.pk}") == {day2.pk}
    # dates are Tokyo calendar days, both ends included
    assert shown("?due_from=2030-05-02") == {day2.pk}
    assert shown("?due_to=2030-05-01") == {day1.pk, sms.pk}
    # an unreadable date is named and left out, never hides or widens anything else
    page = client.get("/delivery/queue/?due_from=tomorrow&channel=sms").content.decode()
    assert "日付は 2026-11-24 の形で入力してください" in page
    assert set(ids_on(page)) == {sms.pk}


@pytest.mark.parametrize(
    "query",
    ["due_from=0001-01-01", "due_to=9999-12-31", "due_from=0001-01-01&due_to=9999-12-31"],
)
def test_a_date_at_the_ends_of_the_calendar_is_named_not_a_500(client_for, query) -> None:  # type: ignore[no-untyped-def]
    """Real dates, but the day after 9999-12-31 (and 0001-01-01 in UTC) do not exist."""
    customer = make_customer()
    waiting = mail(customer, "w", send_after=BASE)
    admin = client_for(Role.ADMIN)
    response = admin.get(f"/delivery/queue/?{query}")
    assert response.status_code == 200
    page = response.content.decode()
    assert "日付は 2000-01-01〜2999-12-31 の間で入力してください" in page
    assert set(ids_on(page)) == {waiting.pk}  # the list without that date
    confirm = admin.get(f"/delivery/queue/confirm/?action=cancel&{query}", follow=True)
    assert confirm.status_code == 200
    assert "使えない条件があります" in confirm.content.decode()
    # the last allowed day is usable, both ends included
    assert set(ids_on(admin.get("/delivery/queue/?due_to=2999-12-31").content.decode())) == {
        waiting.pk
    }


def test_a_reversed_date_range_says_so_instead_of_an_empty_list(client_for) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    day1 = mail(customer, "d1", send_after=BASE)
    mail(customer, "d2", send_after=BASE + dt.timedelta(days=1))
    page = (
        client_for(Role.ADMIN)
        .get("/delivery/queue/?due_from=2030-05-02&due_to=2030-05-01")
        .content.decode()
    )
    assert "開始日が終了日より後になっています" in page
    assert "条件に合うメッセージはありません" not in page
    assert "エラーの出ている条件は使わずに表示しています" in page
    assert set(ids_on(page)) == {day1.pk}  # up to the end date; the start is not used
    # no way to cancel "everything matching" a filter that is not what the admin meant
    assert "すべて取り消す" not in page


@pytest.mark.parametrize(
    "dates",
    [
        {"due_from": "2030-05-02", "due_to": "2030-05-01"},
        {"due_from": "tomorrow"},
        {"due_to": "9999-12-31"},
    ],
)
def test_everything_matching_is_refused_while_a_condition_is_unusable(client_for, dates) -> None:  # type: ignore[no-untyped-def]
    """Leaving the bad date out would cancel every waiting message, not the days asked for."""
    customer = make_customer()
    waiting = [mail(customer, f"w{n}", send_after=BASE + dt.timedelta(days=n)) for n in range(3)]
    admin = client_for(Role.ADMIN)
    query = "&".join(f"{name}={value}" for name, value in dates.items())
    confirm = admin.get(f"/delivery/queue/confirm/?action=cancel&{query}", follow=True)
    html = confirm.content.decode()
    assert "使えない条件があります。条件を直してから" in html
    assert "件を取り消す" not in html
    assert confirm.redirect_chain[-1][0].startswith("/delivery/queue/?")
    posted = admin.post(
        "/delivery/queue/action/",
        {"action": "cancel", "scope": "matching", "up_to_id": str(waiting[-1].pk), **dates},
        follow=True,
    )
    assert "使えない条件があります" in posted.content.decode()
    assert set(OutboxMessage.objects.values_list("status", flat=True)) == {OutboxStatus.PENDING}
    assert not AuditLog.objects.filter(action="outbox.cancel").exists()


def test_pages_follow_each_other_without_losing_or_repeating_a_message(client_for) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    # 120 waiting messages, many at the same moment (the cursor's id breaks the ties), plus a
    # claimed one, merged into the same order
    messages = [
        mail(customer, f"m{n}", send_after=BASE + dt.timedelta(minutes=n // 7)) for n in range(120)
    ]
    set_status(
        messages[60],
        OutboxStatus.CLAIMED,
        claimed_by="w1",
        lease_until=timezone.now() + dt.timedelta(minutes=5),
    )
    expected = [m.pk for m in sorted(messages, key=lambda m: (m.next_attempt_at, m.pk))]
    client = client_for(Role.MARKETER)
    seen: list[int] = []
    pages = []
    url = "/delivery/queue/"
    while url:
        page = client.get(url).content.decode()
        pages.append(page)
        seen += ids_on(page)
        match = re.search(r'href="([^"]*after=[^"#]*)#messages"', page)
        url = match.group(1).replace("&amp;", "&") if match else ""
    assert seen == expected
    assert [len(ids_on(p)) for p in pages] == [50, 50, 20]
    # and back: the previous page of the last one is the second
    back = re.search(r'href="([^"]*before=[^"#]*)#messages"', pages[2])
    assert back is not None
    assert (
        ids_on(client.get(back.group(1).replace("&amp;", "&")).content.decode()) == expected[50:100]
    )


def test_history_reads_newest_first_and_pages_backward_too() -> None:
    customer = make_customer()
    rows = [
        set_status(
            mail(customer, f"h{n}", send_after=BASE + dt.timedelta(hours=n)),
            OutboxStatus.FAILED if n % 2 else OutboxStatus.SKIPPED,
        )
        for n in range(9)
    ]
    newest_first = [m.pk for m in reversed(rows)]
    history = QueueFilter(statuses=(OutboxStatus.FAILED, OutboxStatus.SKIPPED))
    first = queue_page(history, size=4)
    assert [m.pk for m in first.rows] == newest_first[:4]
    assert first.before is None
    second = queue_page(history, size=4, after=first.after)
    assert [m.pk for m in second.rows] == newest_first[4:8]
    third = queue_page(history, size=4, after=second.after)
    assert [m.pk for m in third.rows] == newest_first[8:]
    assert third.after is None
    back = queue_page(history, size=4, before=third.before)
    assert [m.pk for m in back.rows] == newest_first[4:8]
    assert queue_page(history, size=4, before=back.before).before is None


def test_a_page_reads_the_index_not_the_whole_outbox() -> None:
    # The default listing and the per-status reads walk outbox_due (status, next_attempt_at)
    # and stop after a page: no full scan of the outbox, no temporary sort of every row.
    customer = make_customer()
    mail(customer, "one", send_after=BASE)
    with CaptureQueriesContext(connection) as queries:
        queue_page(QueueFilter(), size=50)
    reads = [q["sql"] for q in queries.captured_queries if "campaigns_outboxmessage" in q["sql"]]
    assert len(reads) == 2  # one per status: pending, claimed
    if connection.vendor != "sqlite":
        return
    with connection.cursor() as cursor:
        for sql in reads:
            cursor.execute(f"EXPLAIN QUERY PLAN {sql}")
            plan = " ".join(str(row[-1]) for row in cursor.fetchall())
            assert "SEARCH campaigns_outboxmessage USING INDEX outbox_due (status=?)" in plan, plan
            assert "TEMP B-TREE" not in plan, plan


# --- cancel ---------------------------------------------------------------------------------


def test_admin_cancels_selected_messages_and_it_is_audited(client_for) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    first, second, kept = (mail(customer, f"c{n}", send_after=BASE) for n in range(3))
    admin = client_for(Role.ADMIN)
    response = admin.post(
        "/delivery/queue/action/",
        {"action": "cancel", "ids": [first.pk, second.pk], "channel": "email"},
        follow=True,
    )
    assert response.redirect_chain[-1][0] == "/delivery/queue/?channel=email"
    assert "2件を取り消しました" in response.content.decode()
    for message in (first, second):
        message.refresh_from_db()
        assert message.status == OutboxStatus.SKIPPED
        assert message.reason.startswith("送信を取り消し(")
    kept.refresh_from_db()
    assert kept.status == OutboxStatus.PENDING
    audit = AuditLog.objects.get(action="outbox.cancel")
    assert audit.actor_label.startswith("admin")
    assert audit.changes["count"] == [0, 2]
    assert audit.changes["ids"] == [None, sorted([first.pk, second.pk])]


def test_cancel_everything_matching_asks_first_then_cancels_only_that(client_for) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    emails = [mail(customer, f"e{n}", send_after=BASE) for n in range(3)]
    sms = mail(customer, "sms", channel="sms", content={"text": "x"}, send_after=BASE)
    admin = client_for(Role.ADMIN)
    # the list offers it with the current filter
    page = admin.get("/delivery/queue/?channel=email").content.decode()
    assert 'href="/delivery/queue/confirm/?action=cancel&amp;channel=email"' in page
    # the confirmation counts what will be cancelled, and changes nothing
    confirm = admin.get("/delivery/queue/confirm/?action=cancel&channel=email").content.decode()
    assert "3件を取り消す" in confirm
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 4
    up_to = re.search(r'name="up_to_id" value="(\d+)"', confirm)
    assert up_to is not None
    # a message queued after the confirmation is not touched by it
    late = mail(customer, "late", send_after=BASE)
    response = admin.post(
        "/delivery/queue/action/",
        {"action": "cancel", "scope": "matching", "up_to_id": up_to.group(1), "channel": "email"},
        follow=True,
    )
    assert "3件を取り消しました" in response.content.decode()
    statuses = dict(OutboxMessage.objects.values_list("pk", "status"))
    assert {statuses[m.pk] for m in emails} == {OutboxStatus.SKIPPED}
    assert statuses[sms.pk] == statuses[late.pk] == OutboxStatus.PENDING
    audit = AuditLog.objects.get(action="outbox.cancel")
    assert audit.changes["count"] == [0, 3]
    assert audit.changes["filter"][1]["channel"] == "email"
    assert audit.changes["filter"][1]["statuses"] == ["pending", "claimed"]
    # without the confirmation's bound, "everything matching" is refused
    refused = admin.post(
        "/delivery/queue/action/", {"action": "cancel", "scope": "matching"}, follow=True
    )
    assert "確認画面から操作してください" in refused.content.decode()
    assert OutboxMessage.objects.get(pk=sms.pk).status == OutboxStatus.PENDING


def test_cancelling_everything_works_in_chunks(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr("kizuna.campaigns.outbox.CHUNK", 3)
    customer = make_customer()
    for n in range(10):
        mail(customer, f"k{n}", send_after=BASE + dt.timedelta(seconds=n // 4))
    mail(customer, "sms", channel="sms", content={"text": "x"}, send_after=BASE)
    admin = make_user(Role.ADMIN)
    assert outbox_cancel(acting_user=admin, queue=QueueFilter(channel="email")) == 10
    assert OutboxMessage.objects.filter(status=OutboxStatus.PENDING).count() == 1


def test_a_message_a_worker_holds_is_not_cancelled_but_one_whose_lease_ran_out_is(
    client_for,  # type: ignore[no-untyped-def]
) -> None:
    customer = make_customer()
    held = set_status(
        mail(customer, "held", send_after=BASE),
        OutboxStatus.CLAIMED,
        claimed_by="worker-1",
        lease_until=timezone.now() + dt.timedelta(minutes=5),
    )
    dead = set_status(
        mail(customer, "dead", send_after=BASE),
        OutboxStatus.CLAIMED,
        claimed_by="worker-0",
        lease_until=timezone.now() - dt.timedelta(minutes=1),
    )
    page = client_for(Role.ADMIN).get("/delivery/queue/").content.decode()
    assert f'name="ids" value="{held.pk}"' not in page
    assert f'name="ids" value="{dead.pk}"' in page
    assert "処理期限切れ" in page
    # a direct post of the held one changes nothing; the dead worker's row is cancelled
    response = client_for(Role.ADMIN).post(
        "/delivery/queue/action/", {"action": "cancel", "ids": [held.pk, dead.pk]}, follow=True
    )
    assert "1件を取り消しました" in response.content.decode()
    assert "選んだうち1件は送信処理中・送信済みなどのため取り消せませんでした" in (
        response.content.decode()
    )
    held.refresh_from_db()
    dead.refresh_from_db()
    assert (held.status, held.claimed_by) == (OutboxStatus.CLAIMED, "worker-1")
    assert (dead.status, dead.claimed_by, dead.lease_until) == (OutboxStatus.SKIPPED, "", None)
    # and "everything matching" leaves it too
    assert outbox_cancel(acting_user=make_user(Role.ADMIN), queue=QueueFilter()) == 0
    held.refresh_from_db()
    assert held.status == OutboxStatus.CLAIMED


def test_sent_failed_and_skipped_messages_are_not_cancelled() -> None:
    customer = make_customer()
    sent = set_status(mail(customer, "s", send_after=BASE), "sent", sent_at=timezone.now())
    failed = set_status(mail(customer, "f", send_after=BASE), "failed", reason="550")
    skipped = set_status(mail(customer, "k", send_after=BASE), "skipped", reason="同意なし")
    ids = [sent.pk, failed.pk, skipped.pk]
    assert outbox_cancel(acting_user=make_user(Role.ADMIN), message_ids=ids) == 0
    assert [OutboxMessage.objects.get(pk=pk).status for pk in ids] == ["sent", "failed", "skipped"]
    assert OutboxMessage.objects.get(pk=skipped.pk).reason == "同意なし"
    assert not AuditLog.objects.filter(action="outbox.cancel").exists()


def test_a_cancelled_message_is_never_sent_and_does_not_use_the_cap(smtp) -> None:  # type: ignore[no-untyped-def]
    customer = consenting_customer(email_address="hanako@example.jp")
    cancelled = mail(customer, "cancel-me")
    DeliverySettings.objects.filter(pk=1).update(cap_messages=1, cap_days=7)
    outbox_cancel(acting_user=make_user(Role.ADMIN), message_ids=[cancelled.pk])
    kept = mail(customer, "send-me")
    DeliveryWorker().drain()
    assert len(smtp.handler.received) == 1
    assert "send-me" in str(smtp.handler.received[0].message["Subject"])
    cancelled.refresh_from_db()
    kept.refresh_from_db()
    assert cancelled.status == OutboxStatus.SKIPPED
    assert cancelled.sent_at is None
    assert kept.status == OutboxStatus.SENT  # the cancelled one took no slot of the cap of 1


# --- retry ----------------------------------------------------------------------------------


def test_admin_resends_a_failed_message_and_the_worker_sends_it(smtp, client_for) -> None:  # type: ignore[no-untyped-def]
    smtp.handler.refuse.add("later@example.jp")
    customer = consenting_customer(email_address="later@example.jp")
    message = mail(customer, "bounced-once")
    DeliveryWorker().drain()
    message.refresh_from_db()
    assert message.status == OutboxStatus.FAILED
    # the address was refused with 550 and suppressed by the worker; the shop fixed it
    smtp.handler.refuse.clear()
    from kizuna.campaigns.models import Suppression

    Suppression.objects.all().delete()
    admin = client_for(Role.ADMIN)
    page = admin.get("/delivery/queue/?status=failed").content.decode()
    assert f'name="ids" value="{message.pk}"' in page
    assert "選んだメッセージを再送する" in page
    response = admin.post(
        "/delivery/queue/action/",
        {"action": "retry", "ids": [message.pk], "status": "failed"},
        follow=True,
    )
    assert "1件を送信待ちに戻しました" in response.content.decode()
    message.refresh_from_db()
    assert (message.status, message.attempts, message.reason) == ("pending", 0, "")
    assert message.next_attempt_at <= timezone.now()
    audit = AuditLog.objects.get(action="outbox.retry")
    assert audit.changes["count"] == [0, 1]
    DeliveryWorker().drain()
    message.refresh_from_db()
    assert message.status == OutboxStatus.SENT
    assert [r.rcpt for r in smtp.handler.received] == [["later@example.jp"]]


def test_only_failed_messages_are_resent(client_for) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    failed = [
        set_status(mail(customer, f"f{n}", send_after=BASE), "failed", reason="550")
        for n in range(2)
    ]
    pending = mail(customer, "p", send_after=BASE)
    sent = set_status(mail(customer, "s", send_after=BASE), "sent", sent_at=timezone.now())
    admin = client_for(Role.ADMIN)
    confirm = admin.get("/delivery/queue/confirm/?action=retry&status=failed").content.decode()
    assert "2件を再送する" in confirm
    up_to = re.search(r'name="up_to_id" value="(\d+)"', confirm)
    assert up_to is not None
    response = admin.post(
        "/delivery/queue/action/",
        {"action": "retry", "scope": "matching", "up_to_id": up_to.group(1), "status": "failed"},
        follow=True,
    )
    assert "2件を送信待ちに戻しました" in response.content.decode()
    assert outbox_retry(acting_user=make_user(Role.ADMIN), message_ids=[pending.pk, sent.pk]) == 0
    assert {OutboxMessage.objects.get(pk=m.pk).status for m in failed} == {"pending"}
    assert OutboxMessage.objects.get(pk=sent.pk).status == "sent"


def test_nothing_to_do_says_so(client_for) -> None:  # type: ignore[no-untyped-def]
    admin = client_for(Role.ADMIN)
    confirm = admin.get("/delivery/queue/confirm/?action=cancel").content.decode()
    assert "取り消せるメッセージはありません" in confirm
    response = admin.post("/delivery/queue/action/", {"action": "cancel"}, follow=True)
    assert "メッセージを選んでください" in response.content.decode()


def test_the_paused_banner_after_a_restore_points_to_the_queue(client_for) -> None:  # type: ignore[no-untyped-def]
    DeliverySettings.objects.filter(pk=1).update(
        paused=True, paused_at=timezone.now(), paused_by="system:restore-check"
    )
    page = client_for(Role.ADMIN).get("/delivery/").content.decode()
    assert "バックアップから復元されたデータベースのため" in page
    assert "システム(復元の検知)" in page
    assert 'href="/delivery/queue/"' in page
    queue = client_for(Role.ADMIN).get("/delivery/queue/").content.decode()
    assert "送信は一時停止中です" in queue


def test_channel_choices_cover_every_channel() -> None:
    from kizuna.web.outbox import QueueFilterForm

    values = [value for value, _ in QueueFilterForm().fields["channel"].choices]  # type: ignore[attr-defined]
    assert values == ["", *Channel.values]
