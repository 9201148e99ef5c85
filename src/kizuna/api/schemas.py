"""Building blocks shared by the v1 schemas: bounded text, identities and profiles.

Every string has a maximum length that fits its column and refuses control characters
(PostgreSQL cannot store NUL), every number has bounds that fit its column, and every time
must carry its UTC offset, so no input can reach the database and fail there with a 500.
"""

from __future__ import annotations

import datetime as dt
import json
import types
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from django.core.exceptions import ValidationError
from ninja import Schema
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from kizuna.commerce.services import REGISTERED_AHEAD, is_ahead
from kizuna.core import jp
from kizuna.customers.models import IdentityKind

# No C0/C1 control characters; tab and newline are refused too (no field here is multi-line).
_NO_CONTROLS = r"^[^\x00-\x1f\x7f-\x9f]*$"
MAX_YEN = 100_000_000
MAX_ID = 2**63 - 1


def chars(max_length: int, *, min_length: int = 0) -> StringConstraints:
    """At most `max_length` characters, none of them a control character."""
    return StringConstraints(min_length=min_length, max_length=max_length, pattern=_NO_CONTROLS)


Yen = Annotated[int, Field(ge=0, le=MAX_YEN, description="金額(円・整数)", examples=[4980])]
ObjectId = Annotated[int, Field(ge=1, le=MAX_ID)]
_EARLIEST = dt.datetime(1900, 1, 1, tzinfo=dt.UTC)
_LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.UTC)


def _plausible(value: dt.datetime) -> dt.datetime:
    # Far-off years overflow when converted to UTC for storage (year 1 at +01:00 is year 0).
    if not _EARLIEST <= value < _LATEST:
        raise ValueError("1900年〜2199年の日時を指定してください")
    return value


Timestamp = Annotated[
    AwareDatetime,
    Strict(False),  # read from its ISO 8601 text (input models are otherwise strict, below)
    AfterValidator(_plausible),
    Field(description="ISO 8601、時差付き", examples=["2026-05-01T10:00:00+09:00"]),
]


# A date in a request body, read from its YYYY-MM-DD text (input models are strict, below).
Date = Annotated[dt.date, Strict(False)]


class Input(BaseModel):
    # Unknown fields are refused, so a misspelt field is an error, not silently lost data.
    # Strict: a number must be a JSON number and true/false a JSON boolean; pydantic's lax mode
    # would take "100" or true as an integer and "yes" as true, which the docs promise is a 422
    # (the cart sent a wrong type). Dates and times are read from text: Date and Timestamp
    # above relax strictness for those fields only. Query strings and paths are text by nature
    # and are read by lax models (ninja Schema), not these.
    # A plain pydantic model, not ninja's Schema: Schema's root validator (there to read
    # Django objects) validates a model with extra="forbid" twice, and so every nested input
    # model 2^depth times (an order body's identities 8 times, about a quarter of a PUT's
    # request handling). Inputs are always JSON dicts and need none of it.

    model_config = ConfigDict(extra="forbid", strict=True)


def known_fields_only(annotation: Any, value: Any) -> Any:
    """`value` (JSON as read) without the object keys the models in `annotation` do not know,
    at any depth: a model's unknown keys, those of the models in its fields, of each item of
    a list of models, and so on. Everything else is left as it is, to be validated as strictly
    as ever (a known field of the wrong type is still an error).

    For a webhook, where a cart adds fields of its own to what it sends and a refusal would
    lose the whole event; the REST API refuses unknown fields (a misspelt field is an error).
    Free-form JSON (a dict[str, Any] field) is a value, not a model, and is kept whole.
    """
    origin = get_origin(annotation)
    if origin is Annotated:
        return known_fields_only(get_args(annotation)[0], value)
    if origin is Union or origin is types.UnionType:
        # Optional[Model] and the like: pruned when exactly one arm can take this value.
        arms = [arm for arm in get_args(annotation) if _takes(arm, value)]
        return known_fields_only(arms[0], value) if len(arms) == 1 else value
    if origin is list and isinstance(value, list):
        (item,) = get_args(annotation) or (Any,)
        return [known_fields_only(item, element) for element in value]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        if not isinstance(value, dict) or annotation.model_config.get("extra") == "allow":
            return value
        known = {
            (field.alias or name): field.annotation
            for name, field in annotation.model_fields.items()
        }
        return {
            key: known_fields_only(known[key], item) for key, item in value.items() if key in known
        }
    return value


def _takes(arm: Any, value: Any) -> bool:
    """Whether a union's arm is a model (or a list) that `value`, an object (or an array),
    would be validated as."""
    while get_origin(arm) is Annotated:
        arm = get_args(arm)[0]
    if isinstance(value, dict):
        return isinstance(arm, type) and issubclass(arm, BaseModel)
    if isinstance(value, list):
        return get_origin(arm) is list
    return False


def _normaliser(kind: IdentityKind) -> Any:
    from kizuna.customers.services import normalize_identity

    def check(value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        try:
            normalize_identity(kind, value)
        except ValidationError as exc:
            raise ValueError(" ".join(exc.messages)) from None
        return value

    return AfterValidator(check)


IDENTITY_FIELDS: dict[str, IdentityKind] = {
    "email": IdentityKind.EMAIL,
    "phone": IdentityKind.PHONE,
    "cart_member_id": IdentityKind.CART_MEMBER,
    "line_user_id": IdentityKind.LINE_USER,
}


class IdentitiesIn(Input):
    """顧客の識別子。全角・ハイフン・大文字などの表記ゆれは正規化してから完全一致で照合します。"""

    email: Annotated[Annotated[str, chars(254)] | None, _normaliser(IdentityKind.EMAIL)] = Field(
        default=None, description="メールアドレス", examples=["hanako@example.jp"]
    )
    phone: Annotated[Annotated[str, chars(30)] | None, _normaliser(IdentityKind.PHONE)] = Field(
        default=None,
        description="電話番号(国内形式・+81形式・全角やハイフン入りも可)",
        examples=["090-1234-5678"],
    )
    cart_member_id: Annotated[
        Annotated[str, chars(100)] | None, _normaliser(IdentityKind.CART_MEMBER)
    ] = Field(default=None, description="カートの会員ID", examples=["M000123"])
    line_user_id: Annotated[
        Annotated[str, chars(100)] | None, _normaliser(IdentityKind.LINE_USER)
    ] = Field(default=None, description="LINEユーザーID", examples=["U4af4980629"])

    def as_kinds(self) -> dict[IdentityKind, str]:
        return {
            kind: value
            for name, kind in IDENTITY_FIELDS.items()
            if (value := getattr(self, name)) is not None
        }


class RequiredIdentitiesIn(IdentitiesIn):
    @model_validator(mode="after")
    def at_least_one(self) -> RequiredIdentitiesIn:
        if not self.as_kinds():
            raise ValueError(
                "email、phone、cart_member_id、line_user_id のいずれか1つ以上を指定してください"
            )
        return self


Gender = Literal["female", "male", "other", "unknown"]
AcquisitionChannel = Literal["web", "sns", "line", "phone", "paper", "affiliate", "other"]
MemberStatus = Literal["member", "guest", "withdrawn"]


def _one_prefecture_error(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
    # Otherwise pydantic reports each half of the union under a key of its own naming
    # ("prefecture.constrained-int"), neither of which is a place in what the client sent.
    try:
        return handler(value)
    except PydanticValidationError:
        raise ValueError(
            "都道府県はJISコード(1〜47の整数)か名前(例: 東京都)で指定してください"
        ) from None


def _prefecture_name(value: str) -> str:
    # Checked here, not left to the customer service: its refusal was `invalid_data`, so
    # "Tokyo" and "北海" got another code than "とうきょうと" (too long) or 48 (out of range),
    # all of them a value the field does not take (a format error, `invalid_request`).
    jp.prefecture_code(value)  # NormalisationError is a ValueError
    return value


Prefecture = Annotated[
    Annotated[int, Field(ge=1, le=47)]
    | Annotated[str, chars(5, min_length=1), AfterValidator(_prefecture_name)],
    WrapValidator(_one_prefecture_error),
    Field(description="都道府県: JISコード(1〜47)または名前(東京都・東京)", examples=[13]),
]


def _not_ahead(value: dt.datetime) -> dt.datetime:
    # As an order's ordered_at (commerce.services.FUTURE_SLACK): a day's slack for a cart's
    # clock or time zone; beyond it, a year typed wrong would date the customer in the future.
    if is_ahead(value):
        raise ValueError(REGISTERED_AHEAD)
    return value


class ProfileFields(Input):
    """顧客の項目。送った項目だけを使います。"""

    family_name: Annotated[str, chars(50)] | None = Field(
        default=None, description="姓", examples=["山田"]
    )
    given_name: Annotated[str, chars(50)] | None = Field(
        default=None, description="名", examples=["花子"]
    )
    family_kana: Annotated[str, chars(50)] | None = Field(
        default=None, description="セイ(ひらがな・半角カナも可)", examples=["ヤマダ"]
    )
    given_kana: Annotated[str, chars(50)] | None = Field(
        default=None, description="メイ", examples=["ハナコ"]
    )
    company: Annotated[str, chars(100)] | None = Field(default=None, description="会社名")
    postal_code: Annotated[str, chars(10)] | None = Field(
        default=None, description="郵便番号(ハイフン・全角可)", examples=["150-0002"]
    )
    prefecture: Prefecture | None = None
    address1: Annotated[str, chars(200)] | None = Field(
        default=None, description="住所1(市区町村・番地)", examples=["渋谷区渋谷2-1-1"]
    )
    address2: Annotated[str, chars(200)] | None = Field(
        default=None, description="住所2(建物名・部屋番号)"
    )
    birthday: Date | None = Field(default=None, description="生年月日", examples=["1985-04-12"])
    gender: Gender | None = Field(default=None, description="性別")
    acquisition_channel: AcquisitionChannel | None = Field(default=None, description="獲得経路")
    member_status: MemberStatus | None = Field(default=None, description="会員状態")
    registered_at: Annotated[Timestamp, AfterValidator(_not_ahead)] | None = Field(
        default=None, description="登録日時(省略時は現在。明日より先の日時は受け付けません)"
    )

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, as the customer services take them.

        Text sent as null clears the field; null for a required field is left to the
        service's own check (family name) or refused here (registration time).
        """
        changes: dict[str, Any] = {}
        for name in self.model_fields_set:
            value = getattr(self, name)
            if value is None and name in _TEXT_FIELDS:
                value = ""
            if value is None and name in _NOT_NULL:
                raise ValidationError({name: "null にはできません"})
            changes[name] = value
        return changes


_TEXT_FIELDS = frozenset(
    {
        "family_name",
        "given_name",
        "family_kana",
        "given_kana",
        "company",
        "postal_code",
        "address1",
        "address2",
    }
)
_NOT_NULL = frozenset({"registered_at", "gender", "acquisition_channel", "member_status"})


class ProfileIn(ProfileFields):
    """新しい顧客の項目(姓は必須)。"""

    family_name: Annotated[str, chars(50, min_length=1)] = Field(
        description="姓(必須)", examples=["山田"]
    )


class CustomerIn(Input):
    """誰のデータか。識別子(カート会員ID → メール → 電話の順)で照合し、
    見つからなければ profile から顧客を作ります。"""

    identities: RequiredIdentitiesIn
    profile: ProfileIn


def check_payload(value: dict[str, Any]) -> dict[str, Any]:
    """Free-form JSON that PostgreSQL can store (no NUL) and that stays small."""
    encoded = json.dumps(value, ensure_ascii=False)
    if "\\u0000" in encoded:
        raise ValueError("使えない文字(NUL)が含まれています")
    if len(encoded.encode("utf-8")) > 4096:
        raise ValueError("4KB以内にしてください")
    return value


Payload = Annotated[
    dict[str, Any],
    AfterValidator(check_payload),
    Field(description="任意の追加データ(JSONオブジェクト・4KBまで)", examples=[{"ref": "lp-a"}]),
]


class Page(Schema):
    page: int = Field(description="ページ番号(1から)")
    has_next: bool = Field(description="次のページがあるか")
