"""Japanese normalisation, used wherever data enters Kizuna or is searched.

Operators type phone numbers with full-width digits, carts export kana in half-width katakana
and customers write their e-mail in upper case. Every such variant must meet the same stored
key, so each identity kind has exactly one normaliser here and nothing else normalises.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata

import jaconv
import phonenumbers

# Hyphen-like characters seen in Japanese phone numbers and postal codes. NFKC leaves several of
# them alone (the long-vowel mark ー and the minus sign − in particular), so they are listed.
_HYPHENS = "-‐‑‒–—―−ーｰ─━－﹣⁃˗"
_HYPHEN_RE = re.compile(f"[{re.escape(_HYPHENS)}]")
_SPACE_RE = re.compile(r"\s+")
_POSTAL_RE = re.compile(r"^(\d{3})(\d{4})$")
# 0 and a 9- or 10-digit national number (not 00… or 010…, the international prefixes): every such
# number is a possible Japanese number, and its E.164 form is +81 and the national number.
_DOMESTIC_RE = re.compile(r"0(?:[2-9]\d|1[1-9])\d{7,8}")


class NormalisationError(ValueError):
    """The value cannot be read as the kind of data asked for."""


def nfkc(value: str) -> str:
    """NFKC with surrounding whitespace removed: full-width ASCII becomes ASCII, ｶﾅ becomes カナ."""
    return unicodedata.normalize("NFKC", value).strip()


def clean_text(value: str) -> str:
    """Free text (names, addresses) in NFKC with runs of whitespace collapsed to one space."""
    return _SPACE_RE.sub(" ", nfkc(value))


def _strip_separators(value: str) -> str:
    text = _HYPHEN_RE.sub("", nfkc(value))
    return re.sub(r"[\s()（）.]", "", text)


# Japanese numbers whose length is fixed by their first digits, as the national number (without
# the 0): mobile 070/080/090, IP phone 050, M2M/pager 020 and free dial 0800 are 0 + 10 digits;
# every other number (landlines 0X, 0120, 0570, 0990…) is 0 + 9 digits. 060 is left to
# phonenumbers, whose plan gives it either length. phonenumbers only checks that a length occurs
# somewhere in the plan, so it took 090-1234-567 (a mobile number one digit short).
_ELEVEN_DIGITS = ("20", "50", "70", "80", "90")
_MOBILE_LENGTH = "電話番号の桁数が正しくありません(070・080・090・050・020 で始まる番号は11桁です)"
_LANDLINE_LENGTH = "電話番号の桁数が正しくありません(固定電話などは市外局番から10桁です)"


def _check_japanese_length(national: str) -> None:
    """Raise NormalisationError when `national` (a Japanese number without its 0) has the wrong
    length for its kind (_ELEVEN_DIGITS)."""
    if national.startswith(_ELEVEN_DIGITS):
        if len(national) != 10:
            raise NormalisationError(_MOBILE_LENGTH)
    elif not national.startswith("60") and len(national) != 9:
        raise NormalisationError(_LANDLINE_LENGTH)


def normalize_phone(value: str) -> str:
    """A Japanese or international phone number in E.164 (+81…).

    Accepts full-width digits, any hyphen variant, spaces and brackets, a leading 0 (domestic)
    or +81/0081. Raises NormalisationError when the result is not a possible number, or is a
    Japanese number of the wrong length for its kind (a mobile number is 0 + 10 digits, a
    landline 0 + 9).
    """
    digits = _strip_separators(value)
    if _DOMESTIC_RE.fullmatch(digits):
        # The common case, a domestic number with its leading 0 (090-1234-5678, 03-1234-5678):
        # what phonenumbers would give, without its cost (a third of a CSV import's parsing).
        _check_japanese_length(digits[1:])
        return "+81" + digits[1:]
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not re.fullmatch(r"\+?\d{6,15}", digits):
        raise NormalisationError("電話番号として読めません")
    try:
        parsed = phonenumbers.parse(digits, "JP")
    except phonenumbers.NumberParseException as exc:
        raise NormalisationError("電話番号として読めません") from exc
    if not phonenumbers.is_possible_number(parsed):
        raise NormalisationError("電話番号の桁数が正しくありません")
    if parsed.country_code == 81:
        _check_japanese_length(phonenumbers.national_significant_number(parsed))
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


def looks_like_phone(value: str) -> bool:
    try:
        normalize_phone(value)
    except NormalisationError:
        return False
    return True


def normalize_postal_code(value: str) -> str:
    """A postal code as seven ASCII digits ("〒１５０－０００２" → "1500002")."""
    digits = _strip_separators(value).removeprefix("〒")
    if not _POSTAL_RE.match(digits):
        raise NormalisationError("郵便番号は7桁の数字で入力してください")
    return digits


def format_date(day: dt.date) -> str:
    """A date as staff read it on every page and in every message: 2026年11月28日."""
    return f"{day.year}年{day.month}月{day.day}日"


def format_postal_code(value: str) -> str:
    """Seven digits as shown to people: 150-0002."""
    match = _POSTAL_RE.match(value)
    return f"{match.group(1)}-{match.group(2)}" if match else value


def format_phone(value: str | None) -> str:
    """An E.164 number as Japanese people write and dial it (+819012345678 → 090-1234-5678);
    a number from abroad in international form, anything unreadable as it is."""
    if not value:
        return ""
    try:
        parsed = phonenumbers.parse(value, "JP")
    except phonenumbers.NumberParseException:
        return value
    if parsed.country_code == 81:
        return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.NATIONAL))
    return str(phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL))


EMAIL_MAX_LENGTH = 254

# What Kizuna takes as an e-mail address: a practical subset of RFC 5321/5322, the addresses
# carts, forms and people actually use, so that a typo or an injection attempt ("a@b@c.jp",
# "<script>@…") is refused where it enters instead of becoming a customer's identity.
#
# - Exactly one @. The part before it (the local part) is ASCII letters, digits, the RFC 5322
#   "atext" symbols !#$%&'*+/=?^_`{|}~- and dots; no dot first, last or twice in a row.
#   Quoted local parts ("x y"@…), comments and non-ASCII local parts are legal in RFC 5322/6531
#   but unused in practice and refused by many mail systems, so they are refused here.
# - Japanese mobile carriers let customers create addresses before 2009 with two dots in a
#   row or a dot just before the @ (taro..yamada@docomo.ne.jp, taro.@ezweb.ne.jp). Real shops
#   have such customers and the carriers still deliver to them, so at the carrier domains
#   below (and their subdomains) those two forms are accepted; a dot first never is.
# - The domain is at least two labels separated by dots, each 1-63 characters of letters,
#   digits and hyphens, not starting or ending with a hyphen; the last label (the TLD) is
#   letters, or an IDN TLD in punycode. Address literals (@[192.0.2.1]) are refused.
# - Internationalised domain names are taken in their ASCII (punycode) form only
#   (taro@xn--r8jz45g.jp, not taro@例え.jp): the address is its own key and the address mail
#   is sent to, and Kizuna sends over plain SMTP, which carries ASCII addresses only. Such
#   addresses are rare; the message says how to write one.
MOBILE_CARRIER_DOMAINS = (
    "docomo.ne.jp",
    "ezweb.ne.jp",
    "au.com",
    "softbank.ne.jp",
    "i.softbank.jp",
    "vodafone.ne.jp",
    "disney.ne.jp",
    "pdx.ne.jp",
    "willcom.com",
    "ymobile.ne.jp",
    "emobile.ne.jp",
)
_ATEXT = r"a-z0-9!#$%&'*+/=?^_`{|}~\-"
_LOCAL_CHARS_RE = re.compile(f"[{_ATEXT}.]+")
_LOCAL_RE = re.compile(f"[{_ATEXT}]+(?:\\.[{_ATEXT}]+)*")
_CARRIER_LOCAL_RE = re.compile(f"[{_ATEXT}][{_ATEXT}.]*")
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
_TLD_RE = re.compile(r"[a-z]{2,63}|xn--[a-z0-9-]{1,59}")
_NOT_AN_EMAIL = "メールアドレスとして読めません"


def _is_carrier_domain(domain: str) -> bool:
    return any(domain == d or domain.endswith("." + d) for d in MOBILE_CARRIER_DOMAINS)


def _check_email(email: str) -> None:
    """Raise NormalisationError unless `email` (NFKC, lower case) is an address as above."""
    count = email.count("@")
    if count != 1:
        detail = "@ がありません" if count == 0 else "@ が2つ以上あります"
        raise NormalisationError(f"{_NOT_AN_EMAIL}({detail})")
    local, _, domain = email.partition("@")
    if not local:
        raise NormalisationError(f"{_NOT_AN_EMAIL}(@ の前が空です)")
    if not _LOCAL_CHARS_RE.fullmatch(local):
        raise NormalisationError(f"{_NOT_AN_EMAIL}(@ の前に使えない文字があります)")
    if not domain.isascii():
        raise NormalisationError(
            f"{_NOT_AN_EMAIL}(日本語などのドメイン名は「xn--」で始まる英数字の形で指定してください)"
        )
    labels = domain.split(".")
    if (
        len(labels) < 2
        or not all(_LABEL_RE.fullmatch(label) for label in labels)
        or not _TLD_RE.fullmatch(labels[-1])
    ):
        raise NormalisationError(f"{_NOT_AN_EMAIL}(@ の後のドメイン名が正しくありません)")
    local_re = _CARRIER_LOCAL_RE if _is_carrier_domain(domain) else _LOCAL_RE
    if not local_re.fullmatch(local):
        raise NormalisationError(f"{_NOT_AN_EMAIL}(@ の前の「.」の位置が正しくありません)")


def email_key(value: str) -> str:
    """An address as its match key (NFKC, trimmed, lower case) without the address check:
    for looking up and blocking addresses that may have been stored before the check existed
    (search, the suppression list). At most EMAIL_MAX_LENGTH characters."""
    email = nfkc(value).lower()
    local, sep, domain = email.partition("@")
    if not sep or not local or "." not in domain or " " in email:
        raise NormalisationError(_NOT_AN_EMAIL)
    _check_email_length(value, email)
    return email


def _check_email_length(value: str, email: str) -> None:
    if max(len(email), len(value.strip())) > EMAIL_MAX_LENGTH:
        raise NormalisationError(f"メールアドレスが長すぎます({EMAIL_MAX_LENGTH}文字まで)")


def normalize_email(value: str) -> str:
    """An e-mail address in NFKC, trimmed and lower-cased (the match key, not for display),
    after checking that it is an address (the rules above; NormalisationError names what is
    wrong without repeating the value).

    At most EMAIL_MAX_LENGTH characters as given and as normalised: no mail system delivers a
    longer one (RFC 5321), and the identity and suppression columns hold that many."""
    email = nfkc(value).lower()
    _check_email_length(value, email)
    _check_email(email)
    return email


def normalize_kana(value: str) -> str:
    """Kana in any script as full-width katakana without spaces: the key that makes
    "やまだ たろう", "ヤマダ　タロウ" and "ﾔﾏﾀﾞ ﾀﾛｳ" equal."""
    text = nfkc(value)  # half-width ｶﾀｶﾅ (with its separate dakuten) → full-width カタカナ
    text = jaconv.hira2kata(text)
    return _SPACE_RE.sub("", text)


# What a reading (フリガナ) holds once normalised: the katakana ァ (U+30A1) to ヺ (U+30FA), small
# kana and ヴ, ヵ, ヶ included (as carts' own kana checks take them); the middle dot ・ (U+30FB) of
# foreign names (ジョン・スミス); the long-vowel mark ー (U+30FC). Nothing else: not the iteration
# marks ヽヾ (carts refuse them too), and no kanji, digit or letter: a reading holding one is
# never found by a kana search and prints as nonsense on a postal label.
_READING_RE = re.compile("[\u30a1-\u30fa\u30fb\u30fc]+")


def is_kana(value: str) -> bool:
    """Whether `value` is a reading: non-empty, and only kana (in any script), ・ and ー once
    normalised. Search takes such text as a kana prefix; a customer's readings must be one."""
    return bool(_READING_RE.fullmatch(normalize_kana(value)))


def normalize_reading(value: str, label: str = "フリガナ") -> str:
    """A customer's reading (`label` names the field) as normalize_kana stores it; empty stays
    empty. Raises NormalisationError when it holds anything but kana, ・ and ー (is_kana)."""
    key = normalize_kana(value)
    if key and not is_kana(key):
        raise NormalisationError(f"{label}はカタカナ(またはひらがな)で入力してください")
    return key


# Old and variant forms of kanji common in family names (異体字), as the everyday form: a
# customer registered as 髙橋 or 渡邊 (carts export them, CP932 has them) is found by an
# operator who types 高橋 or 渡辺, and the other way round. Only the search key is folded; the
# name is kept and shown as the customer wrote it.
NAME_VARIANTS = str.maketrans(
    {
        "髙": "高", "﨑": "崎", "嵜": "崎", "𠮷": "吉", "邊": "辺", "邉": "辺", "濵": "浜",
        "濱": "浜", "澤": "沢", "櫻": "桜", "廣": "広", "國": "国", "德": "徳", "齋": "斎",
        "齊": "斉", "藪": "薮", "槇": "槙", "曾": "曽",
    }
)  # fmt: skip


def name_key(value: str) -> str:
    """A name as a search key: NFKC without spaces, variant kanji folded ("髙橋　太郎" →
    "高橋太郎")."""
    return _SPACE_RE.sub("", nfkc(value)).translate(NAME_VARIANTS)


def normalize_identifier(value: str) -> str:
    """An external ID (order number, product code, cart member ID, LINE user ID, chat ID):
    NFKC, trimmed, every hyphen look-alike as "-" — a Japanese IME turns the minus key into
    "ー", so "KZー0001" typed by an operator must still find order "KZ-0001"."""
    ident = _HYPHEN_RE.sub("-", nfkc(value))
    if not ident:
        raise NormalisationError("IDが空です")
    return ident


PREFECTURES: tuple[str, ...] = (
    "北海道", "青森県", "岩手県", "宮城県", "秋田県", "山形県", "福島県",
    "茨城県", "栃木県", "群馬県", "埼玉県", "千葉県", "東京都", "神奈川県",
    "新潟県", "富山県", "石川県", "福井県", "山梨県", "長野県", "岐阜県",
    "静岡県", "愛知県", "三重県", "滋賀県", "京都府", "大阪府", "兵庫県",
    "奈良県", "和歌山県", "鳥取県", "島根県", "岡山県", "広島県", "山口県",
    "徳島県", "香川県", "愛媛県", "高知県", "福岡県", "佐賀県", "長崎県",
    "熊本県", "大分県", "宮崎県", "鹿児島県", "沖縄県",
)  # fmt: skip
"""The 47 都道府県 in JIS X 0401 order; the code of each is its index + 1."""

PREFECTURE_CHOICES = [(i + 1, name) for i, name in enumerate(PREFECTURES)]


def prefecture_code(value: str | int) -> int:
    """A prefecture as its JIS code (1–47), from its code, its full name or its short name."""
    if isinstance(value, int) or nfkc(str(value)).isdigit():
        code = int(nfkc(str(value)))
        if 1 <= code <= 47:
            return code
        raise NormalisationError("都道府県コードは1〜47です")
    name = nfkc(value)
    for index, full in enumerate(PREFECTURES):
        # "東京" and "大阪" are written without their suffix; 北海道 has no suffix to drop.
        short = full if full == "北海道" else full[:-1]
        if name in (full, short):
            return index + 1
    raise NormalisationError("都道府県名として読めません")
