"""The demo shop's story: catalogue, funnel and behaviour assumptions, as named constants.

Kizuna's analytics (F2 conversion, 引き上げ, subscription continuation, RFM…) are demonstrated
on this data, so the numbers below are chosen to look like a typical Japanese D2C cosmetics and
supplement shop and to make each effect visible without squinting:

* Customers arrive through web ads, SNS, LINE, TV/phone and newspaper/catalogue ads, more in
  November–December (gifts, year-end) and March (new season), fewer in February and August.
* Web/SNS/affiliate customers mostly start with a cheap trial; phone and paper customers, who
  are older and were sold on the product by a presenter or a leaflet, more often buy the main
  product straight away.
* About 30% of customers ever buy a second time (F2). Paper and phone customers convert best,
  affiliate customers (who came for a discount) worst, and main-product buyers convert better
  than trial buyers.
* Converted customers either keep buying single orders (a heterogeneous repeat process: a few
  become loyal 優良 customers, most lapse) or move to a 定期 subscription, whose continuation
  falls with each delivery and drops sharply right after the minimum commitment (縛り) ends.

Probabilities are per customer unless the name says otherwise. Weights need not sum to 100.
"""

from __future__ import annotations

from typing import NamedTuple

from kizuna.commerce.models import ProductKind
from kizuna.customers.models import AcquisitionChannel as Ch
from kizuna.customers.models import Gender
from kizuna.subscriptions.models import CancelReason

# --- Catalogue ---------------------------------------------------------------------------------


class ProductSpec(NamedTuple):
    id: int  # primary key in the demo database
    code: str
    name: str
    kind: ProductKind
    category: str
    price: int  # yen, tax included


CATALOGUE: tuple[ProductSpec, ...] = (
    ProductSpec(1, "SK-TR-01", "薬用ホワイトニング美容液 トライアルセット", ProductKind.TRIAL, "スキンケア", 980),
    ProductSpec(2, "SK-MN-01", "薬用ホワイトニング美容液 30日分", ProductKind.MAIN, "スキンケア", 4980),
    ProductSpec(3, "SK-SB-01", "薬用ホワイトニング美容液 定期便", ProductKind.SUBSCRIPTION, "スキンケア", 3980),
    ProductSpec(4, "SK-SP-01", "薬用ホワイトニング美容液 サンプル", ProductKind.SAMPLE, "スキンケア", 0),
    ProductSpec(5, "SK-MN-02", "うるおい保湿クリーム 50g", ProductKind.MAIN, "スキンケア", 3280),
    ProductSpec(6, "SP-TR-01", "国産大麦若葉の青汁 お試し7包", ProductKind.TRIAL, "健康食品", 500),
    ProductSpec(7, "SP-MN-01", "国産大麦若葉の青汁 30包", ProductKind.MAIN, "健康食品", 3480),
    ProductSpec(8, "SP-SB-01", "国産大麦若葉の青汁 定期便", ProductKind.SUBSCRIPTION, "健康食品", 2980),
    ProductSpec(9, "SP-TR-02", "すっきり生酵素 お試し10日分", ProductKind.TRIAL, "健康食品", 980),
    ProductSpec(10, "SP-MN-02", "すっきり生酵素 30日分", ProductKind.MAIN, "健康食品", 3980),
    ProductSpec(11, "SP-SB-02", "すっきり生酵素 定期便", ProductKind.SUBSCRIPTION, "健康食品", 3280),
    ProductSpec(12, "OT-PO-01", "オリジナル化粧ポーチ", ProductKind.OTHER, "雑貨", 1100),
)  # fmt: skip

PRODUCTS: dict[str, ProductSpec] = {p.code: p for p in CATALOGUE}


class Line(NamedTuple):
    """A product line a customer is acquired into: trial → main → subscription."""

    key: str
    trial: ProductSpec
    main: ProductSpec
    subscription: ProductSpec
    lp_url: str  # the landing page ads send people to


LINES: dict[str, Line] = {
    "skincare": Line(
        "skincare",
        PRODUCTS["SK-TR-01"],
        PRODUCTS["SK-MN-01"],
        PRODUCTS["SK-SB-01"],
        "/lp/whitening",
    ),
    "aojiru": Line(
        "aojiru", PRODUCTS["SP-TR-01"], PRODUCTS["SP-MN-01"], PRODUCTS["SP-SB-01"], "/lp/aojiru"
    ),
    "enzyme": Line(
        "enzyme", PRODUCTS["SP-TR-02"], PRODUCTS["SP-MN-02"], PRODUCTS["SP-SB-02"], "/lp/kouso"
    ),
}
SAMPLE = PRODUCTS["SK-SP-01"]
CREAM = PRODUCTS["SK-MN-02"]  # cross-sell for skincare customers
POUCH = PRODUCTS["OT-PO-01"]  # add-on and year-end gift item

# --- Acquisition -------------------------------------------------------------------------------

YEARS_OF_HISTORY = 3
# New customers per day grow by this factor from the first to the last day of the history.
ACQUISITION_GROWTH = 2.2
# Relative acquisitions per calendar month: year-end gifts and new-season campaigns peak, the
# short February and the summer holidays are quiet.
MONTH_SEASONALITY: dict[int, float] = {
    1: 1.00, 2: 0.72, 3: 1.25, 4: 1.05, 5: 0.95, 6: 0.90,
    7: 0.92, 8: 0.74, 9: 0.95, 10: 1.05, 11: 1.30, 12: 1.45,
}  # fmt: skip
# Monday … Sunday: ads are bought for weekends and Monday catches up on the weekend's calls.
WEEKDAY_SEASONALITY: tuple[float, ...] = (1.08, 0.97, 0.95, 0.95, 0.96, 1.02, 1.07)

# Channel mix at the start and at the end of the history (SNS and LINE grow, paper shrinks).
CHANNEL_MIX_START: dict[Ch, float] = {
    Ch.WEB_AD: 36, Ch.SNS: 10, Ch.LINE: 8, Ch.PHONE: 15, Ch.PAPER: 18, Ch.AFFILIATE: 11, Ch.OTHER: 2,
}  # fmt: skip
CHANNEL_MIX_END: dict[Ch, float] = {
    Ch.WEB_AD: 33, Ch.SNS: 20, Ch.LINE: 15, Ch.PHONE: 10, Ch.PAPER: 11, Ch.AFFILIATE: 9, Ch.OTHER: 2,
}  # fmt: skip
DIGITAL_CHANNELS: frozenset[Ch] = frozenset({Ch.WEB_AD, Ch.SNS, Ch.LINE, Ch.AFFILIATE, Ch.OTHER})

# Share of first orders that are a trial (the rest buy the main product).
TRIAL_FIRST_SHARE: dict[Ch, float] = {
    Ch.WEB_AD: 0.80, Ch.SNS: 0.82, Ch.LINE: 0.65, Ch.PHONE: 0.35,
    Ch.PAPER: 0.40, Ch.AFFILIATE: 0.88, Ch.OTHER: 0.60,
}  # fmt: skip

# Which line a customer is acquired into: skincare weight, aojiru weight, enzyme weight.
LINE_WEIGHTS: dict[Ch, tuple[float, float, float]] = {
    Ch.WEB_AD: (68, 16, 16), Ch.SNS: (75, 8, 17), Ch.LINE: (66, 16, 18), Ch.PHONE: (40, 42, 18),
    Ch.PAPER: (42, 43, 15), Ch.AFFILIATE: (62, 14, 24), Ch.OTHER: (60, 25, 15),
}  # fmt: skip

# Gender by line (female, male, other, unknown): a whitening serum sells mostly to women.
GENDER_WEIGHTS: dict[str, tuple[float, float, float, float]] = {
    "skincare": (93, 5, 0.5, 1.5),
    "aojiru": (60, 35, 0.5, 4.5),
    "enzyme": (78, 18, 0.5, 3.5),
}
GENDERS: tuple[Gender, ...] = (Gender.FEMALE, Gender.MALE, Gender.OTHER, Gender.UNKNOWN)

# Age at as_of, in bands; digital customers are younger than TV/paper customers and the
# supplement buyers are older than the serum buyers.
AGE_BANDS: tuple[tuple[int, int], ...] = (
    (20, 29),
    (30, 39),
    (40, 49),
    (50, 59),
    (60, 69),
    (70, 84),
)
AGE_WEIGHTS: dict[tuple[bool, bool], tuple[float, ...]] = {
    # (digital channel, skincare line)
    (True, True): (9, 22, 29, 23, 12, 5),
    (True, False): (4, 11, 21, 28, 24, 12),
    (False, True): (2, 7, 18, 28, 28, 17),
    (False, False): (1, 3, 10, 24, 34, 28),
}
BIRTHDAY_UNKNOWN_SHARE = 0.10
COMPANY_SHARE = 0.03
ADDRESS2_SHARE = 0.35  # lives in a flat and wrote the building name
NOTE_SHARE = 0.04

# --- Repeat purchases --------------------------------------------------------------------------

# F2: probability of ever buying a second time, by channel, for (trial-first, main-first).
F2_RATE: dict[Ch, tuple[float, float]] = {
    Ch.PAPER: (0.34, 0.47), Ch.PHONE: (0.32, 0.44), Ch.LINE: (0.30, 0.40),
    Ch.WEB_AD: (0.24, 0.34), Ch.SNS: (0.21, 0.30), Ch.AFFILIATE: (0.12, 0.21),
    Ch.OTHER: (0.25, 0.35),
}  # fmt: skip
# Days from the first to the second purchase: minimum + Gamma(shape, scale). A trial lasts a
# week or two; a 30-day main product is bought again when it runs out.
SECOND_GAP_TRIAL: tuple[float, float, float] = (8, 2.4, 15)  # mean ≈ 44 days
SECOND_GAP_MAIN: tuple[float, float, float] = (18, 3.2, 12)  # mean ≈ 56 days
# What the second order is, by first product kind: main product, subscription, other line.
SECOND_ORDER_AFTER_TRIAL: tuple[float, float, float] = (60, 30, 10)  # 引き上げ
SECOND_ORDER_AFTER_MAIN: tuple[float, float, float] = (58, 28, 14)
# Trial buyers get a coupon for their first main product; some use it.
UPSELL_COUPON_SHARE = 0.6
UPSELL_COUPON_YEN = 1000
FIRST_ORDER_COUPON_SHARE = 0.3  # web main-product first orders with the new-customer coupon
FIRST_ORDER_COUPON_YEN = 500
# After the second order each customer has their own probability of buying again after each
# purchase (Beta distributed: most lapse soon, a few keep buying for years) …
REPEAT_LOYALTY_BETA: tuple[float, float] = (2.4, 1.5)
# … and their own rhythm: a preferred interval in days, with Gamma noise (CV ≈ 0.4).
REPEAT_INTERVAL_DAYS: tuple[float, float] = (28, 70)
REPEAT_INTERVAL_SHAPE = 6.0
SWITCH_TO_SUBSCRIPTION = 0.10  # per repeat order: "定期にすればお得です" works sometimes
CROSS_LINE_SHARE = 0.08  # per repeat order: try another line's product instead
COMEBACK_AFTER_CANCEL = 0.18  # cancelled subscribers who later buy again
COMEBACK_GAP_DAYS: tuple[int, int] = (45, 240)
# Repeat-order extras: quantity 2 or 3 (まとめ買い), cream cross-sell, pouch, free sample.
QUANTITY_WEIGHTS: tuple[float, float, float] = (82, 14, 4)
CREAM_ADDON_SHARE = 0.10
POUCH_ADDON_SHARE = 0.03
SAMPLE_ADDON_SHARE = 0.12

# Year-end: repeat customers active in the last 150 days get a 歳末感謝セール offer (10% off).
YEAR_END_ACTIVE_DAYS = 150
YEAR_END_RESPONSE = 0.24
YEAR_END_DISCOUNT = 0.10
YEAR_END_LAST_DAY = 20  # orders fall on 1–20 December

# --- Subscriptions -----------------------------------------------------------------------------

# (cycle kind, days or monthly day, weight): most ship every 30 days.
CYCLES: tuple[tuple[str, int, float], ...] = (
    ("days", 30, 70), ("days", 45, 10), ("days", 60, 10),
    ("monthly_day", 5, 3), ("monthly_day", 15, 4), ("monthly_day", 25, 3),
)  # fmt: skip
# Minimum number of deliveries (縛り): 3 for most offers, none for the "いつでも解約OK" offer.
COMMITMENTS: tuple[tuple[int, float], ...] = ((3, 62), (0, 30), (6, 8))
SUBSCRIPTION_QUANTITY_2_SHARE = 0.05
# Each subscription's chance of being cancelled after any delivery is Beta distributed: the
# population's continuation curve then flattens, as the fickle leave first.
CHURN_BETA: tuple[float, float] = (1.1, 6.5)  # mean ≈ 0.14
POST_COMMITMENT_SPIKE = 0.30  # extra cancellation chance right after the 縛り is fulfilled
NO_COMMITMENT_FIRST_SPIKE = 0.15  # "いつでも解約OK" subscribers often stop after one box
SKIP_RATE = 0.04  # per delivery: "今回はスキップで"
PAUSE_RATE = 0.012  # per delivery: pause for a few cycles
PAUSE_CYCLES: tuple[int, int] = (1, 3)
ADDON_ORDER_RATE = 0.04  # per delivery: a separate single order (cream, pouch, other line)
CANCEL_REASON_WEIGHTS: dict[CancelReason, float] = {
    CancelReason.SURPLUS: 30, CancelReason.NO_EFFECT: 22, CancelReason.PRICE: 17,
    CancelReason.SKIN: 7, CancelReason.SWITCHED: 9, CancelReason.MOVING: 4, CancelReason.OTHER: 11,
}  # fmt: skip
SKIN_REASON_FACTOR_SKINCARE = 2.0  # a serum causes skin complaints, a 青汁 rarely does
CANCEL_NOTE_SHARE = 0.45
CANCEL_NOTES: dict[CancelReason, tuple[str, ...]] = {
    CancelReason.SURPLUS: ("商品が余っているとのこと。周期変更を案内するも解約希望。", "在庫が2本あるため解約。"),
    CancelReason.NO_EFFECT: ("効果を実感できないとのこと。", "3か月使ったが変化がないとのこと。"),
    CancelReason.PRICE: ("家計の見直しのため。", "価格がネックとのこと。割引案内済み。"),
    CancelReason.SKIN: ("赤みが出たため使用中止。返金対象外を説明済み。", "肌に合わないとのこと。"),
    CancelReason.SWITCHED: ("他社商品に切り替えるとのこと。", "ドラッグストアで購入するとのこと。"),
    CancelReason.MOVING: ("転居のため。新住所は未定。", "長期入院のため。"),
    CancelReason.OTHER: ("理由はお聞きできず。", "ご家族の意向とのこと。"),
}  # fmt: skip

# --- Orders, shipping, payment -----------------------------------------------------------------

SHIPPING_FEE = 550
FREE_SHIPPING_FROM = 4980  # 送料無料 from the main serum's price up; trials always ship free
ORDER_CANCEL_RATE = 0.028  # per single (non-subscription) order, before shipping
ORDER_RETURN_RATE = 0.014  # per single order, within a week of delivery
ORDER_CANCEL_REASONS: tuple[str, ...] = (
    "お客様都合(注文重複)", "お客様都合(不要になった)", "支払い方法の変更のため再注文", "住所不備",
)  # fmt: skip
ORDER_RETURN_REASONS: tuple[str, ...] = (
    "肌に合わない(初回返金保証)", "商品破損", "誤配送", "イメージと違った",
)  # fmt: skip
CARRIERS: tuple[tuple[str, float], ...] = (("ヤマト運輸", 55), ("佐川急便", 30), ("日本郵便", 15))
# Payment method weights, for customers of digital and of phone/paper channels.
PAYMENT_METHODS: tuple[str, ...] = ("クレジットカード", "後払い", "コンビニ払い", "代引き")
PAYMENT_WEIGHTS_DIGITAL: tuple[float, ...] = (62, 24, 8, 6)
PAYMENT_WEIGHTS_TRADITIONAL: tuple[float, ...] = (15, 37, 8, 40)
PAYMENT_METHOD_LOYALTY = 0.9  # chance a customer pays the same way as last time
REMOTE_PREFECTURES: frozenset[int] = frozenset({1, 47, 46, 45, 42})  # one more day in transit

# --- Points ------------------------------------------------------------------------------------

POINT_PERCENT = 1  # whole points per ¥100 paid (1%)
POINT_GRANT_DELAY_DAYS = 7  # points are granted a week after delivery (after the return window)
POINT_REMINDER_DAYS = 30  # e-mail "ポイント有効期限のお知らせ" this many days before expiry
REDEEM_SHARE = 0.35  # single orders placed with ≥ REDEEM_MIN points that use them
REDEEM_MIN = 1  # points can be used from 1pt (¥1)

# --- Consent, membership, tags -----------------------------------------------------------------

EMAIL_SHARE: dict[bool, float] = {True: 0.97, False: 0.45}  # digital channel or not
EMAIL_CONSENT_SHARE: dict[bool, float] = {True: 0.90, False: 0.75}  # among customers with e-mail
SMS_CONSENT_SHARE = 0.22  # among customers with a mobile number
LINE_CONSENT_SHARE: dict[Ch, float] = {
    Ch.LINE: 0.92, Ch.SNS: 0.45, Ch.WEB_AD: 0.15, Ch.AFFILIATE: 0.08,
    Ch.OTHER: 0.10, Ch.PHONE: 0.04, Ch.PAPER: 0.03,
}  # fmt: skip
POSTAL_CONSENT_SHARE: dict[bool, float] = {True: 0.30, False: 0.86}
PHONE_CONSENT_SHARE: dict[Ch, float] = {Ch.PHONE: 0.60, Ch.PAPER: 0.35}  # others: 0.04
OPT_OUT_SHARE = 0.055  # granted consents later withdrawn (plus all of a 退会 customer's)
GUEST_SHARE_SINGLE_TRIAL = (
    0.25  # digital trial buyers who never came back often checked out as guest
)
GUEST_SHARE_OTHER = 0.04  # other one-order customers
WITHDRAWN_SHARE = 0.08  # lapsed customers (no order for 180 days) who later deleted their account
LAPSED_DAYS = 180
EMAIL_UPPERCASE_SHARE = 0.10  # typed their address with capitals
EMAIL_FULLWIDTH_SHARE = 0.04  # typed it with a Japanese IME (ｈａｎａｋｏ＠…)
PHONE_NO_HYPHEN_SHARE = 0.15
PHONE_FULLWIDTH_SHARE = 0.05
LOYAL_SPEND_YEN = 70_000  # 優良: spent more than this …
LOYAL_TENURE_DAYS = 210  # … over at least this many days
VIP_TAG_SHARE = 0.85  # of loyal customers
TAGS: tuple[str, ...] = ("VIP", "クレーム注意", "モニター", "メルマガ読者", "敏感肌", "同梱物不要")
CLAIM_TAG_SHARE = 0.006
MONITOR_TAG_SHARE = 0.012
NEWSLETTER_TAG_SHARE = 0.06  # of customers with e-mail consent
NO_INSERTS_TAG_SHARE = 0.008
NOTES: tuple[str, ...] = (
    "日中は不在がち。夕方以降の配達希望。", "置き配可(玄関前)。", "電話は午前中希望。",
    "ご家族分もまとめて注文されることが多い。", "以前、配送遅延でご不満あり。丁寧に対応すること。",
    "耳が遠いため、電話ではゆっくり話すこと。", "ギフト用に購入されることがある。",
)  # fmt: skip
COMPANY_NOTE = "請求書は会社宛てに送付。"

# --- Contacts, messages, behaviour -------------------------------------------------------------

CONTACT_SHARE = 0.06  # customers with an inquiry not caused by a cancellation or return
SECOND_CONTACT_SHARE = 0.2
CANCEL_CONTACT_SHARE = 0.55  # subscription cancellations that came in through the call centre
SKIP_CONTACT_SHARE = 0.5
RETURN_CONTACT_SHARE = 0.8
OUTBOUND_SHARE = 0.08
CONTACT_CHANNELS: tuple[tuple[str, float], ...] = (
    ("phone", 50), ("email", 25), ("chat", 10), ("line", 10), ("letter", 5),
)  # fmt: skip
# (reason, summaries); 肌トラブル only for skincare customers.
CONTACT_REASONS: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("お届け日の変更", 22, ("次回お届け日の変更希望。変更済み。", "旅行のため到着日を週末に変更。")),
    ("商品の使い方", 18, ("使用量とタイミングの質問。朝晩2プッシュを案内。", "他の化粧品との併用可否の質問。")),
    ("支払い方法", 14, ("後払いの請求書が届かない。再発行手配。", "クレジットカードの変更方法を案内。")),
    ("肌トラブル", 8, ("使用後に赤み。使用中止と皮膚科受診を案内。", "かゆみが出たとの申告。経過確認予定。")),
    ("ポイントについて", 10, ("ポイント残高と有効期限の確認。", "ポイントが付与されていないとの問い合わせ。付与日を案内。")),
    ("住所変更", 10, ("転居に伴う住所変更。", "お届け先を実家に変更。")),
    ("注文内容の確認", 18, ("注文が完了しているかの確認。", "数量の変更依頼。出荷前のため対応済み。")),
)  # fmt: skip
OUTBOUND_SUMMARIES: tuple[str, ...] = (
    "お届け先不明で返送。住所確認の電話。", "代引き受取辞退の確認。", "アンケートご協力のお願い。",
)  # fmt: skip

BEHAVIOUR_WINDOW_DAYS = 60  # web tracking is only kept this long
BEHAVIOUR_ACTIVE_SHARE = 0.45  # recently active digital customers seen on the site
BEHAVIOUR_OTHER_SHARE = 0.04
CART_ADD_SHARE = 0.32  # browsing sessions that put something in the cart (then abandon it)
CHECKOUT_START_SHARE = 0.5  # … of which start the checkout before abandoning

# (days after the first order, trial buyers only?, title): step mails to consenting customers.
STEP_MAILS: tuple[tuple[int, bool, str], ...] = (
    (3, False, "メール送信: ご購入ありがとうございます(使い方ガイド)"),
    (10, True, "メール送信: 【トライアルご購入者様限定】本品1,000円OFFクーポン"),
)
POINT_REMINDER_TITLE = "メール送信: 【ご愛用感謝】ポイント有効期限のお知らせ"
# Kizuna's scenarios run over the last SCENARIO_HISTORY_DAYS of the history (kizuna.demo.scenarios)
# and send the step mails and points reminders from then on; the ones above are what the shop
# sent by hand before, so a timeline never shows both for one purchase or one expiry.
SCENARIO_HISTORY_DAYS = 180
# (month, day, consent channel, title): seasonal campaigns to everyone consenting on that day.
CAMPAIGNS: tuple[tuple[int, int, str, str], ...] = (
    (3, 1, "line", "LINE配信: 新生活応援キャンペーンのご案内"),
    (11, 10, "postal", "DM送付: 冬のカタログ・歳末感謝セールのご案内"),
    (11, 25, "email", "メール送信: 【歳末感謝セール】ご愛用者様限定10%OFF"),
)
