"""`--strict`: a refused file names every bad row it can find — those its values show and
those only the services or the database refuse — and its summary counts nothing imported."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from kizuna.accounts.models import Role
from kizuna.commerce.models import ImportRun, ImportStatus
from kizuna.customers.models import Customer
from tests.test_import_command import kizuna_import
from tests.test_import_customers_batch import export, member, run
from tests.test_import_web import ClientFor, post_import, upload

pytestmark = pytest.mark.django_db

FUTURE_BIRTHDAY = "2999-01-01"  # read as a date; only the customer service refuses it


def test_a_refused_strict_run_counts_nothing_imported_in_its_json_summary(
    tmp_path: Path,
) -> None:
    # given three stored members
    run(export(tmp_path, [member(n) for n in range(1, 4)]))
    # when a strict import moves member 1 and gives member 2 a birthday the service refuses
    path = export(
        tmp_path,
        [member(1, 住所1="港区六本木1-1-1"), member(2, 誕生日=FUTURE_BIRTHDAY), member(4)],
    )
    code, out, _ = kizuna_import("customers", str(path), "--strict", "--json")
    summary: dict[str, Any] = json.loads(out)
    # then nothing is imported, and the summary says so: no created, matched or updated row
    assert (code, summary["status"]) == (1, "refused")
    assert "何も取り込みませんでした" in summary["message"]
    assert summary["customers"] == {"created": 0, "matched": 0, "updated": 0}
    assert (summary["rows_imported"], summary["consents_granted"]) == (0, 0)
    # while the rows read and the rejected row with its reason are still shown
    assert (summary["rows_read"], summary["rows_rejected"]) == (3, 1)
    assert [(e["line"], e["column"]) for e in summary["errors"]] == [(3, "誕生日")]
    assert Customer.objects.get(identities__value="1").address1 == "渋谷区渋谷1-2-3"
    assert not Customer.objects.filter(identities__value="4").exists()


def test_a_refused_strict_run_names_every_bad_row_in_file_order(tmp_path: Path) -> None:
    # given stored members, and a file with one bad cell on each of three rows: two only the
    # customer service refuses (a birthday in the future) and one its value shows (姓 too long)
    run(export(tmp_path, [member(n) for n in range(1, 6)]))
    path = export(
        tmp_path,
        [
            member(1, 住所1="港区六本木1-1-1"),
            member(2, 誕生日=FUTURE_BIRTHDAY),
            member(3, **{"お名前(姓)": "髙" * 500}),
            member(4, 誕生日=FUTURE_BIRTHDAY),
            member(5),
        ],
    )
    # when it is imported in strict mode, in batches smaller than the file
    result = run(path, strict=True, batch_size=2)
    # then the file is refused and all three rows are named, by line and column
    assert result.status == "refused"
    assert [(e.line, e.column) for e in result.errors] == [
        (3, "誕生日"),
        (4, "お名前(姓)"),
        (5, "誕生日"),
    ]
    assert result.message.startswith("3行に誤りがあるため、何も取り込みませんでした")
    assert (result.rows_read, result.rows_rejected, result.rows_imported) == (5, 3, 0)
    assert Customer.objects.get(identities__value="1").address1 == "渋谷区渋谷1-2-3"


def test_a_strict_dry_run_of_a_clean_file_still_counts_what_it_would_import(
    tmp_path: Path,
) -> None:
    result = run(export(tmp_path, [member(1), member(2)]), strict=True, dry_run=True)
    assert (result.status, result.customers["created"], result.rows_imported) == ("ok", 2, 2)
    assert not Customer.objects.exists()


def test_the_import_page_shows_no_imported_row_for_a_refused_strict_run(
    client_for: ClientFor, settings: Any, tmp_path: Path
) -> None:
    settings.DATA_DIR = tmp_path
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}
    run(export(tmp_path, [member(n) for n in range(1, 4)]))
    path = export(tmp_path, [member(1, 住所1="港区六本木1-1-1"), member(2, 誕生日=FUTURE_BIRTHDAY)])
    client = client_for(Role.MARKETER)
    # when the file is uploaded with 「1行でも誤りがあれば何も取り込まない」
    response = post_import(
        client, upload("会員.csv", path.read_bytes()), kind="customers", strict="on", dry_run=""
    )
    # then the run is refused and its summary counts no imported or matched row
    import_run = ImportRun.objects.get()
    assert import_run.status == ImportStatus.REFUSED
    assert import_run.summary["rows_imported"] == 0
    assert import_run.summary["customers"] == {"created": 0, "matched": 0, "updated": 0}
    page = client.get(response["Location"]).content.decode()
    assert "何も取り込みませんでした" in page
    assert "生年月日は1900年1月1日から今日まで" in page
