"""配信状況: who may open what, the pause switch, the sending rules and the suppression list."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import pytest
from django.contrib.staticfiles import finders
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.delivery import DeliveryWorker
from kizuna.campaigns.models import (
    Channel,
    DeliveryList,
    DeliverySettings,
    OutboxStatus,
    Suppression,
    SuppressionKind,
    SuppressionReason,
)
from kizuna.campaigns.suppression import suppression_add
from kizuna.core.audit import Actor
from kizuna.core.models import AuditLog
from kizuna.customers.models import IdentityKind, TimelineKind
from kizuna.web.templatetags.kizuna import jdatetime
from tests.delivery_support import STAFF, consenting_customer, mail
from tests.factories import add_identity, make_customer

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    ("role", "status"),
    [(Role.ADMIN, 200), (Role.MARKETER, 200), (Role.OPERATOR, 200), (Role.ANALYST, 403)],
)
def test_who_may_open_the_delivery_page(client_for, role, status) -> None:  # type: ignore[no-untyped-def]
    assert client_for(role).get("/delivery/").status_code == status


def test_logged_out_visitors_are_sent_to_the_login_page(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/delivery/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_an_empty_outbox_says_so(client_for) -> None:  # type: ignore[no-untyped-def]
    client = client_for(Role.MARKETER)
    page = client.get("/delivery/").content.decode()
    counts = client.get("/delivery/?part=counts", headers={"HX-Request": "true"}).content.decode()
    assert "まだメッセージはありません" in counts
    assert "見送り・失敗はありません" in page
    assert "リストはまだありません" in page
    # only admins see the switch and change the rules; others read them (the default rules)
    assert "送信を一時停止する" not in page
    assert 'action="/delivery/settings/"' not in page
    assert "21:00〜08:00(日本時間" in page
    assert "7日間に2通まで" in page


def test_counts_and_skip_reasons_are_shown(client_for) -> None:  # type: ignore[no-untyped-def]
    DeliverySettings.objects.update_or_create(
        pk=1, defaults={"quiet_start": dt.time(0), "quiet_end": dt.time(0)}
    )
    customer = make_customer(family_name="未同意")
    add_identity(customer, IdentityKind.EMAIL, "nobody@example.jp")
    mail(customer, "no-consent")
    mail(customer, "waiting", send_after=dt.datetime(2099, 1, 1, tzinfo=dt.UTC))
    DeliveryWorker().drain()
    client = client_for(Role.MARKETER)
    page = client.get("/delivery/").content.decode()
    assert "配信同意がありません" in page
    assert "未同意" in page
    assert "送信者情報(名称・住所・苦情窓口)が未設定です" in page
    # The table of counts follows the page (it reads the whole outbox); without JavaScript the
    # same address shows it inside the whole page.
    assert "数えています" in page
    counts = client.get("/delivery/?part=counts", headers={"HX-Request": "true"}).content.decode()
    assert "<html" not in counts
    cells = re.findall(r'<td class="num">([^<]*)</td>', counts)
    assert "メール" in counts
    assert cells == ["1", "0", "0", "1", "0"]  # one waiting, one skipped
    whole = client.get("/delivery/?part=counts").content.decode()
    assert "<html" in whole
    assert "数えています" not in whole
    assert re.findall(r'<td class="num">([^<]*)</td>', whole)[:5] == cells


def test_problems_list_the_most_recently_due_first_across_pages(client_for) -> None:  # type: ignore[no-untyped-def]
    # given: 25 skipped and failed messages, due an hour apart, the two statuses interleaved
    customer = make_customer(family_name="問題")
    base = dt.datetime(2026, 5, 1, tzinfo=dt.UTC)
    for n in range(25):
        message = mail(customer, f"problem-{n}", send_after=base + dt.timedelta(hours=n))
        message.status = OutboxStatus.FAILED if n % 3 == 0 else OutboxStatus.SKIPPED
        message.reason = f"理由{n:02d}"
        message.save()
    mail(customer, "still-pending", send_after=base + dt.timedelta(days=1))
    client = client_for(Role.MARKETER)

    def reasons(page: str) -> list[str]:
        return [f"理由{n:02d}" for n in range(25) if f"理由{n:02d}" in page]

    # when
    first = client.get("/delivery/").content.decode()
    second = client.get("/delivery/?page=2").content.decode()
    # then: 20 newest on the first page, the 5 oldest on the second, nothing twice or missing
    assert reasons(first) == [f"理由{n:02d}" for n in range(5, 25)]
    assert reasons(second) == [f"理由{n:02d}" for n in range(5)]
    assert "全25件" in first
    assert first.index("理由24") < first.index("理由23") < first.index("理由05")
    # Without JavaScript the pager is a plain link: it keeps the other pager's page (lists=).
    paged = client.get("/delivery/?lists=1").content.decode()
    assert 'href="/delivery/?lists=1&amp;page=2"' in paged
    fragment = client.get("/delivery/?lists=1&page=2&part=problems", headers={"HX-Request": "true"})
    assert 'hx-get="/delivery/?lists=1&amp;page=1&amp;part=problems"' in fragment.content.decode()


def test_admin_pauses_and_resumes_sending_and_it_is_audited(client_for) -> None:  # type: ignore[no-untyped-def]
    admin = client_for(Role.ADMIN)
    assert admin.post("/delivery/pause/", {"paused": "1"}).status_code == 302
    assert DeliverySettings.load().paused
    page = admin.get("/delivery/").content.decode()
    assert "送信は一時停止中です" in page
    assert "送信を再開する" in page
    # while paused the worker claims nothing
    customer = consenting_customer()
    message = mail(customer, "held")
    assert DeliveryWorker().run_batch().claimed == 0
    message.refresh_from_db()
    assert message.status == OutboxStatus.PENDING
    admin.post("/delivery/pause/", {"paused": "0"})
    assert not DeliverySettings.load().paused
    assert list(
        AuditLog.objects.filter(action__startswith="delivery.").values_list("action", flat=True)
    ) == ["delivery.pause", "delivery.resume"]


def test_only_admins_pause_or_change_the_rules(client_for) -> None:  # type: ignore[no-untyped-def]
    marketer = client_for(Role.MARKETER)
    assert marketer.post("/delivery/pause/", {"paused": "1"}).status_code == 403
    assert marketer.post("/delivery/settings/", {}).status_code == 403
    assert not DeliverySettings.load().paused


def test_admin_changes_the_rules_with_clear_errors(client_for) -> None:  # type: ignore[no-untyped-def]
    admin = client_for(Role.ADMIN)
    bad = admin.post(
        "/delivery/settings/",
        {"quiet_start": "25:00", "quiet_end": "08:00", "cap_messages": "0", "cap_days": "7"},
    )
    assert bad.status_code == 400
    page = bad.content.decode()
    assert "時刻は 21:00 の形で入力してください" in page
    assert "1通以上にしてください" in page
    good = admin.post(
        "/delivery/settings/",
        {
            "quiet_start": "22:00",
            "quiet_end": "09:00",
            "cap_messages": "3",
            "cap_days": "14",
            "sender_name": "きずな化粧品",
            "sender_address": "東京都渋谷区",
            "sender_contact": "0120-000-000",
        },
    )
    assert good.status_code == 302
    row = DeliverySettings.load()
    assert (row.quiet_start, row.quiet_end, row.cap_messages, row.cap_days) == (
        dt.time(22),
        dt.time(9),
        3,
        14,
    )
    audit = AuditLog.objects.get(action="delivery_settings.update")
    assert audit.changes["cap_messages"] == [2, 3]


def test_marketer_adds_and_removes_a_suppression(client_for) -> None:  # type: ignore[no-untyped-def]
    customer = make_customer()
    add_identity(customer, IdentityKind.EMAIL, "hanako@example.jp")
    marketer = client_for(Role.MARKETER)
    bad = marketer.post("/delivery/suppressions/", {"kind": "email", "address": "not-an-address"})
    assert bad.status_code == 400
    assert "メールアドレスとして読めません" in bad.content.decode()
    response = marketer.post(
        "/delivery/suppressions/", {"kind": "email", "address": "ＨＡＮＡＫＯ@example.jp"}
    )
    assert response.status_code == 302
    row = Suppression.objects.get()
    assert (row.address, row.reason) == ("hanako@example.jp", SuppressionReason.MANUAL)
    assert customer.timeline.filter(kind=TimelineKind.CONSENT).exists()
    listing = marketer.get("/delivery/suppressions/?q=hanako").content.decode()
    assert "hanako@example.jp" in listing
    marketer.post("/delivery/suppressions/", {"action": "remove", "id": row.pk})
    assert not Suppression.objects.exists()
    assert list(
        AuditLog.objects.filter(action__startswith="suppression.").values_list("action", flat=True)
    ) == ["suppression.add", "suppression.remove"]


def test_the_suppression_list_names_system_processes_in_japanese(client_for) -> None:  # type: ignore[no-untyped-def]
    # given addresses blocked by the worker (a bounce) and by an admin's shell command
    suppression_add(
        kind=SuppressionKind.EMAIL, address="bounced@example.jp",
        reason=SuppressionReason.BOUNCE, acting_user=Actor.system("delivery-worker"),
    )  # fmt: skip
    suppression_add(
        kind=SuppressionKind.EMAIL, address="asked@example.jp",
        reason=SuppressionReason.MANUAL, acting_user=Actor.system("customers-command(root)"),
    )  # fmt: skip
    # when a marketer reads the list
    listing = client_for(Role.MARKETER).get("/delivery/suppressions/").content.decode()
    # then who added them is in words, not the internal labels
    assert "システム(配信ワーカー)" in listing
    assert "システム(顧客コマンド root)" in listing
    assert "system:" not in listing


def test_operators_cannot_edit_the_suppression_list(client_for) -> None:  # type: ignore[no-untyped-def]
    assert client_for(Role.OPERATOR).get("/delivery/suppressions/").status_code == 403


def test_bounce_notifications_are_applied_by_command(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    from django.core.management import CommandError, call_command

    suppression_add(
        kind=SuppressionKind.EMAIL,
        address="old@example.jp",
        reason=SuppressionReason.BOUNCE,
        acting_user=STAFF,
    )
    path = tmp_path / "bounces.json"
    path.write_text(
        """{"notifications": [
          {"type": "bounce", "bounce_type": "permanent", "email": "Gone@Example.jp", "detail": "550 5.1.1"},
          {"type": "bounce", "bounce_type": "transient", "email": "full@example.jp"},
          {"type": "complaint", "email": "angry@example.jp"},
          {"type": "bounce", "email": "old@example.jp"},
          {"type": "delivery", "email": "x@example.jp"},
          {"type": "complaint", "email": "not an address"}
        ]}""",
        encoding="utf-8",
    )
    with pytest.raises(CommandError, match="読めない通知"):
        call_command("campaigns", "bounce", str(path))
    out, err = capsys.readouterr()
    assert "配信停止に追加: 2件 / 登録済み: 1件 / 一時的な不達(無視): 1件 / 誤り: 2件" in out
    assert "5件目" in err
    assert "6件目" in err
    assert dict(Suppression.objects.values_list("address", "reason")) == {
        "old@example.jp": "bounce",
        "gone@example.jp": "bounce",
        "angry@example.jp": "complaint",
    }


def test_removing_a_suppression_twice_or_with_a_broken_id_explains_it(client_for) -> None:  # type: ignore[no-untyped-def]
    row, _ = suppression_add(
        kind=SuppressionKind.EMAIL,
        address="hanako@example.jp",
        reason=SuppressionReason.MANUAL,
        acting_user=STAFF,
    )
    marketer = client_for(Role.MARKETER)
    assert (
        marketer.post("/delivery/suppressions/", {"action": "remove", "id": row.pk}).status_code
        == 302
    )
    # the same form again (a second tab, the browser's back button) or a broken id
    for broken in (row.pk, "abc", "", "9" * 30, "１"):
        response = marketer.post(
            "/delivery/suppressions/", {"action": "remove", "id": broken}, follow=True
        )
        assert response.status_code == 200
        assert "すでに配信停止リストから外されています" in response.content.decode()


def test_a_list_closed_in_another_tab_says_when_and_by_whom(client_for) -> None:  # type: ignore[no-untyped-def]
    # given a call list the operator has open in two tabs
    call_list = DeliveryList.objects.create(channel=Channel.CALL, created_at=timezone.now())
    operator = client_for(Role.OPERATOR)
    # when: the first tab closes it, named as in the table (not "架電リストのリスト")
    first = operator.post(f"/delivery/lists/{call_list.pk}/close/", follow=True)
    assert f"架電リスト #{call_list.pk} を締めました" in first.content.decode()
    call_list.refresh_from_db()
    closed_at = call_list.closed_at
    # and the second tab (or the back button) posts the same form
    second = operator.post(f"/delivery/lists/{call_list.pk}/close/", follow=True)
    # then it says the list was already closed, when and by whom, and changes nothing
    page = second.content.decode()
    assert "を締めました" not in page
    assert call_list.closed_by == "operator-user"
    assert (
        f"架電リスト #{call_list.pk} は {jdatetime(closed_at)} に operator-user が締め済みです"
        in page
    )
    call_list.refresh_from_db()
    assert call_list.closed_at == closed_at
    assert AuditLog.objects.filter(action="delivery_list.close").count() == 1


def test_an_operators_empty_list_card_speaks_of_call_lists_only(client_for) -> None:  # type: ignore[no-untyped-def]
    page = client_for(Role.OPERATOR).get("/delivery/").content.decode()
    assert "架電のメッセージが送られると" in page
    assert "郵送DM" not in page


def test_the_lists_pager_leads_back_to_the_page_after_a_rules_error(client_for) -> None:  # type: ignore[no-untyped-def]
    # given more lists than one page holds
    now = timezone.now()
    for n in range(21):
        DeliveryList.objects.create(
            channel=Channel.POSTAL,
            created_at=now - dt.timedelta(days=n),
            closed_at=now - dt.timedelta(days=n),
        )
    # when the rules form comes back with an error, at the form's POST-only address
    page = client_for(Role.ADMIN).post("/delivery/settings/", {"cap_messages": "0"})
    assert page.status_code == 400
    # then the lists pager opens the delivery page, not "/delivery/settings/?lists=2" (405)
    assert 'href="/delivery/?lists=2#lists"' in page.content.decode()


def test_the_reason_column_keeps_its_width_on_a_phone(client_for) -> None:  # type: ignore[no-untyped-def]
    # At 390px the other columns do not wrap, so without a floor the reason was squeezed to one
    # character per line (a 5,000px tall card); with it the table scrolls sideways.
    customer = make_customer()
    message = mail(customer, "skipped")
    message.status = OutboxStatus.SKIPPED
    message.reason = "配信同意がありません"
    message.save()
    page = client_for(Role.MARKETER).get("/delivery/").content.decode()
    assert '<td class="outbox-reason">配信同意がありません</td>' in page
    css = Path(str(finders.find("web/outbox.css"))).read_text(encoding="utf-8")
    assert re.search(r"\.outbox-reason \{\s*min-width: 12rem;", css)


def test_phone_numbers_are_shown_and_found_as_staff_write_them(client_for) -> None:  # type: ignore[no-untyped-def]
    marketer = client_for(Role.MARKETER)
    added = marketer.post(
        "/delivery/suppressions/",
        {"kind": "phone", "address": "０９０（１２３４）５６７８"},
        follow=True,
    )
    assert Suppression.objects.get().address == "+819012345678"
    assert "090-1234-5678 を配信停止リストに追加しました" in added.content.decode()
    assert "+819012345678" not in added.content.decode()
    # typed the domestic way, whole or in part, with or without hyphens
    for query in ("090-1234-5678", "09012345678", "090-1234", "０９０１２"):
        listing = marketer.get("/delivery/suppressions/", {"q": query}).content.decode()
        assert '<td class="mono">090-1234-5678</td>' in listing, query
    # other kinds and other numbers are not swept in
    suppression_add(
        kind=SuppressionKind.EMAIL,
        address="taro090@example.jp",
        reason=SuppressionReason.MANUAL,
        acting_user=STAFF,
    )
    listing = marketer.get("/delivery/suppressions/", {"q": "080"}).content.decode()
    assert "「080」を含む宛先はありません" in listing
    both = marketer.get("/delivery/suppressions/", {"q": "090"}).content.decode()
    assert "taro090@example.jp" in both
    assert "090-1234-5678" in both
    removed = marketer.post(
        "/delivery/suppressions/",
        {"action": "remove", "id": Suppression.objects.get(kind="phone").pk},
        follow=True,
    )
    assert "090-1234-5678 を配信停止リストから外しました" in removed.content.decode()


def test_admins_see_which_channels_are_connected(client_for, settings) -> None:  # type: ignore[no-untyped-def]
    # given: mail over SMTP, LINE connected, no SMS provider
    settings.EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"
    settings.EMAIL_HOST, settings.EMAIL_PORT = "mail.example.jp", 587
    settings.KIZUNA_LINE_CHANNEL_TOKEN = "token"
    settings.KIZUNA_SMS_API_URL = ""
    # when
    page = client_for(Role.ADMIN).get("/delivery/").content.decode()
    # then
    assert "SMTPサーバー mail.example.jp:587" in page
    assert re.search(r"<div><dt>LINE</dt><dd>接続済み</dd></div>", page)
    assert re.search(r"<dt>SMS</dt><dd><span[^>]*>未設定</span> 最適チャネルでは使いません", page)
    # the connection details are for admins only
    assert "チャネルの接続" not in client_for(Role.MARKETER).get("/delivery/").content.decode()


def test_a_list_closed_too_early_is_reopened_until_the_next_list_starts(client_for) -> None:  # type: ignore[no-untyped-def]
    # given the marketer closed the postal DM list by mistake (one click, no confirmation)
    postal = DeliveryList.objects.create(channel=Channel.POSTAL, created_at=timezone.now())
    marketer = client_for(Role.MARKETER)
    closed = marketer.post(f"/delivery/lists/{postal.pk}/close/", follow=True).content.decode()
    assert "締めを取り消す" in closed
    # when they undo it
    reopened = marketer.post(f"/delivery/lists/{postal.pk}/reopen/", follow=True)
    # then the list is open again, takes the next messages, and the undo is audited
    postal.refresh_from_db()
    assert (postal.closed_at, postal.closed_by) == (None, "")
    assert f"郵送DM #{postal.pk} の締めを取り消しました" in reopened.content.decode()
    assert AuditLog.objects.filter(action="delivery_list.reopen", entity_id=str(postal.pk)).exists()

    # Once a message has started the channel's next list, the first stays closed.
    marketer.post(f"/delivery/lists/{postal.pk}/close/")
    later = DeliveryList.objects.create(channel=Channel.POSTAL, created_at=timezone.now())
    page = marketer.get("/delivery/").content.decode()
    assert f"/delivery/lists/{postal.pk}/reopen/" not in page
    refused = marketer.post(f"/delivery/lists/{postal.pk}/reopen/", follow=True)
    assert "締めを取り消せません" in refused.content.decode()
    postal.refresh_from_db()
    assert postal.closed_at is not None
    assert later.closed_at is None
    # and an operator, who works call lists only, cannot reopen a postal list
    assert client_for(Role.OPERATOR).post(f"/delivery/lists/{postal.pk}/reopen/").status_code == 403
