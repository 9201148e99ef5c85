"""Japanese normalisation: the variants operators and carts really produce meet one key."""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kizuna.core import jp


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("090-1234-5678", "+819012345678"),
        ("０９０－１２３４－５６７８", "+819012345678"),  # full-width digits, full-width hyphen
        ("090ー1234ー5678", "+819012345678"),  # katakana long-vowel mark typed as a dash
        ("090−1234−5678", "+819012345678"),  # minus sign
        ("090‐1234‐5678", "+819012345678"),  # hyphen U+2010
        ("090ｰ1234ｰ5678", "+819012345678"),  # half-width long-vowel mark
        ("090 1234 5678", "+819012345678"),
        ("(03)1234-5678", "+81312345678"),  # Tokyo landline with bracketed area code
        ("03（1234）5678", "+81312345678"),  # full-width brackets
        ("+81 90-1234-5678", "+819012345678"),
        ("+81-3-1234-5678", "+81312345678"),
        ("0081312345678", "+81312345678"),  # international prefix written with 00
        ("0120-123-456", "+81120123456"),  # toll-free
        ("06-6123-4567", "+81661234567"),  # Osaka
    ],
)
def test_phone_numbers_normalise_to_e164(raw: str, expected: str) -> None:
    assert jp.normalize_phone(raw) == expected


def _right_length(digits: str) -> bool:
    """A domestic number (with its 0) has the length of its kind: 11 digits for 020/050/070/
    080/090 (0800 included), 10 for the rest; 060 may be either."""
    if digits[1:3] in {"20", "50", "70", "80", "90"}:
        return len(digits) == 11
    return digits.startswith("060") or len(digits) == 10


@settings(max_examples=500, deadline=None)
@given(st.from_regex(r"0[1-9][0-9]{8,9}", fullmatch=True))
def test_domestic_numbers_read_as_phonenumbers_reads_them(digits: str) -> None:
    """Domestic numbers skip phonenumbers (for speed); whatever 0 + 9 or 10 digits a cart
    sends, the result must be the one phonenumbers gives — or the same refusal, and a refusal
    of a number too long or short for its kind."""
    try:
        parsed = phonenumbers.parse(digits, "JP")
        possible = phonenumbers.is_possible_number(parsed) and (
            parsed.country_code != 81 or _right_length(digits)  # 010…: a call abroad
        )
    except phonenumbers.NumberParseException:
        possible = False
    if not possible:
        with pytest.raises(jp.NormalisationError):
            jp.normalize_phone(digits)
        return
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    assert jp.normalize_phone(digits) == e164


@pytest.mark.parametrize("raw", ["", "abc", "12", "090-1234", "メール"])
def test_unreadable_phone_numbers_are_refused(raw: str) -> None:
    with pytest.raises(jp.NormalisationError):
        jp.normalize_phone(raw)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("03-1234-5678", "+81312345678"),  # Tokyo
        ("06-6123-4567", "+81661234567"),  # Osaka
        ("011-123-4567", "+81111234567"),  # Sapporo
        ("0466-12-3456", "+81466123456"),  # Fujisawa, 4-digit area code
        ("04992-1-2345", "+81499212345"),  # Izu Ōshima, 5-digit area code
        ("0120-123-456", "+81120123456"),  # free dial
        ("0800-123-4567", "+818001234567"),  # free dial, 11 digits
        ("0570-123-456", "+81570123456"),  # navi dial
        ("050-1234-5678", "+815012345678"),  # IP phone
        ("070-1234-5678", "+817012345678"),
        ("080-1234-5678", "+818012345678"),
        ("+81 90-1234-5678", "+819012345678"),
        ("+81 3-1234-5678", "+81312345678"),
        ("+1 212-555-0123", "+12125550123"),  # New York
        ("+44 20 7946 0958", "+442079460958"),  # London
        ("+82 10-1234-5678", "+821012345678"),  # a Korean mobile
    ],
)
def test_real_shaped_numbers_of_every_kind_are_accepted(raw: str, expected: str) -> None:
    assert jp.normalize_phone(raw) == expected


MOBILE_LENGTH = "電話番号の桁数が正しくありません(070・080・090・050・020 で始まる番号は11桁です)"
LANDLINE_LENGTH = "電話番号の桁数が正しくありません(固定電話などは市外局番から10桁です)"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("090-1234-567", MOBILE_LENGTH),  # a mobile number one digit short
        ("０９０－１２３４－５６７", MOBILE_LENGTH),
        ("080-1234-56789", MOBILE_LENGTH),
        ("070-123-4567", MOBILE_LENGTH),
        ("050-123-4567", MOBILE_LENGTH),
        ("0800-123-456", MOBILE_LENGTH),  # 0800 starts with 080 and is 11 digits too
        ("+81 90-1234-567", MOBILE_LENGTH),
        ("03-1234-567", LANDLINE_LENGTH),  # a landline one digit short
        ("03-1234-56789", LANDLINE_LENGTH),
        ("0120-1234-567", LANDLINE_LENGTH),
        ("+81 3-1234-567", LANDLINE_LENGTH),
    ],
)
def test_a_number_too_short_or_long_for_its_kind_is_refused(raw: str, message: str) -> None:
    with pytest.raises(jp.NormalisationError) as refused:
        jp.normalize_phone(raw)
    assert str(refused.value) == message


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("150-0002", "1500002"),
        ("〒150-0002", "1500002"),
        ("〒１５０－０００２", "1500002"),
        ("１５０ー０００２", "1500002"),
        ("1500002", "1500002"),
    ],
)
def test_postal_codes_normalise_to_seven_digits(raw: str, expected: str) -> None:
    assert jp.normalize_postal_code(raw) == expected
    assert jp.format_postal_code(expected) == "150-0002"


@pytest.mark.parametrize("raw", ["150-002", "15000021", "abc-defg", ""])
def test_bad_postal_codes_are_refused_in_japanese(raw: str) -> None:
    with pytest.raises(jp.NormalisationError, match="郵便番号"):
        jp.normalize_postal_code(raw)


@pytest.mark.parametrize(
    "spelling",
    ["ヤマダ タロウ", "やまだ　たろう", "ﾔﾏﾀﾞ ﾀﾛｳ", "ヤマダタロウ", "やまだタロウ"],
)
def test_kana_in_any_script_meets_one_key(spelling: str) -> None:
    assert jp.normalize_kana(spelling) == "ヤマダタロウ"


def test_half_width_voiced_kana_combine() -> None:
    # ｶﾞ is two code points in half-width; it must become the single ガ.
    assert jp.normalize_kana("ｶﾞｯｺｳ") == "ガッコウ"
    assert jp.normalize_kana("ﾊﾟｰﾄ") == "パート"


def test_is_kana_tells_kana_from_kanji() -> None:
    assert jp.is_kana("やまだ")
    assert jp.is_kana("ﾔﾏﾀﾞ")
    assert not jp.is_kana("山田")
    assert not jp.is_kana("yamada")


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("やまだ", "ヤマダ"),
        ("ﾔﾏﾀﾞ ﾀﾛｳ", "ヤマダタロウ"),
        ("ジョン・スミス", "ジョン・スミス"),
        ("ｼﾞｮﾝ･ｽﾐｽ", "ジョン・スミス"),  # the half-width middle dot too
        ("ゆーこ", "ユーコ"),
        ("ｻﾄｰ", "サトー"),  # half-width long-vowel mark
        ("ヴィクトリア", "ヴィクトリア"),
        ("ゔぁにら", "ヴァニラ"),
        ("ヵヶ", "ヵヶ"),
        ("ヷヸヹヺ", "ヷヸヹヺ"),  # U+30F7–U+30FA, the end of the block
        ("ァ", "ァ"),  # U+30A1, its start
        ("", ""),
        ("　", ""),
    ],
)
def test_a_reading_in_kana_is_taken_as_katakana(typed: str, stored: str) -> None:
    assert jp.normalize_reading(typed, "フリガナ(セイ)") == stored


@pytest.mark.parametrize(
    "typed",
    [
        "山田",
        "123",
        "１２３",
        "yamada",
        "ＹＡＭＡＤＡ",
        "ヤマダ1",
        "やま田",
        "ヤマダ-",
        "ヽ",
        "ヤマダ。",
        "㈱",
    ],
)
def test_a_reading_with_anything_but_kana_is_refused_naming_the_field(typed: str) -> None:
    with pytest.raises(jp.NormalisationError) as excinfo:
        jp.normalize_reading(typed, "フリガナ(メイ)")
    assert str(excinfo.value) == "フリガナ(メイ)はカタカナ(またはひらがな)で入力してください"
    assert not jp.is_kana(typed)  # and search does not take it as kana either


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (" Taro.Yamada@Example.CO.JP ", "taro.yamada@example.co.jp"),
        ("ｔａｒｏ＠ｅｘａｍｐｌｅ．ｊｐ", "taro@example.jp"),  # full-width ASCII
    ],
)
def test_emails_are_lower_cased_and_nfkc(raw: str, expected: str) -> None:
    assert jp.normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("taro", "@ がありません"),
        ("taro@", "ドメイン名"),
        ("@example.jp", "@ の前が空です"),
        ("taro@example", "ドメイン名"),
        ("a@b@example.jp", "@ が2つ以上あります"),
        ("bad@@example.jp", "@ が2つ以上あります"),
        ("a@.example.jp", "ドメイン名"),
        ("a@example..jp", "ドメイン名"),
        ("a@example.jp.", "ドメイン名"),
        ("a@-example.jp", "ドメイン名"),
        ("a@example-.jp", "ドメイン名"),
        ("a@exa_mple.jp", "ドメイン名"),
        ("a@192.0.2.1", "ドメイン名"),
        ("a@[192.0.2.1]", "ドメイン名"),
        ("a..b@example.jp", "「.」の位置"),
        (".a@example.jp", "「.」の位置"),
        ("a.@example.jp", "「.」の位置"),
        ('"x"@example.jp', "使えない文字"),
        ("<script>@example.jp", "使えない文字"),
        ("taro yamada@example.jp", "使えない文字"),
        ("a,b@example.jp", "使えない文字"),
        ("山田@example.jp", "使えない文字"),
        ("taro@例え.jp", "xn--"),  # an internationalised domain: written as punycode, below
        (".taro@docomo.ne.jp", "「.」の位置"),  # the carriers never allowed a dot first
    ],
)
def test_bad_emails_are_refused(raw: str, reason: str) -> None:
    with pytest.raises(jp.NormalisationError) as refused:
        jp.normalize_email(raw)
    message = str(refused.value)
    assert message.startswith("メールアドレスとして読めません")
    assert reason in message
    local = raw.split("@", maxsplit=1)[0]
    assert not local or local not in message  # the value is not repeated


@pytest.mark.parametrize(
    "raw",
    [
        "o'brien+shop@example.ie",
        "a.b-c_d@mail.example-shop.co.jp",
        "taro@xn--r8jz45g.jp",  # 例え.jp
        "x@example.xn--wgv71a",
    ],
)
def test_addresses_people_use_are_accepted(raw: str) -> None:
    assert jp.normalize_email(raw) == raw


@pytest.mark.parametrize(
    "raw",
    [
        "taro..yamada@docomo.ne.jp",
        "taro.@docomo.ne.jp",
        "hanako.@ezweb.ne.jp",
        "hanako..@biz.ezweb.ne.jp",
        "Taro..Yamada@au.com",
        "taro..y@softbank.ne.jp",
    ],
)
def test_carrier_addresses_from_before_2009_are_accepted(raw: str) -> None:
    # docomo and au let customers create addresses with ".." or a dot before the @ until
    # 2009; they still deliver to them and shops have such customers (docs/ingest.md)
    assert jp.normalize_email(raw) == raw.lower()


def test_the_carrier_exception_is_for_the_carriers_domains_only() -> None:
    for raw in ("taro..yamada@docomo.ne.jp.example.jp", "taro..yamada@notdocomo.ne.jp"):
        with pytest.raises(jp.NormalisationError):
            jp.normalize_email(raw)


def test_the_lookup_key_skips_the_address_check() -> None:
    # addresses stored before the check (search, the suppression list) are still found
    assert jp.email_key(" A..B@Example.jp ") == "a..b@example.jp"
    with pytest.raises(jp.NormalisationError):
        jp.email_key("not-an-address")


def test_an_email_longer_than_mail_systems_deliver_is_refused() -> None:
    # 254 characters is the longest address SMTP carries (RFC 5321) and what Kizuna stores
    longest = "a" * 243 + "@example.jp"
    assert jp.normalize_email(longest) == longest
    with pytest.raises(jp.NormalisationError, match="254文字まで"):
        jp.normalize_email("a" + longest)


def test_the_name_search_key_folds_kanji_variants_and_drops_spaces() -> None:
    # The key only: the name itself keeps 髙 as the customer wrote it (test_search). An operator
    # typing 高橋 must find 髙橋, and the other way round.
    assert jp.name_key("髙橋　一郎") == "高橋一郎"
    assert jp.name_key("渡邊 一郎") == jp.name_key("渡邉一郎") == jp.name_key("渡辺一郎")
    assert jp.name_key("山田 太郎") == "山田太郎"
    # NFKC folds compatibility forms (full-width Latin in company names).
    assert jp.name_key("ＡＢＣ商事") == "ABC商事"
    # 斎藤 and 斉藤 are different names, not variants of one: they stay apart.
    assert jp.name_key("斎藤") != jp.name_key("斉藤")


@pytest.mark.parametrize(
    ("raw", "code"),
    [("東京都", 13), ("東京", 13), ("北海道", 1), ("京都府", 26), ("京都", 26), ("大阪", 27),
     ("沖縄県", 47), ("13", 13), ("１３", 13), (47, 47)],
)  # fmt: skip
def test_prefectures_by_name_short_name_or_code(raw: str | int, code: int) -> None:
    assert jp.prefecture_code(raw) == code


def test_all_47_prefectures_are_known_in_jis_order() -> None:
    assert len(jp.PREFECTURES) == 47
    assert jp.PREFECTURES[0] == "北海道"
    assert jp.PREFECTURES[12] == "東京都"
    assert jp.PREFECTURES[46] == "沖縄県"


@pytest.mark.parametrize("raw", ["東京市", "0", "48", "Tokyo"])
def test_unknown_prefectures_are_refused(raw: str) -> None:
    with pytest.raises(jp.NormalisationError):
        jp.prefecture_code(raw)


@pytest.mark.parametrize("typed", ["KZ-0001", "KZー0001", "ＫＺ－０００１", "KZ−0001", " KZ‐0001 "])
def test_identifiers_typed_through_an_ime_meet_the_ascii_form(typed: str) -> None:
    assert jp.normalize_identifier(typed) == "KZ-0001"
