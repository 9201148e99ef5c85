"""Imports started from the web page: store the upload, run it in the background, keep the report.

The web view validates the form and calls `import_run_create`; the task `run_csv_import` calls
`import_run_execute`. While a run is going, its progress is a small JSON file next to the
upload rather than a database row: a dry run or a strict import holds one long transaction,
and on SQLite a second writer would wait for it to end.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import uuid
from collections.abc import Iterable
from itertools import islice
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.paginator import Page
from django.db import transaction
from django.utils import timezone

from kizuna.commerce.importers.decoding import ENCODING_LABELS
from kizuna.commerce.importers.errors import Remedy, UsageError
from kizuna.commerce.importers.pipeline import ImportOptions, ImportResult, Progress, run_import
from kizuna.commerce.models import ImportKind, ImportRowError, ImportRun, ImportStatus
from kizuna.core.paging import Paginator

logger = logging.getLogger(__name__)

ERROR_BATCH = 1000

# What to choose instead when a file is refused, in the words of the import page's form
# (取り込む内容, 形式, マッピングファイル, 文字コード): staff there never type a command.
# The command words the same remedies with its options (management/commands/import.py).
FORM_REMEDIES = {
    Remedy.GENERIC_FORMAT: (
        "EC-CUBE・Shopify 以外のCSVは、形式「汎用CSV」とマッピングファイルで"
        "列の対応を指定してください。"
    ),
    Remedy.KIND_CUSTOMERS: (
        f"顧客として取り込むには、取り込む内容を「{ImportKind.CUSTOMERS.label}」にしてください。"
    ),
    Remedy.KIND_ORDERS: (
        f"注文として取り込むには、取り込む内容を「{ImportKind.ORDERS.label}」にしてください。"
        "注文の顧客も一緒に取り込みます。"
    ),
    Remedy.ENCODING_UTF8: (
        f"文字コードで「{ENCODING_LABELS['auto']}」か「{ENCODING_LABELS['utf-8']}」を選んで、"
        "取り込み直してください。"
    ),
}


def upload_dir() -> Path:
    path = Path(settings.DATA_DIR) / "imports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _progress_path(run: ImportRun) -> Path:
    return upload_dir() / f"run-{run.pk}.progress.json"


def import_run_create(
    *,
    kind: str,
    chunks: Iterable[bytes],
    original_name: str,
    file_format: str,
    encoding: str,
    dry_run: bool,
    strict: bool,
    consent_wording: str,
    mapping_yaml: str,
    acting_user: Any,
) -> ImportRun:
    """Store the upload under DATA_DIR/imports and queue its import."""
    from kizuna.commerce.importers.tasks import run_csv_import

    stored = upload_dir() / f"{uuid.uuid4().hex}.csv"
    size = 0
    with stored.open("wb") as out:
        for chunk in chunks:
            out.write(chunk)
            size += len(chunk)
    stored.chmod(0o600)  # customer data: readable by the service account only
    run = ImportRun.objects.create(
        kind=kind,
        file_format=file_format,
        encoding=encoding,
        dry_run=dry_run,
        strict=strict,
        consent_wording=consent_wording,
        mapping_yaml=mapping_yaml,
        original_name=original_name[:255],
        stored_path=str(stored),
        size_bytes=size,
        created_by=acting_user,
    )
    run_csv_import.enqueue(run.pk)
    return run


def read_progress(run: ImportRun) -> dict[str, Any] | None:
    """What the running import last reported, or None before it starts."""
    try:
        data: dict[str, Any] = json.loads(_progress_path(run).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data


def _write_progress(run: ImportRun, progress: Progress) -> None:
    path = _progress_path(run)
    data = {
        "phase": progress.phase,
        "rows": progress.rows,
        "total_rows": progress.total_rows,
        "bytes_read": progress.bytes_read,
        "total_bytes": progress.total_bytes,
    }
    # Written aside and renamed, so the status page never reads half a file.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".progress-")
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(data, out)
    Path(tmp).replace(path)


def import_run_execute(run_id: int) -> str:
    """Run a queued import once; a second delivery of the same task finds it claimed."""
    claimed = ImportRun.objects.filter(pk=run_id, status=ImportStatus.QUEUED).update(
        status=ImportStatus.RUNNING, started_at=timezone.now()
    )
    if not claimed:
        return "already-claimed"
    run = ImportRun.objects.select_related("created_by").get(pk=run_id)
    mapping_file: Path | None = None
    try:
        if run.mapping_yaml:
            fd, name = tempfile.mkstemp(suffix=".yml", dir=upload_dir())
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(run.mapping_yaml)
            mapping_file = Path(name)
        options = ImportOptions(
            kind=run.kind,
            format=run.file_format,
            encoding=run.encoding,
            mapping=mapping_file,
            dry_run=run.dry_run,
            strict=run.strict,
            consent_wording=run.consent_wording,
        )
        result = run_import(
            Path(run.stored_path),
            options,
            acting_user=run.created_by,
            progress=lambda progress: _write_progress(run, progress),
            remedies=FORM_REMEDIES,
        )
    except UsageError as exc:
        _finish(run, status=ImportStatus.REFUSED, message=exc.message)
        return ImportStatus.REFUSED.value
    except Exception:
        logger.exception("CSV import %s failed", run_id)
        _finish(
            run,
            status=ImportStatus.FAILED,
            message="システムエラーで取り込みが止まりました。管理者に連絡してください。",
        )
        raise
    finally:
        if mapping_file is not None:
            mapping_file.unlink(missing_ok=True)
    try:
        _store_result(run, result)
    finally:
        result.errors.close()
    return run.status


def _store_result(run: ImportRun, result: ImportResult) -> None:
    status = {
        "ok": ImportStatus.DONE,
        "rejected_rows": ImportStatus.REJECTED_ROWS,
        "refused": ImportStatus.REFUSED,
    }[result.status]
    with transaction.atomic():
        errors = iter(result.errors)
        while batch := list(islice(errors, ERROR_BATCH)):
            ImportRowError.objects.bulk_create(
                ImportRowError(
                    run=run,
                    line=error.line,
                    column=error.column[:100],
                    reason=error.reason[:500],
                    order_key=error.order[:64],
                )
                for error in batch
            )
        run.rows_read = result.rows_read
        run.rows_rejected = result.rows_rejected
        # Why orders were left out (購入処理中…), most first: the page's 対象外 count alone
        # leaves staff with fewer orders than the file has and no word why.
        run.summary = {**result.counts(), "skip_reasons": result.skip_reasons.most_common()}
        _finish(run, status=status, message=result.message)


def _finish(run: ImportRun, *, status: ImportStatus, message: str) -> None:
    run.status = status
    run.message = message
    run.finished_at = timezone.now()
    run.save()
    _progress_path(run).unlink(missing_ok=True)
    # The upload is customer data; once imported (or refused) it is not kept.
    Path(run.stored_path).unlink(missing_ok=True)


def runs_page(page: str | int | None, *, per_page: int = 20) -> Page[ImportRun]:
    """Recent imports, newest first, for the import page."""
    runs = ImportRun.objects.select_related("created_by").order_by("-created_at", "-id")
    return Paginator(runs, per_page).get_page(page)


def errors_page(
    run: ImportRun, page: str | int | None, *, per_page: int = 50
) -> Page[ImportRowError]:
    """A run's rejected rows in file order."""
    return Paginator(run.row_errors.order_by("line", "id"), per_page).get_page(page)
