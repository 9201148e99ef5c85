"""Who a demo customer is: when and how they arrived, name, age, address, e-mail, phone.

Identifiers must be unique across a million customers ((kind, value) is unique in Identity),
so e-mail addresses and phone numbers are derived from the customer id with bijections rather
than drawn at random: no two customers can ever be given the same one. E-mail domains are the
reserved example domains, so no real address is ever produced.
"""

from __future__ import annotations

import datetime as dt
import random

from kizuna.customers.models import AcquisitionChannel as Ch
from kizuna.customers.models import Gender
from kizuna.demo import geo, names, story
from kizuna.demo.plan import (
    CALL_HOURS,
    OFFICE_HOURS,
    WEB_HOURS,
    Calendar,
    Profile,
    chance,
    cumulative,
    moment,
    one_of,
    pick,
)
from kizuna.demo.story import Line

_CHANNELS: tuple[Ch, ...] = tuple(story.CHANNEL_MIX_START)
_LINES: tuple[Line, ...] = tuple(story.LINES.values())
_LINE_CUM = {ch: cumulative(w) for ch, w in story.LINE_WEIGHTS.items()}
_GENDER_CUM = {key: cumulative(w) for key, w in story.GENDER_WEIGHTS.items()}
_AGE_CUM = {key: cumulative(w) for key, w in story.AGE_WEIGHTS.items()}
_FAMILY_CUM = cumulative(names.FAMILY_WEIGHTS)
_PREFECTURES = tuple(range(1, 48))
_PREFECTURE_CUM = cumulative(geo.PREFECTURE_POPULATION)
_MOBILE_CUM = cumulative(geo.MOBILE_WEIGHTS)
_PAYMENT_CUM = {
    True: cumulative(story.PAYMENT_WEIGHTS_DIGITAL),
    False: cumulative(story.PAYMENT_WEIGHTS_TRADITIONAL),
}
# Phone customers call the call centre, paper orders are typed in during office hours.
_ACQUISITION_HOURS = {Ch.PHONE: CALL_HOURS, Ch.PAPER: OFFICE_HOURS}

# multiplier × id + offset is a bijection modulo 10ⁿ and modulo 9×10⁷ (the multiplier shares
# no factor with 2, 3 or 5), so distinct ids always give distinct numbers.
_PHONE_MULTIPLIER = 7_919_327
_MOBILE_SPACE = 90_000_000  # eight digits, not starting with 0

_FULLWIDTH = str.maketrans(
    "0123456789-@.abcdefghijklmnopqrstuvwxyz_",
    "０１２３４５６７８９－＠．ａｂｃｄｅｆｇｈｉｊｋｌｍｎｏｐｑｒｓｔｕｖｗｘｙｚ＿",
)
_EMAIL_DOMAINS = ("example.jp", "example.com", "example.ne.jp", "example.co.jp", "example.net")
_EMAIL_DOMAIN_CUM = cumulative((30, 30, 20, 10, 10))


def payment_method(rng: random.Random, digital: bool) -> str:
    return pick(rng, story.PAYMENT_METHODS, _PAYMENT_CUM[digital])


def _phone(rng: random.Random, customer_id: int, prefecture: int, age: int) -> tuple[str, bool]:
    """A national number ("09012345678") and whether it is a mobile. Older customers more
    often give their home number. A landline plan has room for 10ⁿ ids; beyond that the
    customer gets a mobile."""
    mobile_share = 0.92 if age < 50 else 0.78 if age < 65 else 0.55
    landline = geo.LANDLINES[prefecture]
    digits = 9 - len(landline.prefix)
    if customer_id < 10**digits and not chance(rng, mobile_share):
        rest = (customer_id * _PHONE_MULTIPLIER + 1_234_567) % 10**digits
        return f"0{landline.prefix}{rest:0{digits}d}", False
    prefix = pick(rng, geo.MOBILE_PREFIXES, _MOBILE_CUM)
    rest = 10_000_000 + (customer_id * _PHONE_MULTIPLIER + 7_654_321) % _MOBILE_SPACE
    return f"0{prefix}{rest}", True


def _phone_display(rng: random.Random, national: str, prefecture: int, mobile: bool) -> str:
    """The number as typed: hyphenated as usual, sometimes without hyphens, sometimes in
    full-width digits from a Japanese IME."""
    if mobile:
        text = f"{national[:3]}-{national[3:7]}-{national[7:]}"
    else:
        area = len(geo.LANDLINES[prefecture].area) + 1
        text = f"{national[:area]}-{national[area:6]}-{national[6:]}"
    roll = rng.random()
    if roll < story.PHONE_NO_HYPHEN_SHARE:
        return national
    if roll < story.PHONE_NO_HYPHEN_SHARE + story.PHONE_FULLWIDTH_SHARE:
        return text.translate(_FULLWIDTH)
    return text


def _email(rng: random.Random, customer_id: int, family: names.Name, given: names.Name) -> str:
    """An address as the customer typed it. The local part always ends in the customer id
    right after a letter, so two customers can never share an address."""
    patterns = (
        f"{given.romaji}.{family.romaji}",
        f"{family.romaji}_{given.romaji[:1]}",
        f"{given.romaji}",
        f"{family.romaji}{given.romaji}",
        f"{given.romaji[:1]}.{family.romaji}",
    )
    address = f"{one_of(rng, patterns)}{customer_id}@{pick(rng, _EMAIL_DOMAINS, _EMAIL_DOMAIN_CUM)}"
    roll = rng.random()
    if roll < story.EMAIL_UPPERCASE_SHARE:
        return address[:1].upper() + address[1:] if chance(rng, 0.7) else address.upper()
    if roll < story.EMAIL_UPPERCASE_SHARE + story.EMAIL_FULLWIDTH_SHARE:
        return address.translate(_FULLWIDTH)
    return address


def _address(rng: random.Random) -> tuple[int, str, str, str]:
    """Prefecture (by population), postal code, "渋谷区神宮前1-2-3", and sometimes a flat."""
    prefecture = pick(rng, _PREFECTURES, _PREFECTURE_CUM)
    municipality = one_of(rng, geo.MUNICIPALITIES[prefecture])
    town = one_of(rng, municipality.towns)
    postal = f"{municipality.postal3:03d}{rng.randrange(10_000):04d}"
    block = f"{rng.randint(1, 5)}-{rng.randint(1, 30)}-{rng.randint(1, 25)}"
    address2 = ""
    if chance(rng, story.ADDRESS2_SHARE):
        building = one_of(rng, geo.BUILDING_PREFIXES) + one_of(rng, geo.BUILDING_SUFFIXES)
        address2 = f"{building} {rng.randint(1, 12)}{rng.randint(1, 12):02d}"
    return prefecture, postal, f"{municipality.name}{town}{block}", address2


def draw_profile(rng: random.Random, cal: Calendar, index: int, customer_id: int) -> Profile:
    day, progress = cal.acquisition_day(rng)
    # The channel mix drifts over the years: more SNS and LINE, less paper.
    mix = [
        story.CHANNEL_MIX_START[ch] * (1 - progress) + story.CHANNEL_MIX_END[ch] * progress
        for ch in _CHANNELS
    ]
    channel = pick(rng, _CHANNELS, cumulative(mix))
    digital = channel in story.DIGITAL_CHANNELS
    registered_at = moment(rng, day, _ACQUISITION_HOURS.get(channel, WEB_HOURS))
    line = pick(rng, _LINES, _LINE_CUM[channel])
    gender = pick(rng, story.GENDERS, _GENDER_CUM[line.key])
    lo, hi = pick(rng, story.AGE_BANDS, _AGE_CUM[(digital, line.key == "skincare")])
    age = rng.randint(lo, hi)
    born = dt.date.fromordinal(cal.as_of.toordinal() - round(age * 365.2425) - rng.randrange(365))
    birthday = None if chance(rng, story.BIRTHDAY_UNKNOWN_SHARE) else born
    era = names.era_for(born.year)
    female = gender == Gender.FEMALE or (gender != Gender.MALE and chance(rng, 0.7))
    family = pick(rng, names.FAMILY_NAMES, _FAMILY_CUM)
    given = one_of(rng, era.female if female else era.male)
    company = one_of(rng, names.COMPANIES) if chance(rng, story.COMPANY_SHARE) else ""
    prefecture, postal, address1, address2 = _address(rng)
    notes = ""
    if company and chance(rng, 0.5):
        notes = story.COMPANY_NOTE
    elif chance(rng, story.NOTE_SHARE):
        notes = one_of(rng, story.NOTES)
    email = ""
    if chance(rng, story.EMAIL_SHARE[digital]):
        email = _email(rng, customer_id, family, given)
    national, display, mobile = "", "", False
    if not digital or chance(rng, 0.92):  # phone and paper orders always come with a number
        national, mobile = _phone(rng, customer_id, prefecture, age)
        display = _phone_display(rng, national, prefecture, mobile)
    pbx_share = 0.6 if channel == Ch.PHONE else 0.2 if channel == Ch.PAPER else 0.02
    return Profile(
        index=index,
        customer_id=customer_id,
        channel=channel,
        line=line,
        registered_at=registered_at,
        gender=gender,
        birthday=birthday,
        family=family,
        given=given,
        company=company,
        prefecture=prefecture,
        postal_code=postal,
        address1=address1,
        address2=address2,
        notes=notes,
        payment=payment_method(rng, digital),
        email_display=email,
        phone_national=national,
        phone_display=display,
        is_mobile=mobile,
        has_cart_member=digital or chance(rng, 0.2),  # some phone customers register online
        has_pbx_caller=bool(national) and chance(rng, pbx_share),
    )
