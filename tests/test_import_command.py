"""`kizuna import`: exit codes, Japanese messages and the JSON summary."""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

from kizuna.commerce.importers.pipeline import ImportResult
from kizuna.commerce.models import Order

pytestmark = pytest.mark.django_db
DATA = Path(__file__).parent / "data" / "ingest"


def kizuna_import(*args: str) -> tuple[int, str, str]:
    """Run the command as staff would; returns (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("import", *args, stdout=out, stderr=err)
    except SystemExit as exc:
        return int(exc.code or 0), out.getvalue(), err.getvalue()
    return 0, out.getvalue(), err.getvalue()


def test_a_clean_file_exits_zero_with_a_japanese_summary() -> None:
    code, out, _ = kizuna_import("orders", str(DATA / "eccube_orders_cp932.csv"))
    assert code == 0
    assert "EC-CUBE 受注CSV" in out
    assert "新規4件" in out


def test_the_json_summary_has_counts_and_every_rejected_row() -> None:
    code, out, _ = kizuna_import("orders", str(DATA / "eccube_orders_bad_rows.csv"), "--json")
    summary: dict[str, Any] = json.loads(out)
    assert code == 1
    assert summary["status"] == "rejected_rows"
    assert summary["rows_read"] == 11
    assert summary["rows_rejected"] == 7
    assert summary["rows_imported"] == summary["rows_read"] - summary["rows_rejected"]
    assert summary["orders"] == {
        "created": 2,
        "updated": 0,
        "unchanged": 0,
        "stale": 0,
        "skipped": 0,
        "rejected": 3,
    }
    assert summary["customers"] == {"created": 2, "matched": 0, "updated": 0}
    assert len(summary["errors"]) == 7
    assert summary["errors"][1] == {
        "line": 5,
        "column": "個数",
        "reason": "個数として読めません",
        "order": "2002",
    }
    assert summary["encoding"] == "cp932"
    assert summary["format"] == "eccube"


def test_the_plain_report_lists_each_bad_row() -> None:
    _, out, _ = kizuna_import("orders", str(DATA / "eccube_orders_bad_rows.csv"))
    assert "5行目 [個数] 個数として読めません(注文番号 2002)" in out
    assert "9行目 [郵便番号]" in out


def test_the_plain_report_says_the_orders_left_out_and_why() -> None:
    # The web page and --json count 対象外 (EC-CUBE's 購入処理中); the terminal says it too.
    code, out, _ = kizuna_import("orders", str(DATA / "eccube_orders_cp932.csv"))
    assert code == 0
    assert "対象外 1件(2行): 購入処理中(決済が完了していない注文)のため取り込みません" in out
    _, generic, _ = kizuna_import(
        "orders",
        str(DATA / "generic_orders.csv"),
        "--mapping",
        str(DATA / "generic_orders.yml"),
        "--dry-run",
    )
    assert "対象外 1件(1行): マッピングの skip_statuses に当たるため取り込みません" in generic


def test_the_plain_report_has_no_left_out_line_when_every_order_counts() -> None:
    _, out, _ = kizuna_import("orders", str(DATA / "shopify_orders_bom.csv"))
    assert "新規3件" in out
    assert "対象外" not in out


def test_left_out_orders_of_several_reasons_are_counted_by_reason() -> None:
    command = importlib.import_module("kizuna.commerce.management.commands.import")
    result = ImportResult(kind="orders", file="x.csv", dry_run=False, strict=False)
    result.orders.update(skipped=3)
    result.rows_skipped = 5
    result.skip_reasons.update({"仮受注のため取り込みません": 2, "保留のため取り込みません": 1})
    assert command._skipped_lines(result) == [
        "対象外 3件(5行):",
        "  仮受注のため取り込みません 2件",
        "  保留のため取り込みません 1件",
    ]


def test_strict_refusal_exits_one_and_writes_nothing() -> None:
    code, _, err = kizuna_import("orders", str(DATA / "eccube_orders_bad_rows.csv"), "--strict")
    assert code == 1
    assert "何も取り込みませんでした" in err
    assert not Order.objects.exists()


def test_an_undecodable_byte_exits_one_with_its_place() -> None:
    code, out, err = kizuna_import(
        "orders", str(DATA / "eccube_orders_bad_byte_cp932.csv"), "--json"
    )
    summary = json.loads(out)
    assert code == 1
    assert summary["status"] == "refused"
    assert summary["refused_at"]["line"] == 6
    assert "6行目" in summary["message"]
    assert err == ""
    assert not Order.objects.exists()


def test_dry_run_reports_and_writes_nothing() -> None:
    code, out, _ = kizuna_import(
        "orders", str(DATA / "shopify_orders_bom.csv"), "--dry-run", "--json"
    )
    summary = json.loads(out)
    assert (code, summary["dry_run"], summary["orders"]["created"]) == (0, True, 3)
    assert not Order.objects.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["orders", "no-such-file.csv"], "ファイルが見つかりません"),
        (["orders", str(DATA)], "ファイルではなくフォルダが指定されています"),
        (["orders", str(DATA / "generic_orders.csv"), "--format", "generic"], "--mapping"),
        (
            ["orders", str(DATA / "generic_orders.csv"), "--mapping", "missing.yml"],
            "マッピングファイルが見つかりません",
        ),
        (["customers", str(DATA / "shopify_orders_bom.csv"), "--format", "shopify"], "Shopify"),
        (["orders", str(DATA / "eccube_orders_cp932.csv"), "--batch-size", "0"], "1〜5,000"),
        (
            ["customers", str(DATA / "eccube_members_cp932.csv"), "--consent-wording", "v" * 33],
            "--consent-wording は32文字までです(いま33文字)",
        ),
        (["orders", str(DATA / "eccube_orders_cp932.csv"), "--batch-size", "5001"], "1〜5,000"),
    ],
)
def test_usage_errors_exit_two_in_japanese(args: list[str], message: str) -> None:
    code, _, err = kizuna_import(*args)
    assert code == 2
    assert message in err


def test_an_unknown_format_is_refused_with_a_hint() -> None:
    code, _, err = kizuna_import("orders", str(DATA / "generic_orders.csv"))
    assert code == 1
    assert "--format generic" in err


def test_a_mistyped_command_line_exits_two_in_japanese(tmp_path: Path) -> None:
    # argparse itself answers here, before Django runs the command
    env = {**os.environ, "KIZUNA_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "kizuna", "import", "order", "x.csv"],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert "指定できる値" in done.stderr


@pytest.mark.parametrize(
    ("kind", "file", "hint"),
    [
        ("customers", "eccube_orders_cp932.csv", "kizuna import orders"),
        ("customers", "shopify_orders_bom.csv", "kizuna import orders"),
        ("orders", "eccube_members_cp932.csv", "kizuna import customers"),
    ],
)
def test_a_file_of_the_other_kind_is_refused_with_the_command_to_use(
    kind: str, file: str, hint: str
) -> None:
    code, _, err = kizuna_import(kind, str(DATA / file))
    assert code == 1
    assert hint in err
    assert not Order.objects.exists()


def test_a_file_with_only_its_header_says_there_was_nothing_to_import(tmp_path: Path) -> None:
    # an export for a period with no orders: not an error, but not "0 rows imported" either
    header = (DATA / "eccube_orders_cp932.csv").read_bytes().splitlines(keepends=True)[0]
    path = tmp_path / "受注_空.csv"
    path.write_bytes(header)
    code, out, _ = kizuna_import("orders", str(path))
    assert code == 0
    assert "取り込むデータの行がありませんでした" in out
    assert not Order.objects.exists()


def test_json_mode_answers_a_usage_error_in_json_too(tmp_path: Path) -> None:
    code, out, err = kizuna_import("orders", str(tmp_path / "nothing.csv"), "--json")
    assert code == 2
    assert json.loads(out) == {
        "status": "usage_error",
        "message": f"ファイルが見つかりません: {tmp_path / 'nothing.csv'}",
    }
    assert "エラー:" in err


STALE_MAPPING = """\
kind: orders
columns:
  order_number: 受注番号
  ordered_at: 受注日時
  updated_at: 更新日時
  product_code: 商品番号
  unit_price: 単価
  quantity: 数量
  email: メール
  full_name: 氏名
"""


def _dated_export(tmp_path: Path, name: str, updated_at: str) -> Path:
    path = tmp_path / name
    path.write_text(
        "受注番号,受注日時,更新日時,商品番号,単価,数量,メール,氏名\n"
        f"S-1,2026-05-01 10:00,{updated_at},P-1,1000,1,s1@example.jp,山田 花子\n"
        f"S-2,2026-05-01 11:00,{updated_at},P-1,1000,1,s2@example.jp,佐藤 一郎\n",
        encoding="utf-8",
    )
    return path


def stored_then_older(tmp_path: Path) -> tuple[Path, Path]:
    """Two orders imported from an export updated 2026-05-03; the mapping, and the same
    orders' export of the day before."""
    mapping = tmp_path / "dated.yml"
    mapping.write_text(STALE_MAPPING, encoding="utf-8")
    newer = _dated_export(tmp_path, "newer.csv", "2026-05-03 09:00")
    assert kizuna_import("orders", str(newer), "--mapping", str(mapping))[0] == 0
    return mapping, _dated_export(tmp_path, "older.csv", "2026-05-02 09:00")


def test_the_plain_report_says_the_orders_ignored_as_older(tmp_path: Path) -> None:
    # given two orders stored from a newer export
    mapping, older = stored_then_older(tmp_path)
    # when an older export of them is imported
    code, out, _ = kizuna_import("orders", str(older), "--mapping", str(mapping))
    # then the terminal says why they are neither new, updated nor unchanged
    assert code == 0
    assert "注文 新規0件・更新0件・変更なし0件" in out
    assert (
        "更新なし 2件: より新しい内容を登録済みのため、ファイルの古い内容は反映していません" in out
    )


def test_the_plain_report_has_no_stale_line_when_nothing_is_older() -> None:
    _, out, _ = kizuna_import("orders", str(DATA / "eccube_orders_cp932.csv"))
    assert "更新なし" not in out
