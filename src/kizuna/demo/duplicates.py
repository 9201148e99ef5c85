"""Near-duplicate customers for the demo, so the review queue has work on day one.

    from kizuna.demo.duplicates import seed_duplicate_candidates
    seed_duplicate_candidates(count=30, seed=42)

Each one is registered through `customer_resolve`, exactly as an import would, so the queue
holds what identity resolution really proposes:

- the same person re-registered with a new e-mail address (now and then with the kanji of her
  name written in its variant form, 髙橋 for 高橋), matched by name kana and postal code;
- the same person registered again over the phone, with a typo in the kana and a new e-mail,
  matched by the phone number;
- another member of the family, living at the same address and giving the shared home phone.

The same seed on the same demo database gives the same customers.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable
from typing import Any

import jaconv
from django.db.models import Max, Min, Prefetch

from kizuna.core.audit import Actor
from kizuna.customers.models import (
    AcquisitionChannel,
    Customer,
    DuplicateCandidate,
    Gender,
    Identity,
    IdentityKind,
)
from kizuna.customers.resolution import customer_resolve
from kizuna.demo import names

ACTOR = Actor.system("demo")
SOURCE = "demo"
_EMAIL_DOMAINS = ("example.jp", "example.com", "example.ne.jp", "example.net")
_MOBILE_PREFIXES = ("+8170", "+8180", "+8190")
# Kanji with a variant form that people (and old systems) write their name with.
_KANJI_VARIANTS = {"高": "髙", "崎": "﨑", "辺": "邉", "斉": "齊", "沢": "澤", "浜": "濱"}
# Kana typed with or without the voicing mark: the usual mishearing on the phone.
_VOICING = dict(
    zip(
        "カキクケコサシスセソタチツテトハヒフヘホガギグゲゴザジズゼゾダヂヅデドバビブベボ",
        "ガギグゲゴザジズゼゾダヂヅデドバビブベボカキクケコサシスセソタチツテトハヒフヘホ",
        strict=True,
    )
)
_SMALL = {"ャ": "ヤ", "ュ": "ユ", "ョ": "ヨ", "ッ": "ツ"}
# Attempts per requested duplicate before giving up on finding suitable records.
_TRIES = 40

Scenario = Callable[[random.Random, Customer, dt.datetime], dict[str, Any] | None]


def seed_duplicate_candidates(*, count: int, seed: int) -> int:
    """Register `count` near-duplicates of existing demo customers; return how many review
    candidates that created (each near-duplicate is proposed at least once)."""
    if count <= 0:
        return 0
    bounds = Customer.objects.filter(merged_into__isnull=True).aggregate(
        low=Min("pk"), high=Max("pk"), latest=Max("registered_at")
    )
    if bounds["low"] is None:
        return 0
    rng = random.Random(f"kizuna-demo-duplicates:{seed}")
    scenarios: tuple[Scenario, ...] = (_new_email, _kana_typo, _family)
    weights = (5, 3, 2)
    before = DuplicateCandidate.objects.count()
    used: set[int] = set()
    made = 0
    for _ in range(count * _TRIES):
        if made == count:
            break
        original = _pick(rng, bounds["low"], bounds["high"], used)
        if original is None:
            continue
        scenario = rng.choices(scenarios, weights)[0]
        request = scenario(rng, original, _later(rng, original.registered_at, bounds["latest"]))
        if request is None:
            continue
        used.add(original.pk)
        result = customer_resolve(acting_user=ACTOR, source=SOURCE, **request)
        made += result.created
    return DuplicateCandidate.objects.count() - before


def _pick(rng: random.Random, low: int, high: int, used: set[int]) -> Customer | None:
    """A random live customer with their identities (ids may have gaps, so the next one)."""
    return (
        Customer.objects.filter(pk__gte=rng.randint(low, high), merged_into__isnull=True)
        .exclude(pk__in=used)
        .prefetch_related(Prefetch("identities", queryset=Identity.objects.order_by("id")))
        .order_by("pk")
        .first()
    )


def _later(rng: random.Random, start: dt.datetime, latest: dt.datetime) -> dt.datetime:
    """When the second registration happened: some time after the first, never after the
    demo's last day."""
    if start >= latest:
        return latest
    return start + (latest - start) * rng.random()


def _identity(customer: Customer, *kinds: IdentityKind) -> Identity | None:
    return next((i for i in customer.identities.all() if i.kind in kinds), None)


def _romaji(kana: str) -> str:
    return "".join(ch for ch in jaconv.kana2alphabet(jaconv.kata2hira(kana)) if ch.isalpha())


def _free_email(rng: random.Random, local: str, original: Customer) -> str:
    """A new address for the person; `original.pk` keeps it distinct from every demo address
    (those end in a customer id right after a letter, these in a letter)."""
    domain = rng.choice(_EMAIL_DOMAINS)
    for suffix in "abcdefgh":
        address = f"{local or 'customer'}.{original.pk}{suffix}@{domain}"
        if not Identity.objects.filter(kind=IdentityKind.EMAIL, value=address).exists():
            return address
    return f"{local or 'customer'}.{original.pk}{rng.randrange(10**6)}z@{domain}"


def _profile(original: Customer, at: dt.datetime, **changes: Any) -> dict[str, Any]:
    profile: dict[str, Any] = {
        "family_name": original.family_name,
        "given_name": original.given_name,
        "family_kana": original.family_kana,
        "given_kana": original.given_kana,
        "postal_code": original.postal_code,
        "prefecture": original.prefecture,
        "address1": original.address1,
        "address2": original.address2,
        "birthday": original.birthday,
        "gender": original.gender,
        "acquisition_channel": AcquisitionChannel.WEB_AD,
        "registered_at": at,
    }
    profile.update(changes)
    return profile


def _new_email(rng: random.Random, original: Customer, at: dt.datetime) -> dict[str, Any] | None:
    """She forgot her login and registered again with today's e-mail address."""
    if not original.family_kana or not original.postal_code:
        return None
    family_name = original.family_name
    if rng.random() < 0.3:
        family_name = "".join(_KANJI_VARIANTS.get(ch, ch) for ch in family_name)
    local = _romaji(original.given_kana) + _romaji(original.family_kana)
    return {
        "identities": {IdentityKind.EMAIL: _free_email(rng, local, original)},
        "profile": _profile(
            original,
            at,
            family_name=family_name,
            birthday=original.birthday if rng.random() < 0.5 else None,
        ),
    }


def _typo(rng: random.Random, kana: str) -> str | None:
    """The kana with one plausible mistake, or None when there is nothing to get wrong."""
    spots = [i for i, ch in enumerate(kana) if ch in _VOICING or ch in _SMALL]
    long_vowels = [i for i, ch in enumerate(kana) if ch == "ウ" and i > 0]
    if long_vowels and rng.random() < 0.4:
        i = rng.choice(long_vowels)
        return kana[:i] + "ー" + kana[i + 1 :]  # ユウコ → ユーコ
    if not spots:
        return None
    i = rng.choice(spots)
    return kana[:i] + (_VOICING.get(kana[i]) or _SMALL[kana[i]]) + kana[i + 1 :]


def _kana_typo(rng: random.Random, original: Customer, at: dt.datetime) -> dict[str, Any] | None:
    """She ordered by phone; the operator misheard her name and took a new e-mail address."""
    phone = _identity(original, IdentityKind.PHONE)
    if phone is None or _identity(original, IdentityKind.EMAIL) is None:
        return None
    given = _typo(rng, original.given_kana)
    family = original.family_kana if given else _typo(rng, original.family_kana)
    if not given and not family:
        return None
    local = _romaji(original.family_kana)
    return {
        "identities": {
            IdentityKind.PHONE: phone.display_value or phone.value,
            IdentityKind.EMAIL: _free_email(rng, local, original),
        },
        "profile": _profile(
            original,
            at,
            family_kana=family,
            given_kana=given or original.given_kana,
            acquisition_channel=AcquisitionChannel.PHONE,
        ),
    }


def _family(rng: random.Random, original: Customer, at: dt.datetime) -> dict[str, Any] | None:
    """Her husband (or mother, or son) orders too, from home, giving the home phone."""
    phone = _identity(original, IdentityKind.PHONE)
    if (
        phone is None
        or phone.value.startswith(_MOBILE_PREFIXES)
        or _identity(original, IdentityKind.EMAIL) is None
    ):
        return None
    born = original.birthday.year if original.birthday else 1965
    era = names.era_for(born + rng.choice((-30, -3, 0, 2, 28)))
    female = rng.random() < 0.5
    given = rng.choice(era.female if female else era.male)
    if given.kanji == original.given_name:
        return None
    local = f"{given.romaji}.{_romaji(original.family_kana)}"
    return {
        "identities": {
            IdentityKind.PHONE: phone.display_value or phone.value,
            IdentityKind.EMAIL: _free_email(rng, local, original),
        },
        "profile": _profile(
            original,
            at,
            given_name=given.kanji,
            given_kana=given.kana,
            birthday=None,
            gender=Gender.FEMALE if female else Gender.MALE,
        ),
    }
