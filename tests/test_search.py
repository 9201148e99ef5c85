"""Customer search: every way an operator may type a key finds the customer, and only them."""

from __future__ import annotations

from collections.abc import Callable
from types import SimpleNamespace

import pytest
from django.core.servers.basehttp import WSGIRequestHandler
from django.db import connection
from django.test import Client
from django.urls import reverse
from pytest_django import DjangoAssertNumQueries, Settings

from kizuna.accounts.models import Role, User
from kizuna.customers.models import Customer, IdentityKind
from kizuna.customers.selectors import customer_rows, customer_search, parse_query
from kizuna.customers.services import customer_update
from tests.factories import add_identity, make_customer, make_order

pytestmark = pytest.mark.django_db

LIMIT = 50


@pytest.fixture
def hanako() -> Customer:
    customer = make_customer()  # 山田 花子 / ヤマダ ハナコ
    add_identity(customer, IdentityKind.PHONE, "+819012345678", "090-1234-5678")
    add_identity(customer, IdentityKind.PHONE, "+81312345678", "03-1234-5678")
    add_identity(
        customer, IdentityKind.EMAIL, "hanako.yamada@example.jp", "Hanako.Yamada@example.jp"
    )
    add_identity(customer, IdentityKind.CART_MEMBER, "M-000123")
    add_identity(customer, IdentityKind.LINE_USER, "U4af4980629a1b2c3d4e5f60718293a4b")
    make_order(customer, number="KZ20250304001")
    return customer


@pytest.fixture
def taro() -> Customer:
    """A near neighbour: same family name, different given name, different keys."""
    customer = make_customer(given_name="太郎", given_kana="タロウ")
    add_identity(customer, IdentityKind.PHONE, "+819087654321", "090-8765-4321")
    add_identity(customer, IdentityKind.EMAIL, "taro@example.jp")
    return customer


@pytest.fixture
def sato() -> Customer:
    customer = make_customer(
        family_name="佐藤", given_name="健太", family_kana="サトウ", given_kana="ケンタ"
    )
    add_identity(customer, IdentityKind.PBX_CALLER, "+819011112222", "09011112222")
    return customer


def ids(query: str) -> list[int]:
    return [c.pk for c in customer_search(query, limit=LIMIT)]


@pytest.mark.parametrize(
    "query",
    [
        "０９０ー１２３４ー５６７８",  # full-width digits, katakana long-vowel mark as hyphen
        "０９０－１２３４－５６７８",  # full-width hyphen-minus
        "090-1234-5678",
        "09012345678",
        "090‐1234‐5678",  # U+2010 hyphen
        "090−1234−5678",  # U+2212 minus sign
        "090 1234 5678",
        "(090)1234-5678",
        "+81 90-1234-5678",
        "+819012345678",
    ],
)
def test_phone_in_any_format(hanako: Customer, taro: Customer, query: str) -> None:
    assert ids(query) == [hanako.pk]


@pytest.mark.parametrize(
    "query", ["tel:090-1234-5678", "TEL:+819012345678", "mailto:Hanako.Yamada@example.jp"]
)
def test_a_number_or_address_copied_from_a_link(
    hanako: Customer, taro: Customer, query: str
) -> None:
    assert ids(query) == [hanako.pk]


def test_landline(hanako: Customer, taro: Customer) -> None:
    assert ids("03-1234-5678") == [hanako.pk]
    assert ids("０３（１２３４）５６７８") == [hanako.pk]


def test_pbx_caller_number_counts_as_phone(sato: Customer, hanako: Customer) -> None:
    assert ids("090-1111-2222") == [sato.pk]


@pytest.mark.parametrize(
    "query",
    [
        "hanako.yamada@example.jp",
        "HANAKO.YAMADA@EXAMPLE.JP",
        " Hanako.Yamada@Example.jp ",
        "ｈａｎａｋｏ.ｙａｍａｄａ＠ｅｘａｍｐｌｅ.ｊｐ",
    ],
)
def test_email_any_case(hanako: Customer, taro: Customer, query: str) -> None:
    assert ids(query) == [hanako.pk]


def test_an_address_stored_before_the_address_check_is_still_found(taro: Customer) -> None:
    # addresses like this one are refused as input now, but older rows may hold them
    add_identity(taro, IdentityKind.EMAIL, "taro..old@example.jp")
    assert ids("Taro..Old@example.jp") == [taro.pk]


@pytest.mark.parametrize(
    "query",
    ["やまだはなこ", "ヤマダハナコ", "ﾔﾏﾀﾞﾊﾅｺ", "ﾔﾏﾀﾞ ﾊﾅｺ", "やまだ　はなこ", "やまだは", "ﾔﾏﾀﾞﾊ"],
)
def test_kana_in_any_script(hanako: Customer, taro: Customer, sato: Customer, query: str) -> None:
    assert ids(query) == [hanako.pk]


def test_kana_family_prefix_finds_the_family_in_kana_order(
    hanako: Customer, taro: Customer, sato: Customer
) -> None:
    # ヤマダタロウ sorts after ヤマダハナコ in 五十音 (タ < ハ).
    assert ids("やまだ") == [taro.pk, hanako.pk]
    assert ids("ﾔﾏ") == [taro.pk, hanako.pk]


def test_kanji_family_name_prefix(hanako: Customer, taro: Customer, sato: Customer) -> None:
    assert ids("山田") == [taro.pk, hanako.pk]
    assert ids("山") == [taro.pk, hanako.pk]
    assert ids("佐藤") == [sato.pk]


def test_variant_kanji_find_each_other() -> None:
    # 髙橋 from the cart, 高橋 typed by the operator (and the other way round)
    takahashi = make_customer(family_name="髙橋", given_name="花子")
    watanabe = make_customer(family_name="渡辺", given_name="一郎")
    assert ids("高橋") == [takahashi.pk]
    assert ids("髙橋 花子") == [takahashi.pk]
    assert ids("渡邊") == [watanabe.pk]
    assert ids("渡邉一郎") == [watanabe.pk]
    takahashi.refresh_from_db()
    assert takahashi.family_name == "髙橋"  # the name itself is kept as written


def test_existing_names_are_refolded_by_the_migration() -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module(
        "kizuna.customers.migrations.0007_fold_variant_kanji_in_name_key"
    )
    # given: a customer saved before variant kanji were folded (its old search key)
    customer = make_customer(family_name="山﨑", given_name="花子")
    Customer.objects.filter(pk=customer.pk).update(name_key="山﨑花子")
    assert ids("山崎") == []
    # when
    migration.refold(apps, None)
    # then
    assert ids("山崎") == [customer.pk]


@pytest.mark.parametrize("query", ["山田 花子", "山田　花子", "山田花子", " 山田花 "])
def test_full_name_with_or_without_space(hanako: Customer, taro: Customer, query: str) -> None:
    assert ids(query) == [hanako.pk]


@pytest.mark.parametrize("query", ["花子", "花", "はなこ", "ハナコ", "ﾊﾅｺ", "ハナ"])
def test_given_name_or_reading_alone(
    hanako: Customer, taro: Customer, sato: Customer, query: str
) -> None:
    """The caller gives only a first name (「ナナミです」): the given name, in kanji or kana,
    finds the customer as the family name does."""
    assert ids(query) == [hanako.pk]


@pytest.mark.parametrize(
    "query", ["花子 山田", "花子　山田", "花 山田", "はなこ やまだ", "ハナコ　ヤマダ", "ﾊﾅｺ ﾔﾏﾀﾞ"]
)
def test_given_name_first(hanako: Customer, taro: Customer, sato: Customer, query: str) -> None:
    assert ids(query) == [hanako.pk]


def test_family_name_matches_rank_before_given_name_matches(hanako: Customer) -> None:
    # 阿部 花子 (アベハナコ) comes before 花田 (ハナダ) in kana order, but 「花」 read as the
    # start of a family name comes first; a customer matching both ways is listed once.
    abe = make_customer(family_name="阿部", family_kana="アベ")
    hanada = make_customer(family_name="花田", given_name="一郎", family_kana="ハナダ",
                           given_kana="イチロウ")  # fmt: skip
    hanako_hanada = make_customer(family_name="花田", given_name="花子", family_kana="ハナダ")
    assert ids("花") == [hanada.pk, hanako_hanada.pk, abe.pk, hanako.pk]
    assert ids("はな") == [hanada.pk, hanako_hanada.pk, abe.pk, hanako.pk]
    # the limit counts every group: the family matches fill it first
    found = [c.pk for c in customer_search("花", limit=3)]
    assert found[:2] == [hanada.pk, hanako_hanada.pk]
    assert found[2] in (abe.pk, hanako.pk)
    assert [c.pk for c in customer_search("はな", limit=1)] == [hanada.pk]


def test_two_words_in_family_first_order_rank_first() -> None:
    # 七海 is a family name too: 「七海 高橋」 is 七海 高橋 first, then 高橋 七海.
    takahashi = make_customer(family_name="高橋", given_name="七海", family_kana="タカハシ",
                              given_kana="ナナミ")  # fmt: skip
    nanami = make_customer(family_name="七海", given_name="高橋", family_kana="ナナミ",
                           given_kana="タカハシ")  # fmt: skip
    assert ids("七海 高橋") == [nanami.pk, takahashi.pk]
    assert ids("ナナミ タカハシ") == [nanami.pk, takahashi.pk]
    assert ids("高橋 七海") == [takahashi.pk, nanami.pk]


def test_a_renamed_customer_is_found_by_the_new_given_name(
    hanako: Customer, users: dict[Role, User]
) -> None:
    customer_update(
        customer=hanako,
        changes={"given_name": "七海", "given_kana": "ななみ"},
        acting_user=users[Role.OPERATOR],
    )
    assert ids("七海") == ids("ナナミ") == [hanako.pk]
    assert ids("花子") == ids("ハナコ") == []


def test_existing_customers_get_given_name_keys_from_the_migration() -> None:
    import importlib

    from django.apps import apps

    migration = importlib.import_module(
        "kizuna.customers.migrations.0009_index_given_name_and_reading_for_search"
    )
    # given: customers stored before the given name keys existed
    nanami = make_customer(given_name="七海", given_kana="ななみ")
    nameless = make_customer(given_name="", given_kana="")
    Customer.objects.update(given_name_key="", given_kana_key="")
    assert ids("七海") == ids("ナナミ") == []
    # when
    migration.BATCH = 1  # several batches
    migration.backfill(apps, SimpleNamespace(connection=connection))
    # then
    assert ids("七海") == ids("ナナミ") == [nanami.pk]
    nameless.refresh_from_db()
    assert (nameless.given_name_key, nameless.given_kana_key) == ("", "")


def test_order_number(hanako: Customer, taro: Customer) -> None:
    assert ids("KZ20250304001") == [hanako.pk]
    assert ids("ＫＺ２０２５０３０４００１") == [hanako.pk]  # typed in full width
    assert ids("KZ2025030400") == []  # order numbers match whole, not by prefix
    # read off a slip or typed quickly: lower case, a hyphen after the letters
    assert ids("kz20250304001") == [hanako.pk]
    assert ids("KZ-20250304001") == [hanako.pk]
    assert ids("kzー20250304001") == [hanako.pk]


def test_customer_id_as_every_page_labels_it(hanako: Customer, taro: Customer) -> None:
    """The duplicates, merge and customer pages name records 「顧客ID 1776」: an operator who
    reads one out finds it, in full width too, ahead of an order whose number is the same."""
    assert ids(str(taro.pk)) == [taro.pk]
    assert ids(str(taro.pk).translate(str.maketrans("0123456789", "０１２３４５６７８９"))) == [
        taro.pk
    ]
    make_order(hanako, number=str(taro.pk))
    assert ids(str(taro.pk)) == [taro.pk, hanako.pk]
    assert ids("9" * 30) == []  # a pasted slip number is not looked up as an ID


def test_cart_member_id(hanako: Customer, taro: Customer) -> None:
    assert ids("M-000123") == [hanako.pk]
    assert ids("Ｍ－０００１２３") == [hanako.pk]
    assert ids("m-000123") == [hanako.pk]


def test_line_user_id(hanako: Customer, taro: Customer) -> None:
    assert ids("U4af4980629a1b2c3d4e5f60718293a4b") == [hanako.pk]


def test_chat_id(hanako: Customer, taro: Customer) -> None:
    """The customer page lists a chat ID among the identifiers: an operator copying it from
    the chat tool finds the customer by it."""
    add_identity(hanako, IdentityKind.CHAT, "chat-00000003")
    assert ids("chat-00000003") == [hanako.pk]
    assert ids("ｃｈａｔ－００００００03") == [hanako.pk]


def test_no_false_matches(hanako: Customer, taro: Customer, sato: Customer) -> None:
    assert ids("090-8765-4321") == [taro.pk]
    assert ids("taro@example.jp") == [taro.pk]
    assert ids("090-0000-0000") == []
    assert ids("nobody@example.jp") == []
    assert ids("鈴木") == []
    assert ids("すずき") == []
    assert ids("田") == []  # names match from their start, not in the middle
    assert ids("こ") == []  # a given name matches from its start too
    assert ids("はなこ たなか") == []  # both words must match, in one order or the other
    assert ids("") == []
    assert ids("   ") == []


def test_exact_hits_come_before_name_matches() -> None:
    # A cart member ID that reads like the start of romaji names: the ID hit leads.
    smith = make_customer(family_name="Yamada", given_name="Ken", family_kana="", given_kana="")
    member = make_customer(family_name="佐藤", family_kana="サトウ")
    add_identity(member, IdentityKind.CART_MEMBER, "Yamada")
    assert ids("Yamada") == [member.pk, smith.pk]


def test_limit_is_respected() -> None:
    for i in range(7):
        make_customer(given_name=f"{i}子", given_kana=f"ア{'イ' * i}")
    assert len(customer_search("山田", limit=5)) == 5
    assert len(customer_search("ヤマダ", limit=5)) == 5
    assert len(customer_search("山田", limit=50)) == 7


def test_parse_query_routes_each_kind_to_its_key() -> None:
    assert parse_query("やまだ").kana_prefix == "ヤマダ"
    assert parse_query("やまだ").name_prefix == ""
    assert parse_query("山田 花子").name_prefix == "山田花子"
    assert parse_query("山田 花子").swapped_name_prefix == "花子山田"
    assert parse_query("山田 花子").given_name_prefix == ""  # two words: a full name
    assert parse_query("花子").given_name_prefix == "花子"
    assert parse_query("はなこ").given_kana_prefix == "ハナコ"
    assert parse_query("はなこ やまだ").swapped_kana_prefix == "ヤマダハナコ"
    assert parse_query("山田 花子").identifier == ""  # names are never IDs
    assert parse_query("山田").identifier == ""
    assert parse_query("やまだ").identifier == ""
    assert parse_query("ＫＺ－０１").identifier == "KZ-01"
    assert parse_query("０９０ー１２３４ー５６７８").phone == "+819012345678"
    assert parse_query("０９０ー１２３４ー５６７８").name_prefix == ""
    assert parse_query("A@B.JP").email == "a@b.jp"
    assert not parse_query("@")


def test_customer_rows_show_phone_email_and_last_order(
    hanako: Customer, taro: Customer, django_assert_num_queries: DjangoAssertNumQueries
) -> None:
    customers = customer_search("山田", limit=LIMIT)
    with django_assert_num_queries(2):  # identities, last order dates
        rows = customer_rows(customers)
    by_pk = {row.customer.pk: row for row in rows}
    assert by_pk[hanako.pk].phone == "090-1234-5678"
    assert by_pk[hanako.pk].email == "Hanako.Yamada@example.jp"
    assert by_pk[hanako.pk].last_ordered_at is not None
    assert by_pk[taro.pk].last_ordered_at is None


def test_customer_rows_show_every_phone_and_address_the_same_way() -> None:
    # given numbers and an address typed in full-width, without hyphens, as carts pass them on
    typed_full_width = make_customer(given_name="一郎")
    add_identity(typed_full_width, IdentityKind.PHONE, "+819063600394", "０９０−６３６０−０３９４")
    add_identity(
        typed_full_width,
        IdentityKind.EMAIL,
        "yamada_t663@example.com",
        "ｙａｍａｄａ_ｔ663＠ｅｘａｍｐｌｅ．ｃｏｍ",
    )
    typed_bare = make_customer(given_name="次郎")
    add_identity(typed_bare, IdentityKind.PHONE, "+819037782017", "09037782017")
    # then the list shows them as the operator reads them down the column
    rows = {row.customer.pk: row for row in customer_rows([typed_full_width, typed_bare])}
    assert rows[typed_full_width.pk].phone == "090-6360-0394"
    assert rows[typed_full_width.pk].email == "yamada_t663@example.com"
    assert rows[typed_bare.pk].phone == "090-3778-2017"
    assert rows[typed_bare.pk].email == ""


def test_customer_rows_show_the_address_messages_go_to() -> None:
    # a customer who gave a new address: the list shows the one Kizuna sends to
    customer = make_customer()
    add_identity(customer, IdentityKind.EMAIL, "old@example.jp")
    add_identity(customer, IdentityKind.EMAIL, "new@example.jp")
    (row,) = customer_rows([customer])
    assert row.email == "new@example.jp"


# --- the page --------------------------------------------------------------------------------


@pytest.fixture
def operator(client_for: Callable[[Role], Client]) -> Client:
    return client_for(Role.OPERATOR)


def test_search_page_lists_matches(operator: Client, hanako: Customer, taro: Customer) -> None:
    response = operator.get(reverse("web:customer_search"), {"q": "０９０ー１２３４ー５６７８"})
    assert response.status_code == 200
    html = response.content.decode()
    assert "<html" in html
    assert "山田 花子" in html
    assert "ヤマダ ハナコ" in html
    assert "090-1234-5678" in html
    assert "東京都" in html
    assert "山田 太郎" not in html
    assert reverse("web:customer_detail", args=[hanako.pk]) in html


def test_htmx_search_returns_only_the_results(operator: Client, hanako: Customer) -> None:
    response = operator.get(
        reverse("web:customer_search"), {"q": "やまだ"}, headers={"HX-Request": "true"}
    )
    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert "山田 花子" in html
    assert "HX-Request" in response["Vary"]


def test_search_page_has_live_search(operator: Client) -> None:
    html = operator.get(reverse("web:customer_search")).content.decode()
    assert 'hx-trigger="input changed delay:300ms, search"' in html
    assert 'hx-target="#search-results"' in html
    assert 'method="get"' in html  # works without JavaScript


def test_empty_query_explains_what_can_be_searched(operator: Client) -> None:
    html = operator.get(reverse("web:customer_search"), {"q": "  "}).content.decode()
    assert "氏名・フリガナ・電話番号・メール・注文番号・カート会員ID・顧客IDで検索できます" in html


def test_a_nul_byte_in_the_query_is_ignored(operator: Client, hanako: Customer) -> None:
    # Pasted from another application or typed into the URL; PostgreSQL refuses NUL in a query.
    response = operator.get(reverse("web:customer_search"), {"q": "090-1234-5678\x00"})
    assert response.status_code == 200
    assert "山田 花子" in response.content.decode()
    # and wherever else the search is used (the template preview), a name with a NUL
    assert ids("山田\x00花子") == [hanako.pk]


def test_no_results_says_so_with_tips(operator: Client, hanako: Customer) -> None:
    html = operator.get(reverse("web:customer_search"), {"q": "鈴木"}).content.decode()
    assert "該当する顧客が見つかりません" in html
    assert "姓だけ" in html


def test_more_than_the_limit_asks_to_narrow(operator: Client, settings: Settings) -> None:
    settings.KIZUNA_SEARCH_LIMIT = 3
    for i in range(5):
        make_customer(given_kana=f"ア{'イ' * i}")
    html = operator.get(reverse("web:customer_search"), {"q": "やまだ"}).content.decode()
    assert "3件以上あります。条件を絞り込んでください" in html
    assert html.count('class="result-row"') == 3


def test_search_page_query_count_does_not_grow_with_results(
    operator: Client, django_assert_max_num_queries: DjangoAssertNumQueries
) -> None:
    for i in range(12):
        customer = make_customer(given_kana=f"ア{'イ' * i}")
        add_identity(customer, IdentityKind.PHONE, f"+8190{i:08d}", f"090-{i:04d}-0000")
        add_identity(customer, IdentityKind.EMAIL, f"c{i}@example.jp")
        make_order(customer)
        make_order(customer)
    # session, user, name range, given name range (the room the family names left), identities,
    # last orders
    with django_assert_max_num_queries(6):
        response = operator.get(reverse("web:customer_search"), {"q": "山田"})
    assert response.content.decode().count('class="result-row"') == 12


def test_the_query_is_not_logged(
    operator: Client, hanako: Customer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("DEBUG")
    operator.get(reverse("web:customer_search"), {"q": "09012345678"})
    operator.get(reverse("web:customer_search"), {"q": "やまだはなこ"})
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "09012345678" not in logged
    assert "やまだはなこ" not in logged


def test_the_development_server_logs_a_refused_search_without_its_terms(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # given: `kizuna runserver` refusing an API search by e-mail (401 is logged at WARNING)
    server = SimpleNamespace(request=None, log_date_time_string=lambda: "24/Nov/2026 10:00:00")
    request_line = "GET /api/v1/customers?email=hanako.yamada%40example.jp&limit=5 HTTP/1.1"
    # when the server writes its request line through Django's own handler
    WSGIRequestHandler.log_message(server, '"%s" %s %s', request_line, "401", "57")  # type: ignore[arg-type]
    # then the line is there, without the address
    [record] = [r for r in caplog.records if r.name == "django.server"]
    assert record.getMessage() == '"GET /api/v1/customers?… HTTP/1.1" 401 57'
