"""Writes the golden CSV files of this directory: `python tests/data/ingest/build_golden.py`.

The files are committed as the real bytes a cart produces (CP932 with CRLF for EC-CUBE, UTF-8
with a BOM for Shopify); this script is how they were made, so a change stays reviewable.
Every file carries the characters that break naive importers: ① ㈱ 髙 﨑, both wave dashes
(CP932 can only hold ～ U+FF5E), half-width kana and full-width digits in phone numbers.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

HERE = Path(__file__).resolve().parent

# EC-CUBE 4's default 受注CSV columns, in its default order (dtb_csv, csv_type 3).
ECCUBE_ORDER_HEADER = [
    "注文ID", "注文番号", "会員ID", "お名前(姓)", "お名前(名)", "お名前(セイ)", "お名前(メイ)",
    "会社名", "郵便番号", "都道府県(ID)", "都道府県(名称)", "住所1", "住所2", "メールアドレス",
    "TEL", "性別(ID)", "性別(名称)", "職業(ID)", "職業(名称)", "誕生日", "ショップ用メモ欄",
    "小計", "値引き", "送料", "税金", "合計", "支払合計", "対応状況(ID)", "対応状況(名称)",
    "支払方法(ID)", "支払方法(名称)", "受注日", "入金日", "注文詳細ID", "商品ID", "商品規格ID",
    "商品名", "商品コード", "規格名1", "規格名2", "規格分類名1", "規格分類名2", "価格", "個数",
    "税率", "税率ルール(ID)", "明細区分(ID)", "明細区分(名称)", "出荷ID", "配送先_お名前(姓)",
    "配送先_お名前(名)", "配送先_お名前(セイ)", "配送先_お名前(メイ)", "配送先_会社名",
    "配送先_郵便番号", "配送先_都道府県(ID)", "配送先_都道府県(名称)", "配送先_住所1",
    "配送先_住所2", "配送先_TEL", "配送業者(ID)", "配送業者(名称)", "お届け時間ID",
    "お届け時間(名称)", "お届け希望日", "送料", "発送日", "出荷伝票番号", "配達用メモ",
    "出荷メール送信日",
]  # fmt: skip

HANAKO = {
    "会員ID": "101", "お名前(姓)": "髙橋", "お名前(名)": "花子", "お名前(セイ)": "ﾀｶﾊｼ",
    "お名前(メイ)": "ﾊﾅｺ", "会社名": "㈱髙﨑商事", "郵便番号": "150-0002", "都道府県(ID)": "13",
    "都道府県(名称)": "東京都", "住所1": "渋谷区渋谷１－２－３", "住所2": "髙﨑ビル①号室",
    "メールアドレス": "Hanako.Takahashi@Example.jp", "TEL": "０９０－１２３４－５６７８",
    "性別(ID)": "2", "性別(名称)": "女性", "誕生日": "1985-04-01 00:00:00",
}  # fmt: skip
ICHIRO = {
    "会員ID": "", "お名前(姓)": "佐藤", "お名前(名)": "一郎", "お名前(セイ)": "サトウ",
    "お名前(メイ)": "イチロウ", "郵便番号": "5300001", "都道府県(ID)": "27",
    "都道府県(名称)": "大阪府", "住所1": "大阪市北区梅田1-1-1", "住所2": "",
    "メールアドレス": "ichiro.sato@example.com", "TEL": "06-1234-5678", "性別(ID)": "1",
    "性別(名称)": "男性",
}  # fmt: skip
YUKARI = {
    "会員ID": "102", "お名前(姓)": "﨑山", "お名前(名)": "ゆかり", "お名前(セイ)": "サキヤマ",
    "お名前(メイ)": "ユカリ", "郵便番号": "812-0011", "都道府県(ID)": "40",
    "都道府県(名称)": "福岡県", "住所1": "福岡市博多区博多駅前2-2-2", "住所2": "",
    "メールアドレス": "yukari@example.net", "TEL": "092-123-4567",
}  # fmt: skip


def eccube_order_rows(
    number: str,
    customer: dict[str, str],
    *,
    status: tuple[str, str],
    ordered_at: str,
    items: list[tuple[str, str, int, int]],
    shipping: int = 550,
    points: int = 0,
    shipped: str = "",
    tracking: str = "",
    payment: str = "クレジットカード",
) -> list[dict[str, str]]:
    """One EC-CUBE order as its export rows: product rows (price without tax, 10%), then the
    送料 row and, when points were used, the ポイント row."""
    subtotal = sum((price + price // 10) * qty for _code, _name, price, qty in items)
    total = subtotal + shipping
    order = {
        **customer,
        "注文ID": number.removeprefix("#"),
        "注文番号": number,
        "小計": str(subtotal),
        "値引き": "0",
        "送料": str(shipping),
        "税金": str(sum(price // 10 * qty for _c, _n, price, qty in items)),
        "合計": str(total),
        "支払合計": str(total - points),
        "対応状況(ID)": status[0],
        "対応状況(名称)": status[1],
        "支払方法(ID)": "4",
        "支払方法(名称)": payment,
        "受注日": ordered_at,
        "出荷ID": str(int(number) + 5000),
        "配送業者(ID)": "1",
        "配送業者(名称)": "ヤマト運輸",
        "発送日": shipped,
        "出荷伝票番号": tracking,
    }
    rows = []
    for index, (code, name, price, qty) in enumerate(items):
        rows.append(
            {
                **order,
                "注文詳細ID": f"{number}{index}",
                "商品ID": str(10 + index),
                "商品規格ID": str(100 + index),
                "商品名": name,
                "商品コード": code,
                "価格": str(price),
                "個数": str(qty),
                "税率": "10",
                "税率ルール(ID)": "1",
                "明細区分(ID)": "1",
                "明細区分(名称)": "商品",
            }
        )
    rows.append(
        {
            **order,
            "商品名": "送料",
            "価格": str(shipping),
            "個数": "1",
            "税率": "10",
            "明細区分(ID)": "2",
            "明細区分(名称)": "送料",
        }
    )
    if points:
        rows.append(
            {
                **order,
                "商品名": "ポイント",
                "価格": str(-points),
                "個数": "1",
                "税率": "0",
                "明細区分(ID)": "6",
                "明細区分(名称)": "ポイント",
            }
        )
    return rows


def write_csv(
    name: str, header: list[str], rows: list[dict[str, str]], encoding: str, newline: str
) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator=newline, quoting=csv.QUOTE_ALL)
    writer.writerow(header)
    for row in rows:
        writer.writerow([row.get(column, "") for column in header])
    (HERE / name).write_bytes(buffer.getvalue().encode(encoding))


def eccube_orders(*, later: bool = False) -> list[dict[str, str]]:
    rows = eccube_order_rows(
        "1001",
        HANAKO,
        status=("5", "発送済み") if later else ("1", "新規受付"),
        ordered_at="2026-05-01 10:23:45",
        items=[
            ("SK-TR-01", "薬用美容液①～お試しサイズ～", 1800, 1),
            ("SK-LT-02", "化粧水 ㈱髙﨑ｺﾗﾎﾞ", 3600, 2),
        ],
        points=100,
        shipped="2026-05-02 15:30:00" if later else "",
        tracking="1234-5678-9012" if later else "",
    )
    rows += eccube_order_rows(
        "1002",
        ICHIRO,
        status=("5", "発送済み"),
        ordered_at="2026-05-02 09:00:00",
        items=[("SP-01", "無添加石鹸", 900, 1)],
        shipped="2026-05-03 14:00:00",
        tracking="4455-6677-8899",
        payment="代金引換",
    )
    rows += eccube_order_rows(
        "1003",
        YUKARI,
        status=("3", "注文取消し"),
        ordered_at="2026-05-03 21:15:00",
        items=[("SK-TR-01", "薬用美容液①～お試しサイズ～", 1800, 1)],
    )
    rows += eccube_order_rows(
        "1004",
        YUKARI,
        status=("8", "購入処理中"),
        ordered_at="2026-05-04 08:00:00",
        items=[("SP-01", "無添加石鹸", 900, 3)],
    )
    rows += eccube_order_rows(
        "1005",
        HANAKO,
        status=("6", "入金済み"),
        ordered_at="2026-05-10 12:00:00",
        items=[("SK-LT-02", "化粧水 ㈱髙﨑ｺﾗﾎﾞ", 3600, 1)],
        shipping=0,
    )
    return rows


MEMBER_HEADER = [
    "会員ID", "お名前(姓)", "お名前(名)", "お名前(セイ)", "お名前(メイ)", "会社名", "郵便番号",
    "都道府県(ID)", "都道府県(名称)", "住所1", "住所2", "メールアドレス", "TEL", "性別(ID)",
    "性別(名称)", "職業(ID)", "職業(名称)", "誕生日", "初回購入日", "最終購入日", "購入回数",
    "ショップ用メモ欄", "会員ステータス(ID)", "会員ステータス(名称)", "登録日", "更新日",
    "ポイント", "メルマガ",
]  # fmt: skip


def eccube_members() -> list[dict[str, str]]:
    return [
        {**HANAKO, "会員ステータス(ID)": "2", "会員ステータス(名称)": "本会員",
         "登録日": "2025-12-01 09:30:00", "メルマガ": "1"},
        {**YUKARI, "会員ステータス(ID)": "2", "会員ステータス(名称)": "本会員",
         "登録日": "2026-01-15 20:00:00", "メルマガ": "2"},
        {"会員ID": "103", "お名前(姓)": "山田", "お名前(名)": "太郎", "お名前(セイ)": "ﾔﾏﾀﾞ",
         "お名前(メイ)": "ﾀﾛｳ", "会社名": "㈱山田商店", "郵便番号": "〒１００－０００１",
         "都道府県(ID)": "13", "都道府県(名称)": "東京都", "住所1": "千代田区千代田１－１",
         "住所2": "①号棟", "メールアドレス": "taro@example.org", "TEL": "０３－１１１１－２２２２",
         "性別(ID)": "1", "性別(名称)": "男性", "誕生日": "1970-01-31 00:00:00",
         "会員ステータス(ID)": "2", "会員ステータス(名称)": "本会員",
         "登録日": "2026-02-01 10:00:00", "メルマガ": "1"},
        {"会員ID": "104", "お名前(姓)": "鈴木", "お名前(名)": "一郎", "お名前(セイ)": "スズキ",
         "お名前(メイ)": "イチロウ", "郵便番号": "060-0001", "都道府県(ID)": "1",
         "都道府県(名称)": "北海道", "住所1": "札幌市中央区北1条西1", "メールアドレス":
         "suzuki@example.jp", "TEL": "011-222-3333", "会員ステータス(ID)": "3",
         "会員ステータス(名称)": "退会", "登録日": "2025-06-01 10:00:00", "メルマガ": "0"},
    ]  # fmt: skip


SHOPIFY_HEADER = [
    "Name", "Email", "Financial Status", "Paid at", "Fulfillment Status", "Fulfilled at",
    "Accepts Marketing", "Currency", "Subtotal", "Shipping", "Taxes", "Total", "Discount Code",
    "Discount Amount", "Shipping Method", "Created at", "Lineitem quantity", "Lineitem name",
    "Lineitem price", "Lineitem compare at price", "Lineitem sku", "Lineitem requires shipping",
    "Lineitem taxable", "Lineitem fulfillment status", "Billing Name", "Billing Street",
    "Billing Address1", "Billing Address2", "Billing Company", "Billing City", "Billing Zip",
    "Billing Province", "Billing Country", "Billing Phone", "Shipping Name", "Shipping Street",
    "Shipping Address1", "Shipping Address2", "Shipping Company", "Shipping City",
    "Shipping Zip", "Shipping Province", "Shipping Country", "Shipping Phone", "Notes",
    "Note Attributes", "Cancelled at", "Payment Method", "Payment Reference", "Refunded Amount",
    "Vendor", "Outstanding Balance", "Employee", "Location", "Device ID", "Id", "Tags",
    "Risk Level", "Source", "Lineitem discount", "Tax 1 Name", "Tax 1 Value", "Phone",
    "Receipt Number",
]  # fmt: skip


def shopify_orders() -> list[dict[str, str]]:
    first = {
        "Name": "#1001", "Email": "hanako@example.jp", "Financial Status": "paid",
        "Paid at": "2026-05-01 10:24:10 +0900", "Fulfillment Status": "fulfilled",
        "Fulfilled at": "2026-05-02 15:00:00 +0900", "Accepts Marketing": "yes",
        "Currency": "JPY", "Subtotal": "9440", "Shipping": "600", "Taxes": "858",
        "Total": "9540", "Discount Code": "WELCOME500", "Discount Amount": "500",
        "Shipping Method": "通常配送", "Created at": "2026-05-01 10:23:45 +0900",
        "Lineitem quantity": "1", "Lineitem name": "美容液〜夜用〜", "Lineitem price": "3980",
        "Lineitem sku": "BS-01", "Lineitem requires shipping": "true", "Lineitem taxable": "true",
        "Lineitem fulfillment status": "fulfilled", "Billing Name": "花子 髙橋",
        "Billing Street": "渋谷2-1-1 髙﨑ハイツ①", "Billing Address1": "渋谷2-1-1",
        "Billing Address2": "髙﨑ハイツ①", "Billing City": "渋谷区", "Billing Zip": "150-0002",
        "Billing Province": "JP-13", "Billing Country": "JP", "Billing Phone": "+81 90-1111-2222",
        "Shipping Name": "花子 髙橋", "Payment Method": "Shopify Payments", "Id": "5550001",
        "Source": "web",
    }  # fmt: skip
    second_line = {
        "Name": "#1001", "Lineitem quantity": "2", "Lineitem name": "化粧水～朝用～",
        "Lineitem price": "2980", "Lineitem sku": "BS-02", "Lineitem requires shipping": "true",
        "Lineitem taxable": "true", "Lineitem fulfillment status": "fulfilled",
    }  # fmt: skip
    guest = {
        "Name": "#1002", "Email": "guest@example.com", "Financial Status": "pending",
        "Fulfillment Status": "unfulfilled", "Accepts Marketing": "no", "Currency": "JPY",
        "Subtotal": "5000", "Shipping": "0", "Total": "5000", "Discount Amount": "0",
        "Created at": "2026-05-03 23:59:59 +0900", "Lineitem quantity": "1",
        "Lineitem name": "ギフトカード ¥5,000", "Lineitem price": "5000", "Lineitem sku": "",
        "Billing Name": "次郎 田中", "Billing Address1": "梅田1-1", "Billing City": "大阪市北区",
        "Billing Zip": "530-0001", "Billing Province": "Osaka", "Billing Country": "JP",
        "Billing Phone": "06-9876-5432", "Id": "5550002",
    }  # fmt: skip
    cancelled = {
        "Name": "#1003", "Email": "cancel@example.jp", "Financial Status": "voided",
        "Fulfillment Status": "unfulfilled", "Accepts Marketing": "yes", "Currency": "JPY",
        "Subtotal": "3980", "Shipping": "600", "Total": "4580", "Discount Amount": "0",
        "Created at": "2026-05-04 09:00:00 +0900", "Lineitem quantity": "1",
        "Lineitem name": "美容液〜夜用〜", "Lineitem price": "3980", "Lineitem sku": "BS-01",
        "Billing Name": "美咲 小林", "Billing Province": "Kyōto", "Billing Zip": "600-8001",
        "Billing City": "京都市下京区", "Billing Address1": "四条通1",
        "Cancelled at": "2026-05-04 12:00:00 +0900", "Id": "5550003",
    }  # fmt: skip
    return [first, second_line, guest, cancelled]


GENERIC_HEADER = [
    "受注番号", "受注日時", "状態", "会員番号", "氏名", "フリガナ", "メール", "電話",
    "郵便番号", "都道府県", "住所", "商品番号", "商品名", "単価", "数量", "送料", "出荷日",
    "メルマガ",
]  # fmt: skip


def generic_orders() -> list[dict[str, str]]:
    base = {
        "受注番号": "W-0001", "受注日時": "2026/05/01 10:23", "状態": "出荷済",
        "会員番号": "M-9", "氏名": "髙橋 花子", "フリガナ": "ﾀｶﾊｼ ﾊﾅｺ",
        "メール": "hanako@example.jp", "電話": "０９０－１２３４－５６７８", "郵便番号": "1500002",
        "都道府県": "東京都", "住所": "渋谷区渋谷1-2-3", "送料": "660", "出荷日": "2026/05/02",
        "メルマガ": "はい",
    }  # fmt: skip
    return [
        {**base, "商品番号": "G-1", "商品名": "美容液〜夜用〜", "単価": "3,980", "数量": "1"},
        {**base, "商品番号": "G-2", "商品名": "化粧水～朝用～", "単価": "2,980", "数量": "2"},
        {"受注番号": "W-0002", "受注日時": "2026/05/05 8:05", "状態": "仮受注",
         "氏名": "佐藤 一郎", "メール": "ichiro@example.com", "商品番号": "G-1",
         "商品名": "美容液〜夜用〜", "単価": "3980", "数量": "1"},
        {"受注番号": "W-0003", "受注日時": "2026/05/06 19:40", "状態": "受付",
         "氏名": "﨑山 ゆかり", "メール": "yukari@example.net", "電話": "092-123-4567",
         "商品番号": "G-3", "商品名": "詰め替え用 ①", "単価": "1500", "数量": "3", "送料": "0",
         "メルマガ": "いいえ"},
    ]  # fmt: skip


def bad_rows() -> list[dict[str, str]]:
    """EC-CUBE rows with mistakes a person makes when editing an export in Excel."""
    good = eccube_order_rows(
        "2001", HANAKO, status=("1", "新規受付"), ordered_at="2026-06-01 10:00:00",
        items=[("SK-TR-01", "薬用美容液①～お試しサイズ～", 1800, 1)],
    )  # fmt: skip
    multi = eccube_order_rows(
        "2002", ICHIRO, status=("1", "新規受付"), ordered_at="2026-06-02 10:00:00",
        items=[("SP-01", "無添加石鹸", 900, 1), ("SP-02", "泡立てネット", 200, 2)],
    )  # fmt: skip
    multi[1]["個数"] = "二"  # the middle row of a three-row order
    bad_date = eccube_order_rows(
        "2003", YUKARI, status=("1", "新規受付"), ordered_at="2026-13-45 10:00:00",
        items=[("SP-01", "無添加石鹸", 900, 1)],
    )  # fmt: skip
    bad_postal = eccube_order_rows(
        "2004", {**YUKARI, "郵便番号": "812-001"}, status=("1", "新規受付"),
        ordered_at="2026-06-04 10:00:00", items=[("SP-01", "無添加石鹸", 900, 1)],
    )  # fmt: skip
    good_too = eccube_order_rows(
        "2005", YUKARI, status=("1", "新規受付"), ordered_at="2026-06-05 10:00:00",
        items=[("SK-LT-02", "化粧水 ㈱髙﨑ｺﾗﾎﾞ", 3600, 1)],
    )  # fmt: skip
    return good + multi + bad_date + bad_postal + good_too


def main() -> None:
    write_csv("eccube_orders_cp932.csv", ECCUBE_ORDER_HEADER, eccube_orders(), "cp932", "\r\n")
    write_csv(
        "eccube_orders_later_cp932.csv",
        ECCUBE_ORDER_HEADER,
        eccube_orders(later=True),
        "cp932",
        "\r\n",
    )
    write_csv("eccube_members_cp932.csv", MEMBER_HEADER, eccube_members(), "cp932", "\r\n")
    write_csv("eccube_orders_bad_rows.csv", ECCUBE_ORDER_HEADER, bad_rows(), "cp932", "\r\n")
    write_csv("shopify_orders_bom.csv", SHOPIFY_HEADER, shopify_orders(), "utf-8-sig", "\n")
    write_csv("generic_orders.csv", GENERIC_HEADER, generic_orders(), "utf-8", "\n")
    # A CP932 export with one byte no Shift_JIS table defines (0xFF) in a product name on line 6.
    good = (HERE / "eccube_orders_cp932.csv").read_bytes().split(b"\r\n")
    damaged = good[5].replace("無添加石鹸".encode("cp932"), b"\x96\xb3\xff\x89\xc1")
    assert damaged != good[5]
    (HERE / "eccube_orders_bad_byte_cp932.csv").write_bytes(
        b"\r\n".join([*good[:5], damaged, *good[6:]])
    )


if __name__ == "__main__":
    main()
