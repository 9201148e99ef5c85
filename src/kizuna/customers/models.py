"""Customers, the identities that point at them, their consents and their timeline."""

from __future__ import annotations

from collections.abc import Iterable

from django.db import models
from django.utils import timezone

from kizuna.core import jp
from kizuna.core.models import AppendOnlyModel, TimeStampedModel


class Gender(models.TextChoices):
    FEMALE = "female", "女性"
    MALE = "male", "男性"
    OTHER = "other", "その他"
    UNKNOWN = "unknown", "不明"


class AcquisitionChannel(models.TextChoices):
    WEB_AD = "web", "Web広告"
    SNS = "sns", "SNS"
    LINE = "line", "LINE"
    PHONE = "phone", "電話・テレビ通販"
    PAPER = "paper", "新聞・カタログ"
    AFFILIATE = "affiliate", "アフィリエイト"
    OTHER = "other", "その他"


class MemberStatus(models.TextChoices):
    MEMBER = "member", "会員"
    GUEST = "guest", "ゲスト購入"
    WITHDRAWN = "withdrawn", "退会"


class Tag(models.Model):
    name = models.CharField("タグ", max_length=50, unique=True)

    class Meta:
        verbose_name = "タグ"
        verbose_name_plural = "タグ"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


# The columns Customer.refresh_search_keys derives from the name fields: every write path that
# skips save() (bulk inserts and updates) writes all of them.
SEARCH_KEY_FIELDS = ("name_key", "kana_key", "given_name_key", "given_kana_key")


class Customer(TimeStampedModel):
    family_name = models.CharField("姓", max_length=50)
    given_name = models.CharField("名", max_length=50, blank=True)
    family_kana = models.CharField("セイ", max_length=50, blank=True)
    given_kana = models.CharField("メイ", max_length=50, blank=True)
    # Search keys, kept in step by `save()`: see kizuna.core.jp. On PostgreSQL their migration
    # gives them the "C" collation so a prefix range uses the B-tree index in any locale.
    name_key = models.CharField(max_length=100, db_index=True, editable=False)
    kana_key = models.CharField(max_length=100, db_index=True, editable=False)
    # The given name and its reading alone, so "七海" or "ナナミ" typed without the family name
    # is a prefix range too (customers.selectors.customer_search). Same collation as above;
    # indexed in Meta.
    given_name_key = models.CharField(max_length=100, editable=False, default="")
    given_kana_key = models.CharField(max_length=100, editable=False, default="")
    company = models.CharField("会社名", max_length=100, blank=True)
    postal_code = models.CharField("郵便番号", max_length=7, blank=True)
    prefecture = models.PositiveSmallIntegerField(
        "都道府県", choices=jp.PREFECTURE_CHOICES, null=True, blank=True
    )
    address1 = models.CharField("住所1(市区町村・番地)", max_length=200, blank=True)
    address2 = models.CharField("住所2(建物名・部屋番号)", max_length=200, blank=True)
    birthday = models.DateField("生年月日", null=True, blank=True)
    gender = models.CharField("性別", max_length=8, choices=Gender.choices, default=Gender.UNKNOWN)
    acquisition_channel = models.CharField(
        "獲得経路",
        max_length=16,
        choices=AcquisitionChannel.choices,
        default=AcquisitionChannel.OTHER,
    )
    registered_at = models.DateTimeField("登録日時", db_index=True)
    member_status = models.CharField(
        "会員状態", max_length=16, choices=MemberStatus.choices, default=MemberStatus.MEMBER
    )
    tags = models.ManyToManyField(Tag, verbose_name="タグ", blank=True, related_name="customers")
    notes = models.TextField("メモ", blank=True)
    # Set when staff merged this record into another (customers.merge); cleared by an undo.
    merged_into = models.ForeignKey(
        "self",
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="merged_records",
        verbose_name="統合先",
    )

    class Meta:
        verbose_name = "顧客"
        verbose_name_plural = "顧客"
        indexes = [
            # Resolution proposes a new customer as a probable duplicate of records with the
            # same name kana and postal code: a lookup of exact pairs, postal code first (the
            # more selective: a popular name has thousands of records).
            models.Index(fields=["postal_code", "kana_key"], name="customer_postal_kana"),
            # Customer search (selectors.customer_search): a prefix range on one key among
            # records not merged away, walked in (key, id) order and stopped after the page.
            # PostgreSQL walks (key, id): a key-only index would make it read every customer
            # with that key (all the 七海) to order them by id. SQLite, which plans without
            # statistics, would pick the merged_into index (every customer) and sort them all
            # over any key index but (merged_into, key), whose entries end with the row id.
            models.Index(fields=["given_name_key", "id"], name="customer_given_name_id"),
            models.Index(fields=["given_kana_key", "id"], name="customer_given_kana_id"),
            models.Index(fields=["merged_into", "name_key"], name="customer_search_name"),
            models.Index(fields=["merged_into", "kana_key"], name="customer_search_kana"),
            models.Index(fields=["merged_into", "given_name_key"], name="customer_search_given"),
            models.Index(
                fields=["merged_into", "given_kana_key"], name="customer_search_given_kana"
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(prefecture__isnull=True)
                | models.Q(prefecture__gte=1, prefecture__lte=47),
                name="customer_prefecture_jis",
            ),
        ]

    def __str__(self) -> str:
        return self.full_name

    @property
    def full_name(self) -> str:
        return f"{self.family_name} {self.given_name}".strip()

    @property
    def full_kana(self) -> str:
        return f"{self.family_kana} {self.given_kana}".strip()

    @property
    def address(self) -> str:
        pref = self.get_prefecture_display() if self.prefecture else ""
        return f"{pref}{self.address1} {self.address2}".strip()

    def refresh_search_keys(self) -> None:
        self.name_key = jp.name_key(self.family_name + self.given_name)
        self.kana_key = jp.normalize_kana(self.family_kana + self.given_kana)
        self.given_name_key = jp.name_key(self.given_name)
        self.given_kana_key = jp.normalize_kana(self.given_kana)

    def save(self, *args: object, **kwargs: object) -> None:
        self.refresh_search_keys()
        super().save(*args, **kwargs)  # type: ignore[arg-type]


class IdentityKind(models.TextChoices):
    EMAIL = "email", "メール"
    PHONE = "phone", "電話番号"
    CART_MEMBER = "cart_member", "カート会員ID"
    LINE_USER = "line_user", "LINEユーザーID"
    PBX_CALLER = "pbx_caller", "PBX発信者番号"
    CHAT = "chat", "チャットID"


# The kinds staff add by hand (「メールアドレス・電話番号を追加」), and so may take back: a cart
# member ID, LINE or chat ID comes from that system, which would attach it again on its next
# import or event.
REMOVABLE_IDENTITY_KINDS = (IdentityKind.EMAIL, IdentityKind.PHONE)


class Identity(TimeStampedModel):
    """An ID the customer has elsewhere. (kind, value) is unique: one ID, one customer."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="identities", verbose_name="顧客"
    )
    kind = models.CharField("種類", max_length=16, choices=IdentityKind.choices)
    value = models.CharField("値(正規化)", max_length=254)
    display_value = models.CharField("値(入力どおり)", max_length=254, blank=True)
    source = models.CharField("取得元", max_length=32, blank=True)
    # When the source said the customer has it: an order's ordered_at, a cart event's time,
    # the moment staff or the API added it. Messages go to the kind's identity with the latest
    # one (pk breaks ties), so an old order imported after the current address arrived does
    # not make its old address the one mail goes to (IDENTITY_NEWEST_FIRST).
    observed_at = models.DateTimeField("確認日時", default=timezone.now)

    class Meta:
        verbose_name = "識別子"
        verbose_name_plural = "識別子"
        constraints = [
            models.UniqueConstraint(fields=["kind", "value"], name="identity_unique_kind_value"),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()}: {self.display_value or self.value}"


# A customer's identities newest first: where messages go is the first of a kind.
IDENTITY_NEWEST_FIRST = ("-observed_at", "-id")
# Kinds a channel sends to one of: the newest (campaigns.consent_checks reads identities newest
# first). Phone numbers are left out: SMS takes the newest mobile number, a call any number.
SENT_TO_NEWEST_KINDS = (IdentityKind.EMAIL, IdentityKind.LINE_USER)


def newest_first(identities: Iterable[Identity]) -> list[Identity]:
    """IDENTITY_NEWEST_FIRST for identities already loaded (a prefetch)."""
    return sorted(identities, key=lambda i: (i.observed_at, i.pk), reverse=True)


class ConsentChannel(models.TextChoices):
    EMAIL = "email", "メール"
    SMS = "sms", "SMS"
    LINE = "line", "LINE"
    POSTAL = "postal", "郵送DM"
    PHONE = "phone", "電話"


class ConsentMethod(models.TextChoices):
    WEB_FORM = "web_form", "Webフォーム"
    PAPER = "paper", "はがき・申込用紙"
    PHONE = "phone", "電話での口頭同意"
    LINE = "line", "LINE友だち追加"
    IMPORT = "import", "データ取込"
    API = "api", "API"
    STAFF = "staff", "スタッフ入力"
    UNSUBSCRIBE = "unsubscribe", "配信停止リンク"


class Consent(TimeStampedModel):
    """The current consent of one customer for one channel, with the evidence it rests on.

    Each grant or opt-out also appends a ConsentEvent, so the evidence survives later changes
    (特定電子メール法 asks that it be kept).
    """

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="consents", verbose_name="顧客"
    )
    channel = models.CharField("チャネル", max_length=8, choices=ConsentChannel.choices)
    granted = models.BooleanField("同意", default=False)
    granted_at = models.DateTimeField("同意日時", null=True, blank=True)
    method = models.CharField("取得方法", max_length=16, choices=ConsentMethod.choices, blank=True)
    source_form = models.CharField("取得フォーム", max_length=100, blank=True)
    wording_version = models.CharField("文言バージョン", max_length=32, blank=True)
    opted_out_at = models.DateTimeField("配信停止日時", null=True, blank=True)

    class Meta:
        verbose_name = "配信同意"
        verbose_name_plural = "配信同意"
        constraints = [
            models.UniqueConstraint(fields=["customer", "channel"], name="consent_one_per_channel"),
            models.CheckConstraint(
                condition=models.Q(granted=False) | models.Q(granted_at__isnull=False),
                name="consent_granted_has_time",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.get_channel_display()}: {'同意' if self.granted else '非同意'}"


class ConsentEvent(AppendOnlyModel):
    """One grant or withdrawal, as evidence. Append-only."""

    class Action(models.TextChoices):
        GRANT = "grant", "同意"
        WITHDRAW = "withdraw", "配信停止"

    customer = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="consent_events", verbose_name="顧客"
    )
    channel = models.CharField("チャネル", max_length=8, choices=ConsentChannel.choices)
    action = models.CharField("操作", max_length=8, choices=Action.choices)
    at = models.DateTimeField("日時")
    method = models.CharField("取得方法", max_length=16, choices=ConsentMethod.choices)
    source_form = models.CharField("取得フォーム", max_length=100, blank=True)
    wording_version = models.CharField("文言バージョン", max_length=32, blank=True)
    recorded_by = models.CharField("記録者", max_length=150)

    class Meta:
        verbose_name = "同意履歴"
        verbose_name_plural = "同意履歴"
        indexes = [models.Index(fields=["customer", "channel", "at"], name="consent_event_lookup")]

    def __str__(self) -> str:
        return f"{self.at:%Y-%m-%d} {self.channel} {self.action}"


class TimelineKind(models.TextChoices):
    PROFILE = "profile", "顧客情報"
    ORDER = "order", "注文"
    SHIPMENT = "shipment", "出荷"
    DELIVERY = "delivery", "お届け"
    CANCELLATION = "cancellation", "キャンセル・返品"
    SUBSCRIPTION = "subscription", "定期"
    POINTS = "points", "ポイント"
    CONSENT = "consent", "配信同意"
    CONTACT = "contact", "問い合わせ"
    MESSAGE = "message", "メッセージ送信"


class TimelineEvent(models.Model):
    """One line of a customer's history. Services write it in the same transaction as the change
    it describes, so the timeline never disagrees with the data."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="timeline", verbose_name="顧客"
    )
    occurred_at = models.DateTimeField("日時")
    kind = models.CharField("種類", max_length=16, choices=TimelineKind.choices)
    title = models.CharField("内容", max_length=200)
    detail = models.JSONField("詳細", default=dict, blank=True)
    ref_entity = models.CharField(max_length=64, blank=True)
    ref_id = models.BigIntegerField(null=True, blank=True)

    class Meta:
        verbose_name = "タイムライン"
        verbose_name_plural = "タイムライン"
        indexes = [
            models.Index(fields=["customer", "-occurred_at", "-id"], name="timeline_customer_time"),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M} {self.title}"


class BehaviourKind(models.TextChoices):
    PAGE_VIEW = "page_view", "ページ閲覧"
    PRODUCT_VIEW = "product_view", "商品閲覧"
    CART_ADD = "cart_add", "カート追加"
    CHECKOUT_START = "checkout_start", "購入手続き開始"


class BehaviourEvent(models.Model):
    """What a customer did on the shop's site (for abandonment scenarios and segments)."""

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="behaviour_events", verbose_name="顧客"
    )
    kind = models.CharField("種類", max_length=16, choices=BehaviourKind.choices)
    occurred_at = models.DateTimeField("日時")
    product = models.ForeignKey(
        "commerce.Product", on_delete=models.SET_NULL, null=True, blank=True, verbose_name="商品"
    )
    url = models.CharField("URL", max_length=500, blank=True)
    payload = models.JSONField("データ", default=dict, blank=True)

    class Meta:
        verbose_name = "行動イベント"
        verbose_name_plural = "行動イベント"
        indexes = [
            models.Index(fields=["customer", "occurred_at"], name="behaviour_customer_time"),
            models.Index(fields=["kind", "occurred_at"], name="behaviour_kind_time"),
        ]

    def __str__(self) -> str:
        return f"{self.occurred_at:%Y-%m-%d %H:%M} {self.kind}"


class DuplicateStatus(models.TextChoices):
    OPEN = "open", "未確認"
    MERGED = "merged", "統合済"
    DISMISSED = "dismissed", "別人として確認済"
    # Closed by the erasure of one of the two records (customers.privacy), not by a reviewer:
    # an anonymous record is never merged.
    ERASED = "erased", "削除(匿名化)により対象外"


class DuplicateCandidate(TimeStampedModel):
    """Two customer records that are probably the same person, waiting for a human decision.

    Identity resolution never merges on its own when the evidence is only probable (same name
    kana and postal code, one shared phone with different e-mails…); it proposes, staff decide.
    `customer_a` is always the record with the smaller id, so a pair is proposed once.
    """

    customer_a = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    customer_b = models.ForeignKey(Customer, on_delete=models.CASCADE, related_name="+")
    reason = models.CharField("理由", max_length=200)
    status = models.CharField(
        "状態", max_length=16, choices=DuplicateStatus.choices, default=DuplicateStatus.OPEN
    )
    decided_by = models.CharField("確認者", max_length=150, blank=True)
    decided_at = models.DateTimeField("確認日時", null=True, blank=True)

    class Meta:
        verbose_name = "重複候補"
        verbose_name_plural = "重複候補"
        constraints = [
            models.UniqueConstraint(fields=["customer_a", "customer_b"], name="duplicate_pair"),
            models.CheckConstraint(
                condition=models.Q(customer_a__lt=models.F("customer_b")),
                name="duplicate_pair_ordered",
            ),
        ]
        indexes = [models.Index(fields=["status", "-created_at"], name="duplicate_queue")]

    def __str__(self) -> str:
        return f"{self.customer_a_id} ≒ {self.customer_b_id}: {self.reason}"


class CustomerMerge(TimeStampedModel):
    """One merge of two customer records, with everything needed to undo it.

    Rows keep their ids when they change hands, so `moved` ({table label: [ids]}) names exactly
    the rows the merge gave the survivor; undo gives back those and nothing created later.
    """

    candidate = models.ForeignKey(
        DuplicateCandidate, on_delete=models.PROTECT, related_name="merges", verbose_name="重複候補"
    )
    survivor = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="merges_kept", verbose_name="統合先"
    )
    absorbed = models.ForeignKey(
        Customer, on_delete=models.PROTECT, related_name="merges_absorbed", verbose_name="統合元"
    )
    merged_at = models.DateTimeField("統合日時")
    merged_by = models.CharField("統合した人", max_length=150)
    moved = models.JSONField("移動した行", default=dict)
    consents_swapped = models.JSONField("入れ替えた配信同意", default=dict)
    profile_filled = models.JSONField("補完した項目", default=dict)
    tags_added = models.JSONField("統合先に加えたタグ", default=list)
    tags_removed = models.JSONField("統合元から外したタグ", default=list)
    points_transferred = models.PositiveIntegerField("移行ポイント", default=0)
    absorbed_member_status = models.CharField("統合元の元の会員状態", max_length=16)
    undone_at = models.DateTimeField("取り消し日時", null=True, blank=True)
    undone_by = models.CharField("取り消した人", max_length=150, blank=True)

    class Meta:
        verbose_name = "顧客の統合"
        verbose_name_plural = "顧客の統合"
        indexes = [models.Index(fields=["-merged_at"], name="customer_merge_time")]
        constraints = [
            models.CheckConstraint(
                condition=~models.Q(survivor=models.F("absorbed")), name="merge_two_records"
            ),
            # A record can be merged away only once at a time, even by two concurrent requests.
            models.UniqueConstraint(
                fields=["absorbed"],
                condition=models.Q(undone_at__isnull=True),
                name="merge_absorbed_once",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.absorbed_id} → #{self.survivor_id}"
