"""`kizuna import orders|customers FILE`: import a cart's CSV export.

    kizuna import orders 受注.csv                       # EC-CUBE or Shopify, detected
    kizuna import orders 受注.csv --dry-run --json      # what would happen, as JSON
    kizuna import orders export.csv --format generic --mapping mapping.yml --strict
    kizuna import customers 会員.csv --consent-wording 2024-04

Exit codes: 0 everything imported; 1 rows rejected (lenient) or the file refused (strict, an
undecodable byte, missing columns); 2 a usage error. docs/ingest.md describes the formats.
"""  # noqa: N999 - the command is called `import`, as staff type it

from __future__ import annotations

import json
import sys
from argparse import ArgumentParser
from pathlib import Path
from typing import Any

from tqdm import tqdm

from kizuna.commerce.importers.decoding import ENCODINGS
from kizuna.commerce.importers.errors import Remedy, UsageError
from kizuna.commerce.importers.pipeline import (
    FORMATS,
    KINDS,
    NAME_ORDERS,
    RECORD_KEY_LABELS,
    ImportOptions,
    ImportResult,
    Progress,
    run_import,
)
from kizuna.core.cli import USAGE_ERROR, JapaneseCommand

# What to choose instead when a file is refused, as this command's options (the import page
# words the same remedies with its form: importers/runs.py FORM_REMEDIES).
REMEDIES = {
    Remedy.GENERIC_FORMAT: (
        "EC-CUBE・Shopify 以外のCSVは、--format generic と --mapping(マッピングファイル)で"
        "列の対応を指定してください。"
    ),
    Remedy.KIND_CUSTOMERS: "顧客として取り込むには、kizuna import customers を使ってください。",
    Remedy.KIND_ORDERS: (
        "注文として取り込むには、kizuna import orders を使ってください。"
        "注文の顧客も一緒に取り込みます。"
    ),
    Remedy.ENCODING_UTF8: (
        "--encoding auto(自動判定)か --encoding utf-8 を指定して、取り込み直してください。"
    ),
}


class Command(JapaneseCommand):
    help = "カートのCSV(注文・顧客)を取り込みます。EC-CUBE・Shopify は自動で判定します。"
    missing_args_message = "取り込む種類(orders / customers)とファイルを指定してください。"
    # The system checks load every URLconf, and with it the analytics stack (scipy…): seconds
    # of start-up an import does not use. `kizuna check` and the web server still run them.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("kind", choices=KINDS, help="orders(注文)または customers(顧客)")
        parser.add_argument("file", help="取り込むCSVファイル")
        parser.add_argument(
            "--format",
            choices=FORMATS,
            default="auto",
            help="ファイルの形式(既定: auto = 見出しから判定)",
        )
        parser.add_argument("--mapping", help="汎用CSVの列の対応を書いたYAMLファイル")
        parser.add_argument(
            "--encoding", choices=ENCODINGS, default="auto", help="文字コード(既定: auto)"
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="何も書き込まずに、取り込んだ場合の結果を表示"
        )
        parser.add_argument(
            "--strict",
            action="store_true",
            help="1行でも誤りがあれば何も取り込まない(既定は正しい行だけ取り込む)",
        )
        parser.add_argument("--json", action="store_true", help="結果をJSONで出力")
        parser.add_argument(
            "--consent-wording",
            default="import",
            help="メール配信同意の証跡に記録する文言バージョン(既定: import)",
        )
        parser.add_argument(
            "--name-order",
            choices=NAME_ORDERS,
            default="auto",
            help="1つの列に入った氏名の順(既定: Shopify は名→姓、それ以外は姓→名)",
        )
        parser.add_argument(
            "--batch-size",
            type=int,
            default=500,
            help="1回のトランザクションで書き込む注文数(既定: 500)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        import_options = ImportOptions(
            kind=options["kind"],
            format=options["format"],
            encoding=options["encoding"],
            mapping=Path(options["mapping"]) if options["mapping"] else None,
            dry_run=options["dry_run"],
            strict=options["strict"],
            consent_wording=options["consent_wording"],
            name_order=options["name_order"],
            batch_size=options["batch_size"],
        )
        bar = _ProgressBar()
        try:
            result = run_import(
                Path(options["file"]), import_options, progress=bar.update, remedies=REMEDIES
            )
        except UsageError as exc:
            bar.close()
            self.stderr.write(f"エラー: {exc.message}")
            if options["json"]:
                # A script reading the JSON (`> result.json`) gets an answer, not an empty file.
                usage = {"status": "usage_error", "message": exc.message}
                self.stdout.write(json.dumps(usage, ensure_ascii=False, indent=2))
            raise SystemExit(USAGE_ERROR) from None
        bar.close()
        try:
            if options["json"]:
                self.stdout.write(json.dumps(result.as_dict(), ensure_ascii=False, indent=2))
            else:
                self._print(result)
        finally:
            result.errors.close()
        if result.exit_code:
            raise SystemExit(result.exit_code)

    def _print(self, result: ImportResult) -> None:
        out = self.stdout
        if result.format_label:
            mode = "(試行: 何も書き込んでいません)" if result.dry_run else ""
            out.write(f"{result.format_label}・{result.encoding}{mode}")
        if result.refused:
            self.stderr.write(result.message)
        else:
            out.write(result.message)
        for line in [*_skipped_lines(result), *_stale_lines(result)]:
            out.write(line)
        key_label = RECORD_KEY_LABELS[result.kind]
        for error in result.errors:
            column = f"[{error.column}] " if error.column else ""
            key = f"({key_label} {error.order})" if error.order else ""
            out.write(f"  {error.line}行目 {column}{error.reason}{key}")


def _skipped_lines(result: ImportResult) -> list[str]:
    """The orders left out on purpose, as the web page's 対象外 says them, with the reason
    (購入処理中…): the summary sentence counts only what was written and what was wrong, so
    without this line staff see fewer orders than the file has and no word why."""
    count = result.orders["skipped"]
    if not count:
        return []
    head = f"対象外 {count:,}件({result.rows_skipped:,}行)"
    reasons = result.skip_reasons.most_common()
    if len(reasons) == 1:
        return [f"{head}: {reasons[0][0]}"]
    return [f"{head}:", *(f"  {reason} {n:,}件" for reason, n in reasons)]


# What the report calls the orders ignored as older than what is stored (orders.stale), and
# why: the web page's note (web/imports/_status.html) says the same.
STALE_LABEL = "更新なし"
STALE_REASON = "より新しい内容を登録済みのため、ファイルの古い内容は反映していません"


def _stale_lines(result: ImportResult) -> list[str]:
    """The orders the file holds an older state of than Kizuna (`stale` in --json): counted
    neither as 新規, 更新 nor 変更なし, so without this line they look missing."""
    count = result.orders["stale"]
    return [f"{STALE_LABEL} {count:,}件: {STALE_REASON}"] if count else []


class _ProgressBar:
    """tqdm on stderr when a person is watching; nothing when output goes to a file or CI."""

    LABELS = {"check": "検査", "import": "取込"}

    def __init__(self) -> None:
        self._bar: tqdm[Any] | None = None
        self._phase = ""
        self._enabled = sys.stderr.isatty()

    def update(self, progress: Progress) -> None:
        if not self._enabled:
            return
        if progress.phase != self._phase:
            self.close()
            self._phase = progress.phase
            total = progress.total_rows if progress.phase == "import" else progress.total_bytes
            self._bar = tqdm(
                total=total or None,
                desc=self.LABELS.get(progress.phase, progress.phase),
                unit="行" if progress.phase == "import" else "B",
                unit_scale=progress.phase != "import",
                file=sys.stderr,
            )
        if self._bar is not None:
            done = progress.rows if progress.phase == "import" else progress.bytes_read
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
