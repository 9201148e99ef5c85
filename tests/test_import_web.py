"""The CSV import page: who may use it, upload checks, the background run and its report."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role, User
from kizuna.commerce.importers import Progress, runs
from kizuna.commerce.models import ImportRowError, ImportRun, ImportStatus, Order
from tests.test_import_command import stored_then_older

DATA = Path(__file__).parent / "data" / "ingest"
ClientFor = Callable[[Role], Client]


@pytest.fixture(autouse=True)
def _imports_in_tmp(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    # The task runs inside the request, as the worker would run it a moment later.
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


def upload(name: str, content: bytes | None = None) -> SimpleUploadedFile:
    data = content if content is not None else (DATA / name).read_bytes()
    return SimpleUploadedFile(name, data, content_type="text/csv")


def form_token(client: Client) -> str:
    """The one-time token of the upload form, as a browser gets it by opening the page."""
    page = client.get(reverse("imports:index")).content.decode()
    found = re.search(r'name="form_token" value="([^"]+)"', page)
    return found.group(1) if found else ""


def post_import(client: Client, file: SimpleUploadedFile, **fields: object):  # type: ignore[no-untyped-def]
    data: dict[str, object] = {
        "kind": "orders",
        "file_format": "auto",
        "encoding": "auto",
        "consent_wording": "import",
        "dry_run": "on",
        "file": file,
    }
    data.update(fields)
    if "form_token" not in data:
        data["form_token"] = form_token(client)
    return client.post(reverse("imports:index"), data)


def a_finished_run(user: User) -> ImportRun:
    return ImportRun.objects.create(
        kind="orders",
        original_name="受注.csv",
        stored_path="/nonexistent.csv",
        created_by=user,
        status=ImportStatus.DONE,
        summary={"rows_read": 0},
    )


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("role", "allowed"),
    [(Role.ADMIN, True), (Role.MARKETER, True), (Role.OPERATOR, False), (Role.ANALYST, False)],
)
def test_only_admins_and_marketers_may_import(
    client_for: ClientFor, users: dict[Role, User], role: Role, allowed: bool
) -> None:
    run = a_finished_run(users[Role.ADMIN])
    client = client_for(role)
    for url in (
        reverse("imports:index"),
        reverse("imports:detail", args=[run.pk]),
        reverse("imports:status", args=[run.pk]),
        reverse("imports:errors", args=[run.pk]),
    ):
        assert client.get(url).status_code == (200 if allowed else 403), url
    response = post_import(client, upload("eccube_orders_cp932.csv"))
    assert response.status_code == (302 if allowed else 403)


@pytest.mark.django_db
def test_anonymous_visitors_are_sent_to_login(client: Client) -> None:
    response = client.get(reverse("imports:index"))
    assert response.status_code == 302
    assert response["Location"].startswith(reverse("login"))


@pytest.mark.django_db
def test_the_page_offers_the_form_and_an_empty_history(client_for: ClientFor) -> None:
    page = client_for(Role.MARKETER).get(reverse("imports:index")).content.decode()
    assert "CSV取り込み" in page
    assert "まだ取り込みはありません" in page
    assert 'name="dry_run"' in page
    # the consent wording field says, in a shop's words, what it is and when to leave it
    assert "メール配信に同意したときに見た案内文" in page
    assert "「import」のままでかまいません" in page


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("file", "fields", "message"),
    [
        (upload("orders.xlsx", b"PK\x03\x04"), {}, "拡張子が .csv または .txt"),
        (upload("empty.csv", b""), {}, "ファイルが空です"),
        (upload("generic_orders.csv"), {"file_format": "generic"}, "マッピングファイルが必要"),
        (
            upload("shopify_orders_bom.csv"),
            {"kind": "customers", "file_format": "shopify"},
            "注文CSVのみ",
        ),
        (
            upload("generic_orders.csv"),
            {
                "file_format": "generic",
                "mapping": SimpleUploadedFile("m.yml", b"kind: orders\ncolumns: {}\n"),
            },
            "columns",
        ),
        (
            upload("generic_orders.csv"),
            {
                "file_format": "generic",
                # the same key twice: the background import would refuse it, so the form does
                "mapping": SimpleUploadedFile(
                    "m.yml", b"kind: orders\nkind: customers\ncolumns: {}\n"
                ),
            },
            "2行目",
        ),
    ],
)
def test_bad_uploads_are_refused_with_a_clear_message(
    client_for: ClientFor, file: SimpleUploadedFile, fields: dict[str, object], message: str
) -> None:
    response = post_import(client_for(Role.MARKETER), file, **fields)
    assert response.status_code == 400
    assert message in response.content.decode()
    assert not ImportRun.objects.exists()


@pytest.mark.django_db
def test_sending_the_same_form_twice_starts_one_import(client_for: ClientFor) -> None:
    client = client_for(Role.MARKETER)
    token = form_token(client)
    # when the operator presses 取り込みを始める twice on the same form
    first = post_import(client, upload("eccube_orders_cp932.csv"), form_token=token)
    second = post_import(client, upload("eccube_orders_cp932.csv"), form_token=token)
    # then one import runs, and the second press leads to it with a word on why
    run = ImportRun.objects.get()
    assert first["Location"] == second["Location"] == reverse("imports:detail", args=[run.pk])
    page = client.get(second["Location"]).content.decode()
    assert "このファイルはすでに受け付けています" in page


@pytest.mark.django_db
def test_a_form_sent_again_with_another_choice_is_a_new_import(client_for: ClientFor) -> None:
    client = client_for(Role.MARKETER)
    token = form_token(client)
    # given a dry run, then Back to the same form (its token comes back with it)
    post_import(client, upload("eccube_orders_cp932.csv"), form_token=token)
    # when 試行 is unticked, or another file is chosen, and the form is sent
    post_import(client, upload("eccube_orders_cp932.csv"), form_token=token, dry_run="")
    post_import(client, upload("eccube_orders_bad_rows.csv"), form_token=token)
    # then each is imported: only the same file with the same choices counts as a second press
    assert list(ImportRun.objects.order_by("id").values_list("original_name", "dry_run")) == [
        ("eccube_orders_cp932.csv", True),
        ("eccube_orders_cp932.csv", False),
        ("eccube_orders_bad_rows.csv", True),
    ]
    assert Order.objects.count() == 4


@pytest.mark.django_db
def test_a_form_the_session_did_not_give_out_is_refused(client_for: ClientFor) -> None:
    response = post_import(
        client_for(Role.MARKETER), upload("eccube_orders_cp932.csv"), form_token="forged"
    )
    assert response.status_code == 400
    assert "もう一度ファイルを選んで取り込みを始めてください" in response.content.decode()
    assert not ImportRun.objects.exists()


@pytest.mark.django_db
def test_a_file_over_the_size_limit_is_refused(client_for: ClientFor, settings) -> None:  # type: ignore[no-untyped-def]
    settings.KIZUNA_IMPORT_MAX_BYTES = 1024
    response = post_import(client_for(Role.MARKETER), upload("eccube_orders_cp932.csv"))
    assert response.status_code == 400
    assert "ファイルが大きすぎます" in response.content.decode()
    assert not ImportRun.objects.exists()


@pytest.mark.django_db
def test_a_dry_run_upload_runs_in_the_background_and_reports_without_writing(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    client = client_for(Role.MARKETER)
    # when a marketer uploads a file with bad rows as a dry run
    response = post_import(client, upload("eccube_orders_bad_rows.csv"))
    # then the task has run, written its report, and imported nothing
    run = ImportRun.objects.get()
    assert response["Location"] == reverse("imports:detail", args=[run.pk])
    assert (run.status, run.dry_run, run.created_by) == (
        ImportStatus.REJECTED_ROWS,
        True,
        users[Role.MARKETER],
    )
    assert (run.rows_read, run.rows_rejected) == (11, 7)
    assert run.summary["orders"]["created"] == 2
    assert not Order.objects.exists()
    # the upload is not kept once imported (it is customer data)
    assert not Path(run.stored_path).exists()
    # and the report shows each bad row with line, column and reason
    page = client.get(response["Location"]).content.decode()
    assert "完了(取り込めない行あり)" in page
    assert "個数として読めません" in page
    assert "郵便番号は7桁の数字で入力してください" in page
    rows = list(ImportRowError.objects.filter(run=run).values_list("line", "column"))
    assert (5, "個数") in rows


@pytest.mark.django_db
def test_after_a_dry_run_the_form_opens_with_its_choices_and_says_why_the_file_is_asked_again(
    client_for: ClientFor,
) -> None:
    client = client_for(Role.MARKETER)
    # given a strict dry run of a Shift_JIS file
    post_import(client, upload("eccube_orders_cp932.csv"), encoding="cp932", strict="on")
    run = ImportRun.objects.get()
    assert run.status == ImportStatus.DONE
    # when its result is opened
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    # then it says the file is gone and why, and offers the form with the same choices
    assert "試行が終わった時点で削除しています" in page
    again = reverse("imports:index") + f"?after={run.pk}"
    assert f'href="{again}"' in page
    form = client.get(again).content.decode()
    assert re.search(r'<option value="cp932" selected>', form)
    assert re.search(r'<input type="checkbox" name="strict"[^>]* checked', form)
    assert not re.search(r'<input type="checkbox" name="dry_run"[^>]* checked', form)
    # and the form sent with the file chosen again imports it for real
    post_import(
        client, upload("eccube_orders_cp932.csv"), encoding="cp932", strict="on", dry_run=""
    )
    real = ImportRun.objects.exclude(pk=run.pk).get()
    assert (real.dry_run, real.strict, real.status) == (False, True, ImportStatus.DONE)
    assert Order.objects.count() == 4
    # a real import's result does not offer it
    real_page = client.get(reverse("imports:detail", args=[real.pk])).content.decode()
    assert "同じ選択で取り込み画面を開く" not in real_page


@pytest.mark.django_db
def test_a_real_upload_imports_orders(client_for: ClientFor) -> None:
    client = client_for(Role.ADMIN)
    post_import(client, upload("eccube_orders_cp932.csv"), dry_run="")
    run = ImportRun.objects.get()
    assert run.status == ImportStatus.DONE
    assert Order.objects.count() == 4
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    assert "新規4件" in page
    # and the one order left out (1004, an unfinished checkout) is counted with its reason
    assert "対象外 1件" in page
    assert "購入処理中(決済が完了していない注文)のため取り込みません: 1件" in page
    assert 'のため取り込みません: 1件(注文番号 <span class="mono">1004</span>)' in page


@pytest.mark.django_db
def test_a_generic_upload_with_its_mapping(client_for: ClientFor) -> None:
    mapping = SimpleUploadedFile("map.yml", (DATA / "generic_orders.yml").read_bytes())
    post_import(
        client_for(Role.MARKETER),
        upload("generic_orders.csv"),
        file_format="generic",
        mapping=mapping,
        dry_run="",
    )
    assert ImportRun.objects.get().status == ImportStatus.DONE
    assert set(Order.objects.values_list("number", flat=True)) == {"W-0001", "W-0003"}


@pytest.mark.django_db
def test_an_undecodable_upload_is_refused_with_its_place(client_for: ClientFor) -> None:
    client = client_for(Role.MARKETER)
    post_import(client, upload("eccube_orders_bad_byte_cp932.csv"), dry_run="")
    run = ImportRun.objects.get()
    assert run.status == ImportStatus.REFUSED
    assert "6行目" in run.message
    assert not Order.objects.exists()
    assert "6行目" in client.get(reverse("imports:detail", args=[run.pk])).content.decode()


@pytest.mark.django_db
def test_an_excel_workbook_renamed_to_csv_is_refused_with_how_to_save_it(
    client_for: ClientFor,
) -> None:
    client = client_for(Role.MARKETER)
    workbook = b"PK\x03\x04\x14\x00\x06\x00" + bytes(range(128, 256)) * 4
    post_import(client, upload("受注.csv", workbook), dry_run="")
    run = ImportRun.objects.get()
    assert run.status == ImportStatus.REFUSED
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    assert "Excelファイル(.xlsx)のようです。Excelで「CSV UTF-8」または「CSV」形式で" in page
    assert "読めない文字" not in page


def without_place_and_time(summary: dict[str, object]) -> dict[str, object]:
    return {key: value for key, value in summary.items() if key not in ("file", "seconds")}


def tab_separated(name: str, encoding: str) -> bytes:
    """A fixture as a spreadsheet's 「テキスト(タブ区切り)」 saves it."""
    rows = list(csv.reader(io.StringIO((DATA / name).read_bytes().decode(encoding))))
    out = io.StringIO()
    csv.writer(out, delimiter="\t", lineterminator="\r\n").writerows(rows)
    return out.getvalue().encode(encoding)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "encoding", "fields"),
    [
        ("eccube_orders_bad_rows.csv", "cp932", {}),
        ("shopify_orders_bom.csv", "utf-8-sig", {}),
        ("generic_orders.csv", "utf-8", {"file_format": "generic"}),
    ],
)
def test_a_tab_separated_txt_reads_like_its_comma_separated_csv(
    client_for: ClientFor, name: str, encoding: str, fields: dict[str, object]
) -> None:
    client = client_for(Role.MARKETER)

    def dry_run(file: SimpleUploadedFile) -> ImportRun:
        extra = dict(fields)
        if "file_format" in extra:
            extra["mapping"] = upload("generic_orders.yml")
        post_import(client, file, **extra)
        return ImportRun.objects.order_by("-pk")[0]

    # given the same file saved with commas and with tabs
    commas = dry_run(upload(name))
    tabs = dry_run(upload("受注.txt", tab_separated(name, encoding)))
    # then the tab file is read, row for row and error for error, like the comma file
    assert commas.status != ImportStatus.REFUSED
    assert (tabs.status, tabs.message) == (commas.status, commas.message)
    assert without_place_and_time(tabs.summary) == without_place_and_time(commas.summary)
    assert list(tabs.row_errors.values_list("line", "column", "reason")) == list(
        commas.row_errors.values_list("line", "column", "reason")
    )


@pytest.mark.django_db
def test_a_refused_upload_does_not_say_every_row_was_fine(client_for: ClientFor) -> None:
    client = client_for(Role.MARKETER)
    # when a file with an unreadable byte is refused before any row is read
    post_import(client, upload("eccube_orders_bad_byte_cp932.csv"), dry_run="")
    run = ImportRun.objects.get()
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    # then the report neither says no row failed nor shows a table of zeros
    assert "取り込めなかった行はありません" not in page
    assert "取り込みを中止したため、何も取り込んでいません" in page
    assert "読んだ行" not in page


@pytest.mark.django_db
def test_refusals_speak_of_the_page_not_of_command_line_options(client_for: ClientFor) -> None:
    client = client_for(Role.MARKETER)
    # when a file of an unknown layout is uploaded with 自動判定
    post_import(client, upload("generic_orders.csv"))
    unknown = ImportRun.objects.get()
    # and a file with bad rows is uploaded with 「1行でも誤りがあれば何も取り込まない」
    post_import(client, upload("eccube_orders_bad_rows.csv"), strict="on")
    strict = ImportRun.objects.exclude(pk=unknown.pk).get()
    # then each message names what to choose on this page
    assert unknown.status == strict.status == ImportStatus.REFUSED
    assert "形式「汎用CSV」とマッピングファイル" in unknown.message
    assert "「1行でも誤りがあれば何も取り込まない」を指定したため" in strict.message
    assert "--strict" not in strict.message  # staff ticked a box; they never typed a flag


@pytest.mark.django_db
def test_the_run_says_its_format_encoding_and_mode_in_the_forms_words(
    client_for: ClientFor,
) -> None:
    client = client_for(Role.MARKETER)
    # given a strict dry run of a Shift_JIS EC-CUBE file, with 自動判定 for both
    post_import(client, upload("eccube_orders_cp932.csv"), strict="on")
    run = ImportRun.objects.get()
    # when its page is opened
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    # then it shows what was found, as the form names it, and both ticked boxes
    assert "<dd>EC-CUBE 4</dd>" in page
    assert "<dd>Shift_JIS(CP932)</dd>" in page
    assert "<dd>試行(何も書き込みません)・1行でも誤りがあれば何も取り込まない</dd>" in page
    facts = " ".join(re.findall(r"<dd>(.*?)</dd>", page))
    assert "eccube" not in facts
    assert "cp932" not in facts


@pytest.mark.django_db
def test_a_waiting_run_shows_the_choices_it_was_given(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    run = ImportRun.objects.create(
        kind="customers",
        original_name="会員.csv",
        stored_path="/nonexistent.csv",
        created_by=users[Role.MARKETER],
        file_format="generic",
        strict=True,
    )
    page = client_for(Role.MARKETER).get(reverse("imports:detail", args=[run.pk])).content
    assert "<dd>汎用CSV(マッピングファイルで列を指定)</dd>" in page.decode()
    assert "<dd>自動判定</dd>" in page.decode()
    assert "<dd>1行でも誤りがあれば何も取り込まない</dd>" in page.decode()


@pytest.mark.django_db
def test_a_dry_run_counts_rows_it_could_import_not_rows_it_imported(
    client_for: ClientFor,
) -> None:
    client = client_for(Role.MARKETER)
    post_import(client, upload("eccube_orders_cp932.csv"))
    run = ImportRun.objects.get()
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    assert "取り込める行" in page
    assert "取り込んだ行" not in page


@pytest.mark.django_db
def test_bad_rows_are_paginated(client_for: ClientFor) -> None:
    # given 60 one-row orders, each with an unreadable 個数
    text = (DATA / "eccube_orders_cp932.csv").read_bytes().decode("cp932")
    header, row = list(csv.reader(io.StringIO(text)))[:2]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(header)
    for n in range(60):
        values = dict(zip(header, row, strict=True))
        values.update({"注文番号": f"9{n:03d}", "個数": "many"})
        writer.writerow([values[column] for column in header])
    content = out.getvalue().encode("cp932")
    client = client_for(Role.MARKETER)
    post_import(client, upload("many.csv", content))
    run = ImportRun.objects.get()
    assert run.rows_rejected == 60
    # when the report is opened
    first = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    second = client.get(
        reverse("imports:errors", args=[run.pk]), {"page": 2}, HTTP_HX_REQUEST="true"
    )
    # then the rows come a page at a time, in file order
    assert "1 / 2ページ" in first
    assert '<td class="num">2</td>' in first
    assert "2 / 2ページ" in second.content.decode()
    assert '<td class="num">61</td>' in second.content.decode()
    assert "<html" not in second.content.decode()
    # and the page shown goes into the address bar, where a reload or a shared link opens it
    assert second["HX-Push-Url"] == reverse("imports:detail", args=[run.pk]) + "?page=2"
    reloaded = client.get(second["HX-Push-Url"]).content.decode()
    assert "2 / 2ページ" in reloaded
    assert '<td class="num">61</td>' in reloaded
    assert 'href="{}"'.format(reverse("imports:detail", args=[run.pk]) + "?page=1") in reloaded


@pytest.mark.django_db
def test_every_rejected_row_downloads_as_one_csv_excel_opens(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    # given a run with more rejected rows than one page shows
    run = a_finished_run(users[Role.MARKETER])
    ImportRowError.objects.bulk_create(
        ImportRowError(
            run=run, line=n + 2, column="個数", reason="数字ではありません", order_key=f"9{n:03d}"
        )
        for n in range(120)
    )
    ImportRowError.objects.create(
        run=run, line=200, column="", reason="=HYPERLINK(x)", order_key=""
    )
    client = client_for(Role.MARKETER)
    # when the report offers the download and it is taken
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    url = reverse("imports:errors_csv", args=[run.pk])
    assert "エラー行をCSVでダウンロード" in page
    assert f'href="{url}"' in page
    response = client.get(url)
    # then it is every row in file order, UTF-8 with a BOM, named after the run
    assert response["Content-Type"] == "text/csv; charset=utf-8"
    assert f"import-{run.pk}-errors.csv" in response["Content-Disposition"]
    body = b"".join(response.streaming_content).decode("utf-8")
    assert body.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(body[1:])))
    assert rows[0] == ["行", "列", "理由", "注文番号"]
    assert len(rows) == 1 + 121
    assert rows[1] == ["2", "個数", "数字ではありません", "9000"]
    assert rows[120] == ["121", "個数", "数字ではありません", "9119"]
    # and a reason that looks like a formula stays text in Excel
    assert rows[121][2] != "=HYPERLINK(x)"
    assert rows[121][2].endswith("=HYPERLINK(x)")


@pytest.mark.django_db
def test_a_report_without_rejected_rows_offers_no_download(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    run = a_finished_run(users[Role.MARKETER])
    page = client_for(Role.MARKETER).get(reverse("imports:detail", args=[run.pk])).content.decode()
    assert "エラー行をCSVでダウンロード" not in page


@pytest.mark.django_db
def test_a_running_import_shows_progress_and_polls(
    client_for: ClientFor, users: dict[Role, User]
) -> None:
    run = ImportRun.objects.create(
        kind="orders",
        original_name="受注.csv",
        stored_path="/nonexistent.csv",
        created_by=users[Role.MARKETER],
        status=ImportStatus.RUNNING,
    )
    runs._write_progress(  # the worker's side of the progress file
        run, Progress("import", rows=250, total_rows=1000, bytes_read=10, total_bytes=40)
    )
    client = client_for(Role.MARKETER)
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    assert "250 / 1,000行" in page
    assert 'hx-trigger="every 2s"' in page
    assert 'value="25"' in page
    # when it finishes, the next poll reloads the page to show the report
    run.status = ImportStatus.DONE
    run.save()
    response = client.get(reverse("imports:status", args=[run.pk]), HTTP_HX_REQUEST="true")
    assert response["HX-Refresh"] == "true"


@pytest.mark.django_db
def test_an_import_task_runs_once_even_if_delivered_twice(users: dict[Role, User]) -> None:
    path = runs.upload_dir() / "twice.csv"
    path.write_bytes((DATA / "eccube_orders_cp932.csv").read_bytes())
    run = ImportRun.objects.create(
        kind="orders",
        original_name="twice.csv",
        stored_path=str(path),
        created_by=users[Role.ADMIN],
    )
    assert runs.import_run_execute(run.pk) == ImportStatus.DONE
    assert runs.import_run_execute(run.pk) == "already-claimed"
    assert Order.objects.count() == 4


@pytest.mark.django_db
def test_a_member_file_report_names_rows_by_member_id(client_for: ClientFor) -> None:
    # given two 会員CSV exports joined into one file, member 102's postal code cut short
    text = (DATA / "eccube_members_cp932.csv").read_bytes().decode("cp932")
    header, first, second, *rest = text.split("\r\n")
    content = "\r\n".join([header, first, header, second.replace('"812-0011"', '"812"'), *rest])
    client = client_for(Role.MARKETER)
    # when it is uploaded as customers
    post_import(client, upload("会員.csv", content.encode("cp932")), kind="customers")
    run = ImportRun.objects.get()
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    # then the report's key column is the member ID, not an order number
    assert "<th>会員ID</th>" in page
    assert "<th>注文番号</th>" not in page
    assert '<td class="mono">102</td>' in page
    # and the second header is one row saying what to do, the bad postal code another
    assert (
        "見出し行が重複しています(ファイルを連結した場合は、2つ目以降の見出し行を削除してください)"
        in page
    )
    assert "郵便番号は7桁の数字で入力してください" in page
    # the key column is the order number on an order import's report
    post_import(client, upload("eccube_orders_bad_rows.csv"))
    orders_run = ImportRun.objects.exclude(pk=run.pk).get()
    fragment = client.get(reverse("imports:errors", args=[orders_run.pk]), HTTP_HX_REQUEST="true")
    assert "<th>注文番号</th>" in fragment.content.decode()
    # and the stored key's own label (admin, model forms, exports) is true for both kinds
    assert ImportRowError.objects.filter(run=run, order_key="102").exists()
    assert str(ImportRowError._meta.get_field("order_key").verbose_name) == "注文番号・会員ID"


@pytest.mark.django_db
def test_a_member_rows_problems_are_listed_together_each_with_its_member_id(
    client_for: ClientFor,
) -> None:
    # given a 会員CSV where CP-003 has a bad address, a bad postal code and a birthday in the
    # future, and CP-010 only a birthday in the future
    header, *_ = (DATA / "eccube_members_cp932.csv").read_bytes().decode("cp932").split("\r\n")
    names = next(csv.reader([header]))

    def member(member_id: str, **cells: str) -> dict[str, str]:
        row = dict.fromkeys(names, "")
        row.update({"会員ID": member_id, "お名前(姓)": "山田", "お名前(名)": "花子"})
        row.update({"メールアドレス": f"{member_id.lower()}@example.jp"}, **cells)
        return row

    rows = [
        member("CP-001"),
        member("CP-003", メールアドレス="cp003@@example.jp", 郵便番号="12", 誕生日="2099-01-01"),
        member("CP-010", 誕生日="2099-01-01 00:00:00"),
    ]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=names, quoting=csv.QUOTE_ALL, lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    client = client_for(Role.MARKETER)
    # when it is uploaded as customers
    post_import(client, upload("会員.csv", out.getvalue().encode("cp932")), kind="customers")
    run = ImportRun.objects.get()
    # then every problem of CP-003 is listed at once, and each row names its member
    future = "生年月日は1900年1月1日から今日までの日付にしてください"
    errors = list(
        ImportRowError.objects.filter(run=run)
        .order_by("line", "id")
        .values_list("line", "column", "reason", "order_key")
    )
    assert errors == [
        (3, "メールアドレス", "メールアドレスとして読めません(@ が2つ以上あります)", "CP-003"),
        (3, "郵便番号", "郵便番号は7桁の数字で入力してください", "CP-003"),
        (3, "誕生日", future, "CP-003"),
        (4, "誕生日", future, "CP-010"),
    ]
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    assert f'<td>誕生日</td><td>{future}</td><td class="mono">CP-010</td>' in page


@pytest.mark.django_db
def test_the_result_says_the_orders_ignored_as_older(client_for: ClientFor, tmp_path: Path) -> None:
    # given two orders stored from a newer export
    mapping, older = stored_then_older(tmp_path)
    client = client_for(Role.ADMIN)
    # when their older export is imported on the page
    post_import(
        client,
        upload("older.csv", older.read_bytes()),
        file_format="generic",
        mapping=SimpleUploadedFile("dated.yml", mapping.read_bytes()),
    )
    # then the result says they were left as stored, as it says 対象外
    run = ImportRun.objects.get()
    assert run.summary["orders"]["stale"] == 2
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    assert "新規 0 / 更新 0 / 変更なし 0" in page
    assert "更新なし(より新しい内容を登録済み) 2件" in page
