"""The duplicate review queue as staff use it: who may open it, what a pair shows, merging with
a confirmation step, 「別人」, the history tabs and undo."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from kizuna.accounts.models import Role
from kizuna.campaigns.consent_checks import Audience
from kizuna.campaigns.models import Channel
from kizuna.core.audit import Actor
from kizuna.customers import privacy
from kizuna.customers.merge import QUEUE_PER_PAGE, customer_merge, duplicate_dismiss
from kizuna.customers.models import (
    Customer,
    CustomerMerge,
    DuplicateCandidate,
    DuplicateStatus,
    Identity,
    IdentityKind,
)
from kizuna.customers.resolution import customer_resolve
from kizuna.customers.services import customer_update
from kizuna.loyalty.selectors import points_balance
from kizuna.loyalty.services import points_earn
from tests.factories import (
    add_identity,
    grant_consent,
    make_customer,
    make_order,
    withdraw_consent,
)

pytestmark = pytest.mark.django_db
SYSTEM = Actor.system("test")
REVIEWERS = (Role.ADMIN, Role.MARKETER, Role.OPERATOR)
ClientFor = Callable[[Role], Client]


def _pair(n: int, *, reason: str = "氏名カナと郵便番号が一致") -> DuplicateCandidate:
    """Two records of one person with identities, orders and points on both."""
    older = make_customer(
        given_name=f"花子{n}", registered_at=timezone.now() - dt.timedelta(days=400)
    )
    newer = make_customer(
        given_name=f"花子{n}", registered_at=timezone.now() - dt.timedelta(days=3)
    )
    add_identity(older, IdentityKind.PHONE, f"+81901234{n:04d}", f"090-1234-{n:04d}")
    add_identity(older, IdentityKind.EMAIL, f"old{n}@example.jp")
    add_identity(newer, IdentityKind.EMAIL, f"new{n}@example.jp")
    make_order(older, ordered_at=timezone.now() - dt.timedelta(days=300))
    make_order(newer)
    points_earn(customer=older, amount=100 + n, acting_user=SYSTEM, reason="購入")
    return DuplicateCandidate.objects.create(customer_a=older, customer_b=newer, reason=reason)


@pytest.fixture
def candidate(db: None) -> DuplicateCandidate:
    return _pair(1)


@pytest.fixture
def merge(candidate: DuplicateCandidate) -> CustomerMerge:
    return customer_merge(
        survivor=candidate.customer_a, absorbed=candidate.customer_b, acting_user=SYSTEM
    )


# --- access -----------------------------------------------------------------------------------


def _pages(candidate: DuplicateCandidate, merge: CustomerMerge) -> list[str]:
    return [
        reverse("duplicates:queue"),
        reverse("duplicates:queue") + "?status=merged",
        reverse("duplicates:merge", args=[candidate.pk]),
        reverse("duplicates:merge_detail", args=[merge.pk]),
        reverse("duplicates:merge_undo", args=[merge.pk]),
    ]


@pytest.mark.parametrize("role", list(Role))
def test_each_page_opens_for_reviewers_only(
    client_for: ClientFor, candidate: DuplicateCandidate, role: Role
) -> None:
    # given: one merged pair (for the detail pages) and one open pair (for the merge page)
    merged = customer_merge(
        survivor=candidate.customer_a, absorbed=candidate.customer_b, acting_user=SYSTEM
    )
    open_pair = _pair(2)
    client = client_for(role)
    for url in _pages(open_pair, merged):
        # when
        response = client.get(url)
        # then
        if role in REVIEWERS:
            assert response.status_code == 200, url
        else:
            assert response.status_code == 403, url
            assert "このページは開けません" in response.content.decode()


def test_anonymous_visitors_are_sent_to_login(
    client: Client, candidate: DuplicateCandidate, merge: CustomerMerge
) -> None:
    urls = [
        *_pages(candidate, merge),
        reverse("duplicates:dismiss", args=[candidate.pk]),
        reverse("duplicates:reopen", args=[candidate.pk]),
    ]
    for url in urls:
        response = client.post(url) if "dismiss" in url or "reopen" in url else client.get(url)
        assert response.status_code == 302, url
        assert response["Location"].startswith(reverse("login") + "?next="), url


def test_an_analyst_cannot_decide_anything(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    analyst = client_for(Role.ANALYST)
    assert analyst.post(reverse("duplicates:dismiss", args=[candidate.pk])).status_code == 403
    response = analyst.post(
        reverse("duplicates:merge", args=[candidate.pk]), {"survivor": candidate.customer_a_id}
    )
    assert response.status_code == 403
    candidate.refresh_from_db()
    assert candidate.status == DuplicateStatus.OPEN
    assert not CustomerMerge.objects.exists()


# --- the queue --------------------------------------------------------------------------------


def test_an_empty_queue_says_so(client_for: ClientFor) -> None:
    html = client_for(Role.OPERATOR).get(reverse("duplicates:queue")).content.decode()
    assert "確認待ちの重複候補はありません" in html


def test_a_pair_is_shown_side_by_side_with_what_staff_compare(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    # when
    html = client_for(Role.OPERATOR).get(reverse("duplicates:queue")).content.decode()
    # then
    older, newer = candidate.customer_a, candidate.customer_b
    assert "氏名カナと郵便番号が一致" in html
    for text in (
        f"顧客ID {older.pk}",
        f"顧客ID {newer.pk}",
        "山田 花子1",
        "ヤマダ ハナコ",
        "〒150-0002",
        "東京都渋谷区渋谷2-1-1",
        "090-1234-0001",
        "old1@example.jp",
        "new1@example.jp",
        f"{timezone.localtime(older.registered_at):%Y年%-m月%-d日}",
        "101 pt",
        "統合する",
        "別人",
    ):
        assert text in html, text
    # the older record is proposed as the one to keep
    assert f'value="{older.pk}" checked' in html


def test_each_record_lists_its_addresses_newest_first_marking_the_one_mail_goes_to(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    # given: the older record also got an address from an old order imported later, observed
    # before the address it has, so mail still goes to the one it had first (not the last id)
    older = candidate.customer_a
    current = older.identities.get(kind=IdentityKind.EMAIL)
    imported = add_identity(older, IdentityKind.EMAIL, "hanako@old.example.jp")
    Identity.objects.filter(pk=imported.pk).update(
        observed_at=current.observed_at - dt.timedelta(days=30)
    )
    # and the newer record was given a new address last
    add_identity(candidate.customer_b, IdentityKind.EMAIL, "hanako@new.example.jp")
    # when
    html = client_for(Role.OPERATOR).get(reverse("duplicates:queue")).content.decode()
    # then: per record, the e-mails as listed
    emails = [
        [re.sub(r"<[^>]+>", "", line) for line in cell.split("<br>")]
        for cell in re.findall(r"<dt>メール</dt><dd>(.*?)</dd>", html, re.S)
    ]
    assert emails == [
        ["old1@example.jp 送信先", "hanako@old.example.jp"],
        ["hanako@new.example.jp 送信先", "new1@example.jp"],
    ]


def test_open_candidates_come_newest_first_twenty_to_a_page(client_for: ClientFor) -> None:
    # given
    pairs = [_pair(n) for n in range(QUEUE_PER_PAGE + 1)]
    client = client_for(Role.MARKETER)
    # when
    first = client.get(reverse("duplicates:queue")).content.decode()
    second = client.get(reverse("duplicates:queue"), {"page": 2}).content.decode()
    # then
    assert first.count('class="card dup-item"') == QUEUE_PER_PAGE
    assert second.count('class="card dup-item"') == 1
    assert f"候補 #{pairs[0].pk}・" in second  # the oldest is last
    assert first.index(f"候補 #{pairs[-1].pk}・") < first.index(f"候補 #{pairs[-2].pk}・")
    assert f"全{QUEUE_PER_PAGE + 1}件" in first


def test_the_queue_query_count_does_not_grow_with_the_candidates(client_for: ClientFor) -> None:
    client = client_for(Role.OPERATOR)
    _pair(0)
    client.get(reverse("duplicates:queue"))  # warm the session and content types

    def queries() -> int:
        with CaptureQueriesContext(connection) as captured:
            assert client.get(reverse("duplicates:queue")).status_code == 200
        return len(captured)

    with_two = (_pair(1), queries())[1]
    for n in range(2, QUEUE_PER_PAGE + 1):
        _pair(n)
    assert queries() == with_two


def test_a_pair_whose_record_was_merged_elsewhere_leaves_the_open_queue(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    third = make_customer(given_name="花子1")
    DuplicateCandidate.objects.create(
        customer_a=candidate.customer_b, customer_b=third, reason="同じ電話番号で別の顧客"
    )
    customer_merge(survivor=candidate.customer_a, absorbed=candidate.customer_b, acting_user=SYSTEM)
    html = client_for(Role.OPERATOR).get(reverse("duplicates:queue")).content.decode()
    assert "確認待ちの重複候補はありません" in html


# --- merge ------------------------------------------------------------------------------------


def test_merging_asks_for_confirmation_first(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    # when: 「統合する」 with the default choice
    response = client_for(Role.OPERATOR).get(
        reverse("duplicates:merge", args=[candidate.pk]), {"survivor": candidate.customer_a_id}
    )
    # then nothing has changed yet, and the page says what will happen
    html = response.content.decode()
    assert not CustomerMerge.objects.exists()
    assert "統合の確認" in html
    assert "注文 1件を顧客" in html
    assert f"顧客 #{candidate.customer_b_id} を #{candidate.customer_a_id} に統合する" in html


def test_the_confirmation_says_when_mail_will_go_to_the_absorbed_records_address(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    older, newer = candidate.customer_a, candidate.customer_b
    client = client_for(Role.OPERATOR)
    url = reverse("duplicates:merge", args=[candidate.pk])
    # keeping the older record: the newer record's address was seen later and takes over
    html = client.get(url, {"survivor": older.pk}).content.decode()
    assert "メールの送信先が変わります" in html
    assert 'old1@example.jp</span> から統合元の <span class="mono">new1@example.jp' in html
    # keeping the newer record: its own address stays where mail goes, nothing to say
    html = client.get(url, {"survivor": newer.pk}).content.decode()
    assert "送信先が変わります" not in html
    # and the merge does what the page said
    client.post(url, {"survivor": older.pk})
    audience = Audience.load([older.pk])
    assert audience.address(older, Channel.EMAIL, {}) == "new1@example.jp"


def test_the_confirmation_says_which_consent_decision_the_merged_record_keeps(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    # given she subscribed on the older record and later unsubscribed on the newer one
    older, newer = candidate.customer_a, candidate.customer_b
    granted = timezone.make_aware(dt.datetime(2025, 4, 1, 10, 0))
    grant_consent(older, granted)
    grant_consent(newer, granted)
    withdraw_consent(newer, granted + dt.timedelta(days=30, hours=2))
    client = client_for(Role.OPERATOR)
    url = reverse("duplicates:merge", args=[candidate.pk])
    # when staff are about to keep the older record
    html = client.get(url, {"survivor": older.pk}).content.decode()
    # then the page shows both decisions with their times, and that the later one is kept
    assert "同意 2025-04-01 10:00" in html
    assert "配信停止 2025-05-01 12:00" in html
    assert "配信停止(統合元から引き継ぎ)" in html
    assert "後の操作(同意または配信停止)" in html
    # and once merged, the merge page says what was taken over
    html = client.post(url, {"survivor": older.pk}, follow=True).content.decode()
    assert "統合元から引き継いだ配信同意: メール: 配信停止" in html


def test_confirming_merges_and_shows_the_merge(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    # given
    client = client_for(Role.OPERATOR)
    # when
    response = client.post(
        reverse("duplicates:merge", args=[candidate.pk]),
        {"survivor": candidate.customer_b_id},  # staff chose to keep the newer record
        follow=True,
    )
    # then
    merge = CustomerMerge.objects.get()
    assert (merge.survivor_id, merge.absorbed_id) == (
        candidate.customer_b_id,
        candidate.customer_a_id,
    )
    assert response.redirect_chain[-1][0] == reverse("duplicates:merge_detail", args=[merge.pk])
    html = response.content.decode()
    assert (
        f"顧客 #{candidate.customer_a_id} を顧客 #{candidate.customer_b_id} に統合しました" in html
    )
    assert "統合を取り消す" in html
    assert points_balance(candidate.customer_b) == 101
    assert merge.merged_by == "operator-user"


def test_the_absorbed_records_page_leads_to_the_survivor(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    # given: a merge that kept the newer record
    client = client_for(Role.OPERATOR)
    client.post(
        reverse("duplicates:merge", args=[candidate.pk]), {"survivor": candidate.customer_b_id}
    )
    # when: someone opens the absorbed record (from an old link or the audit log)
    html = client.get(
        reverse("web:customer_detail", args=[candidate.customer_a_id])
    ).content.decode()
    # then: it says where the customer went, with a link
    survivor = reverse("web:customer_detail", args=[candidate.customer_b_id])
    assert f'<a href="{survivor}">顧客ID {candidate.customer_b_id}</a> に統合されました' in html
    # and the survivor's own page says nothing of the kind
    assert "に統合されました" not in client.get(survivor).content.decode()


def test_a_second_click_on_merge_does_not_merge_twice(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    client = client_for(Role.OPERATOR)
    url = reverse("duplicates:merge", args=[candidate.pk])
    client.post(url, {"survivor": candidate.customer_a_id})
    response = client.post(url, {"survivor": candidate.customer_a_id}, follow=True)
    assert CustomerMerge.objects.count() == 1
    assert "この候補は既に統合されています" in response.content.decode()


def test_a_survivor_outside_the_pair_is_refused(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    stranger = make_customer(family_name="鈴木")
    response = client_for(Role.OPERATOR).post(
        reverse("duplicates:merge", args=[candidate.pk]), {"survivor": stranger.pk}
    )
    assert response.status_code == 400
    assert "どちらでもないため、統合していません" in response.content.decode()
    assert not CustomerMerge.objects.exists()


@pytest.mark.parametrize("survivor", ["abc", "", "１", "1.0", None])
def test_a_survivor_that_is_no_customer_number_is_refused_as_bad_input(
    client_for: ClientFor, candidate: DuplicateCandidate, survivor: str | None
) -> None:
    # given a merge form sent with a survivor that names no customer (altered, or left out)
    data = {} if survivor is None else {"survivor": survivor}
    # when it is posted
    response = client_for(Role.OPERATOR).post(
        reverse("duplicates:merge", args=[candidate.pk]), data
    )
    # then the confirmation page comes back as bad input with a plain message, nothing merged
    assert response.status_code == 400
    assert "どちらでもないため、統合していません" in response.content.decode()
    assert not CustomerMerge.objects.exists()
    candidate.refresh_from_db()
    assert candidate.status == DuplicateStatus.OPEN


# --- dismiss and history ----------------------------------------------------------------------


def test_dismiss_with_htmx_replaces_the_pair_and_can_be_taken_back(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    # given
    client = client_for(Role.OPERATOR)
    # when
    response = client.post(
        reverse("duplicates:dismiss", args=[candidate.pk]), headers={"HX-Request": "true"}
    )
    # then
    html = response.content.decode()
    assert response.status_code == 200
    assert f'id="dup-{candidate.pk}"' in html
    assert "「別人」として記録しました" in html
    assert "<html" not in html
    # the tab counts are sent along, so 確認待ち no longer counts the pair
    assert 'id="dup-tabs" aria-label="表示する候補" hx-swap-oob="true"' in html
    assert '別人 <span class="dup-count">1</span>' in html
    assert '確認待ち <span class="dup-count">0</span>' in html
    candidate.refresh_from_db()
    assert candidate.status == DuplicateStatus.DISMISSED
    history = client.get(reverse("duplicates:queue"), {"status": "dismissed"}).content.decode()
    assert "別人として確認済み" in history
    assert "確認待ちに戻す" in history
    # when: taken back
    client.post(reverse("duplicates:reopen", args=[candidate.pk]))
    candidate.refresh_from_db()
    assert candidate.status == DuplicateStatus.OPEN


def test_dismiss_without_javascript_returns_to_the_same_queue_page(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    back = reverse("duplicates:queue") + "?page=1"
    response = client_for(Role.MARKETER).post(
        reverse("duplicates:dismiss", args=[candidate.pk]), {"next": back}, follow=True
    )
    assert response.redirect_chain[0][0] == back
    assert f"候補 #{candidate.pk} を「別人」として記録しました" in response.content.decode()


@pytest.mark.parametrize(
    "elsewhere",
    ["https://evil.example/", "//evil.example/duplicates/", "/admin/", "/duplicates/1/merge/"],
)
def test_dismiss_returns_only_to_the_queue_never_elsewhere(
    client_for: ClientFor, candidate: DuplicateCandidate, elsewhere: str
) -> None:
    response = client_for(Role.OPERATOR).post(
        reverse("duplicates:dismiss", args=[candidate.pk]), {"next": elsewhere}
    )
    assert response["Location"] == reverse("duplicates:queue")


def _next_field(html: str) -> str:
    """The place a queue page's forms send the reviewer back to (the first form's)."""
    found = re.search(r'name="next" value="([^"]*)"', html)
    assert found, "no next field"
    return found.group(1).replace("&amp;", "&")


def _link(html: str, text: str) -> str:
    found = re.search(rf'href="([^"]*)">{text}<', html)
    assert found, text
    return found.group(1).replace("&amp;", "&")


def test_reopen_from_the_last_page_of_the_dismissed_tab_lands_on_the_page_now_last(
    client_for: ClientFor,
) -> None:
    # given: one more dismissed pair than fits a page; the reviewer is on page 2 of 別人
    pairs = [_pair(n) for n in range(QUEUE_PER_PAGE + 1)]
    for pair in pairs:
        duplicate_dismiss(candidate=pair, acting_user=SYSTEM)
    client = client_for(Role.OPERATOR)
    page_two = client.get(reverse("duplicates:queue"), {"status": "dismissed", "page": "2"})
    html = page_two.content.decode()
    # when: 確認待ちに戻す on its only pair (the first dismissed)
    response = client.post(
        reverse("duplicates:reopen", args=[pairs[0].pk]), {"next": _next_field(html)}
    )
    # then: still in 別人, on the page that is now its last
    assert response["Location"] == reverse("duplicates:queue") + "?status=dismissed&page=1"
    followed = client.get(response["Location"]).content.decode()
    assert f"候補 #{pairs[0].pk} を確認待ちに戻しました" in followed
    assert 'aria-current="page">別人' in followed


def test_taking_back_a_dismiss_made_with_htmx_returns_to_the_same_page(
    client_for: ClientFor,
) -> None:
    # given: two pages of open pairs; the reviewer presses 「別人」 on page 2 (htmx)
    pairs = [_pair(n) for n in range(QUEUE_PER_PAGE + 2)]
    client = client_for(Role.MARKETER)
    here = _next_field(client.get(reverse("duplicates:queue"), {"page": 2}).content.decode())
    fragment = client.post(
        reverse("duplicates:dismiss", args=[pairs[0].pk]),
        {"next": here},
        headers={"HX-Request": "true"},
    ).content.decode()
    # when: 「元に戻す」 in the replaced pair
    response = client.post(
        reverse("duplicates:reopen", args=[pairs[0].pk]), {"next": _next_field(fragment)}
    )
    # then
    assert response["Location"] == reverse("duplicates:queue") + "?page=2"


def test_merging_from_a_queue_page_returns_to_that_page(client_for: ClientFor) -> None:
    # given: the reviewer presses 「統合する」 on page 2 of 確認待ち
    pairs = [_pair(n) for n in range(QUEUE_PER_PAGE + 2)]
    client = client_for(Role.OPERATOR)
    here = _next_field(client.get(reverse("duplicates:queue"), {"page": 2}).content.decode())
    url = reverse("duplicates:merge", args=[pairs[0].pk])
    confirm = client.get(
        url, {"survivor": str(pairs[0].customer_a_id), "next": here}
    ).content.decode()
    # when: confirmed
    response = client.post(
        url, {"survivor": pairs[0].customer_a_id, "next": _next_field(confirm)}, follow=True
    )
    # then: back on page 2, told what happened and where to take it back
    assert response.redirect_chain == [(reverse("duplicates:queue") + "?page=2", 302)]
    html = response.content.decode()
    assert f"顧客 #{pairs[0].customer_b_id} を顧客 #{pairs[0].customer_a_id} に統合しました" in html
    assert "「統合済み」から取り消せます" in html
    assert CustomerMerge.objects.filter(candidate=pairs[0]).exists()
    # and 「やめる」 on the confirmation page led back there too
    assert _link(confirm, "やめる") == reverse("duplicates:queue") + "?page=2"


def test_undoing_from_the_merged_tab_returns_to_it(client_for: ClientFor) -> None:
    # given: two pages of merges; the reviewer opens 「統合を取り消す」 on page 2 of 統合済み
    pairs = [_pair(n) for n in range(QUEUE_PER_PAGE + 1)]
    for pair in pairs:
        customer_merge(survivor=pair.customer_a, absorbed=pair.customer_b, acting_user=SYSTEM)
    client = client_for(Role.OPERATOR)
    page_two = client.get(reverse("duplicates:queue"), {"status": "merged", "page": "2"})
    confirm_url = _link(page_two.content.decode(), "統合を取り消す")
    confirm = client.get(confirm_url).content.decode()
    # when
    response = client.post(confirm_url, {"next": _next_field(confirm)})
    # then: back in 統合済み, on its last page now that page 2 emptied
    assert response["Location"] == reverse("duplicates:queue") + "?status=merged&page=1"
    assert "統合を取り消しました" in client.get(response["Location"]).content.decode()


def test_merged_history_offers_undo(
    client_for: ClientFor, candidate: DuplicateCandidate, merge: CustomerMerge
) -> None:
    html = (
        client_for(Role.OPERATOR)
        .get(reverse("duplicates:queue"), {"status": "merged"})
        .content.decode()
    )
    assert reverse("duplicates:merge_undo", args=[merge.pk]) in html
    assert reverse("duplicates:merge_detail", args=[merge.pk]) in html


def test_the_merged_tab_shows_the_absorbed_record_as_merged_not_withdrawn(
    client_for: ClientFor, candidate: DuplicateCandidate, merge: CustomerMerge
) -> None:
    """QA: the 統合済み tab called the merged-away record 「退会」 while its own page said
    統合済み."""
    html = (
        client_for(Role.OPERATOR)
        .get(reverse("duplicates:queue"), {"status": "merged"})
        .content.decode()
    )
    head = html.split(f"顧客ID {merge.absorbed_id}</span>", 1)[1].split("</p>", 1)[0]
    assert "統合済み" in head
    assert "退会" not in head


# --- erased records ----------------------------------------------------------------------------


def _erase(customer: Customer) -> None:
    privacy.customer_erase(customer=customer, acting_user=SYSTEM, reason="受付番号 1")


def test_a_pair_closed_by_an_erasure_is_listed_as_such_without_actions(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    # when: one of the two records is erased
    _erase(candidate.customer_b)
    # then: the pair left the open queue for the tab of pairs closed by an erasure
    client = client_for(Role.OPERATOR)
    assert (
        "確認待ちの重複候補はありません" in client.get(reverse("duplicates:queue")).content.decode()
    )
    html = client.get(reverse("duplicates:queue"), {"status": "erased"}).content.decode()
    assert '削除により対象外 <span class="dup-count">1</span>' in html
    assert "個人データの削除(匿名化)により対象外" in html
    assert "別人として確認済み" not in html
    for action in ("duplicates:merge", "duplicates:dismiss", "duplicates:reopen"):
        assert reverse(action, args=[candidate.pk]) not in html


def test_a_dismissed_pair_with_an_erased_record_cannot_be_put_back_or_merged(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    """QA: the operator took a pair with an erased record back from 「別人」 and merged it,
    filling the erased record with the other record's name again."""
    # given: a pair an older Kizuna closed as 「別人」 when it erased one of them
    _erase(candidate.customer_b)
    DuplicateCandidate.objects.filter(pk=candidate.pk).update(status=DuplicateStatus.DISMISSED)
    client = client_for(Role.OPERATOR)
    # then: the 別人 tab offers nothing to take back
    html = client.get(reverse("duplicates:queue"), {"status": "dismissed"}).content.decode()
    assert reverse("duplicates:reopen", args=[candidate.pk]) not in html
    assert "削除(匿名化)済みのため、確認待ちに戻せません" in html
    # and posting it anyway is refused with the reason
    response = client.post(reverse("duplicates:reopen", args=[candidate.pk]), follow=True)
    assert "削除(匿名化)済みのため、確認待ちに戻せません" in response.content.decode()
    candidate.refresh_from_db()
    assert candidate.status == DuplicateStatus.DISMISSED
    # and so is a merge, should the pair be open (an import racing the erasure)
    DuplicateCandidate.objects.filter(pk=candidate.pk).update(status=DuplicateStatus.OPEN)
    assert (
        "確認待ちの重複候補はありません" in client.get(reverse("duplicates:queue")).content.decode()
    )
    url = reverse("duplicates:merge", args=[candidate.pk])
    page = client.get(url, {"survivor": candidate.customer_b_id}).content.decode()
    assert "削除(匿名化)済みのため、統合できません" in page
    assert "に統合する</button>" not in page
    refused = client.post(url, {"survivor": candidate.customer_b_id})
    assert refused.status_code == 409
    assert not CustomerMerge.objects.exists()
    erased = Customer.objects.get(pk=candidate.customer_b_id)
    assert (erased.given_name, erased.family_kana) == ("", "")


# --- merge detail and undo --------------------------------------------------------------------


def test_the_merge_page_shows_what_moved(
    client_for: ClientFor, candidate: DuplicateCandidate, merge: CustomerMerge
) -> None:
    html = (
        client_for(Role.OPERATOR)
        .get(reverse("duplicates:merge_detail", args=[merge.pk]))
        .content.decode()
    )
    # a merge in effect reads as done (統合中 read as still running)
    assert '<span class="badge member-member">統合済み</span>' in html
    assert "統合中" not in html
    assert "注文 1件" in html
    assert "識別子 1件" in html
    assert "統合元に同意の記録はありません" in html


def test_undo_from_the_merge_page(
    client_for: ClientFor, candidate: DuplicateCandidate, merge: CustomerMerge
) -> None:
    # given
    client = client_for(Role.OPERATOR)
    url = reverse("duplicates:merge_undo", args=[merge.pk])
    assert "統合の後に作られた注文" in client.get(url).content.decode()
    # when
    response = client.post(url, follow=True)
    # then
    html = response.content.decode()
    assert "統合を取り消しました" in html
    assert "取り消し済み" in html
    merge.refresh_from_db()
    assert merge.undone_by == "operator-user"
    absorbed = Customer.objects.get(pk=candidate.customer_b_id)
    assert absorbed.merged_into_id is None
    # the pair is back in the queue
    queue = client.get(reverse("duplicates:queue")).content.decode()
    assert f"候補 #{candidate.pk}・" in queue
    # and a second undo is refused, clearly
    again = client.post(url)
    assert again.status_code == 409
    assert "この統合は既に取り消されています" in again.content.decode()


def test_undo_lists_the_survivor_s_profile_changes_made_while_merged(
    client_for: ClientFor, candidate: DuplicateCandidate, merge: CustomerMerge
) -> None:
    # given: while merged, an update for the absorbed record's cart ID reached the survivor
    survivor = Customer.objects.get(pk=merge.survivor_id)
    before = survivor.family_name
    customer_update(
        customer=survivor,
        changes={"family_name": "統合後"},
        acting_user=Actor.system("webhook:cart"),
    )
    client = client_for(Role.OPERATOR)
    url = reverse("duplicates:merge_undo", args=[merge.pk])
    # then the undo page says the change stays with the survivor, from what to what, by whom
    html = client.get(url).content.decode()
    assert f"統合の後に変わった顧客 #{merge.survivor_id} の情報" in html
    row = re.search(
        r"<tr><td class=\"nowrap\">[^<]*</td><td>system:webhook:cart</td>.*?</tr>", html
    )
    assert row is not None
    assert f'<th scope="row">姓</th><td class="muted">{before}</td><td>統合後</td>' in row[0]
    # and after the undo, a new change is no longer the merge's
    client.post(url)
    customer_update(
        customer=survivor,
        changes={"family_name": "その後"},
        acting_user=Actor.system("webhook:cart"),
    )
    detail = client.get(reverse("duplicates:merge_detail", args=[merge.pk]))
    assert detail.context["detail"].later_changes[0].change.new == "統合後"
    assert len(detail.context["detail"].later_changes) == 1


def test_an_undone_merge_puts_the_pair_back_for_a_new_decision_with_its_history(
    client_for: ClientFor, candidate: DuplicateCandidate, merge: CustomerMerge
) -> None:
    # given
    client = client_for(Role.OPERATOR)
    # when
    client.post(reverse("duplicates:merge_undo", args=[merge.pk]))
    # then: no longer under 統合済み ...
    merged = client.get(reverse("duplicates:queue"), {"status": "merged"}).content.decode()
    assert "統合した候補はまだありません" in merged
    assert '統合済み <span class="dup-count">0</span>' in merged
    # ... but waiting for a decision again, saying it was merged once and taken back
    queue = client.get(reverse("duplicates:queue")).content.decode()
    assert f"候補 #{candidate.pk}・" in queue
    assert "に一度統合し、" in queue
    assert "operator-user が取り消した候補です" in queue
    assert reverse("duplicates:merge_detail", args=[merge.pk]) in queue


def _match_line(html: str, label: str) -> str:
    """The 「一致した…」 line of a pair: the values its reason was matched on."""
    found = re.search(rf"一致した{label}</span>(.*?)</p>", html, re.S)
    assert found, label
    return found.group(1)


def test_a_pair_proposed_on_a_shared_phone_shows_that_phone(client_for: ClientFor) -> None:
    # given: a second registration over the phone with the same number and a new e-mail, which
    # identity resolution proposes (the number stays with the record that already had it)
    profile = {"family_name": "山田", "given_name": "花子", "family_kana": "ヤマダ"}
    first = customer_resolve(
        identities={IdentityKind.PHONE: "090-5555-0001", IdentityKind.EMAIL: "a@example.jp"},
        profile={**profile, "given_kana": "ハナコ"},
        acting_user=SYSTEM,
        source="test",
    ).customer
    customer_resolve(
        identities={IdentityKind.PHONE: "09055550001", IdentityKind.EMAIL: "b@example.jp"},
        profile={**profile, "given_kana": "ハナゴ"},
        acting_user=SYSTEM,
        source="test",
    )
    candidate = DuplicateCandidate.objects.get()
    assert candidate.reason.startswith("同じ電話番号で")
    # when / then: the reviewer sees the number in the queue and on the confirmation page
    for role in (Role.OPERATOR, Role.MARKETER, Role.ADMIN):
        client = client_for(role)
        pages = [
            client.get(reverse("duplicates:queue")),
            client.get(reverse("duplicates:merge", args=[candidate.pk])),
        ]
        for page in pages:
            line = _match_line(page.content.decode(), "電話番号")
            assert "090-5555-0001" in line, role
            assert f"顧客ID {first.pk}" in line, role
    # and the page stays closed to those who may not see personal data
    analyst = client_for(Role.ANALYST).get(reverse("duplicates:queue"))
    assert analyst.status_code == 403
    assert "090-5555-0001" not in analyst.content.decode()


def test_a_pair_proposed_on_kana_and_postal_code_shows_both(
    client_for: ClientFor, candidate: DuplicateCandidate
) -> None:
    html = client_for(Role.OPERATOR).get(reverse("duplicates:queue")).content.decode()
    assert "ヤマダ ハナコ" in _match_line(html, "氏名カナ")
    assert "〒150-0002" in _match_line(html, "郵便番号")


def test_a_pair_proposed_on_a_shared_email_shows_that_address(client_for: ClientFor) -> None:
    holder = make_customer(given_name="一郎")
    other = make_customer(given_name="次郎")
    add_identity(holder, IdentityKind.EMAIL, "family@example.jp")
    candidate = DuplicateCandidate.objects.create(
        customer_a=holder, customer_b=other, reason="同じメールで別の顧客"
    )
    html = (
        client_for(Role.OPERATOR)
        .get(reverse("duplicates:merge", args=[candidate.pk]))
        .content.decode()
    )
    line = _match_line(html, "メール")
    assert "family@example.jp" in line
    assert f"顧客ID {holder.pk}" in line


def test_a_phone_pair_whose_records_hold_other_numbers_does_not_call_them_all_matched(
    client_for: ClientFor,
) -> None:
    # given: a pair proposed on a shared phone, where the second record also has a number of
    # its own (only the reason is kept, so both numbers are listed)
    holder = make_customer(given_name="一郎")
    other = make_customer(given_name="次郎")
    add_identity(holder, IdentityKind.PHONE, "09012345678")
    add_identity(other, IdentityKind.PHONE, "09011112222")
    DuplicateCandidate.objects.create(
        customer_a=holder, customer_b=other, reason="同じ電話番号で別の顧客"
    )
    # when
    html = client_for(Role.OPERATOR).get(reverse("duplicates:queue")).content.decode()
    # then: the heading says one of them matched, not that both did
    assert "一致した電話番号" not in html
    found = re.search(r"電話番号\(このうち1件が一致\)</span>(.*?)</p>", html, re.S)
    assert found
    assert "090-1234-5678" in found.group(1)
    assert "090-1111-2222" in found.group(1)


def test_unknown_records_are_404(client_for: ClientFor) -> None:
    client = client_for(Role.OPERATOR)
    assert client.get(reverse("duplicates:merge", args=[999])).status_code == 404
    assert client.get(reverse("duplicates:merge_detail", args=[999])).status_code == 404
    assert client.post(reverse("duplicates:dismiss", args=[999])).status_code == 404
