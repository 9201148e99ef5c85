"""A refused file says what to choose instead in the words of where the import was started:
the import page names its own fields (形式, マッピングファイル, 文字コード, 取り込む内容), the
command its options. A UTF-8 file imported as Shift_JIS is named as UTF-8, never silently read."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role
from kizuna.commerce.importers.decoding import DecodeRefused, StreamDecoder
from kizuna.commerce.importers.errors import Remedy
from kizuna.commerce.models import ImportRun, ImportStatus, Order
from kizuna.customers.models import Customer
from tests.test_import_command import kizuna_import
from tests.test_import_web import post_import

DATA = Path(__file__).parent / "data" / "ingest"
ClientFor = Callable[[Role], Client]

ORDERS_TEXT = (DATA / "eccube_orders_cp932.csv").read_bytes().decode("cp932")
FLAG_WORDS = ("--", "kizuna import", "コマンド")


@pytest.fixture(autouse=True)
def _imports_in_tmp(settings, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    settings.DATA_DIR = tmp_path
    settings.TASKS = {"default": {"BACKEND": "django_tasks.backends.immediate.ImmediateBackend"}}


def decode(data: bytes, encoding: str, chunk_size: int = 1 << 16) -> str:
    return "".join(StreamDecoder(io.BytesIO(data), encoding, chunk_size=chunk_size))


# --- decoding -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_size", [3, 64, 1 << 16])
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8"])
def test_a_utf8_file_read_as_cp932_is_named_utf8(encoding: str, chunk_size: int) -> None:
    # given an EC-CUBE export saved as UTF-8, with or without a BOM, whose Japanese begins
    # only after a long ASCII stretch in the version without
    data = ("a,b\n" * 40).encode() + ORDERS_TEXT.encode(encoding)
    if encoding == "utf-8-sig":
        data = ORDERS_TEXT.encode(encoding)
    # when it is read as Shift_JIS
    with pytest.raises(DecodeRefused) as excinfo:
        decode(data, "cp932", chunk_size)
    # then the refusal says the file is UTF-8 and points to the encoding choice, not to a byte
    refused = excinfo.value
    assert refused.remedy is Remedy.ENCODING_UTF8
    assert "このファイルの文字コードは UTF-8 です" in refused.message
    assert "バイトの位置" not in refused.message
    assert refused.line is None


def test_a_bom_alone_refuses_a_file_that_would_read_as_cp932() -> None:
    # given a UTF-8 file with a BOM and nothing but ASCII, which CP932 reads without an error
    data = "\ufeffName,Email\r\n#1001,a@example.jp\r\n".encode()
    # when it is read as Shift_JIS, then the BOM is not read as two characters of the header
    with pytest.raises(DecodeRefused) as excinfo:
        decode(data, "cp932")
    assert "BOM" in excinfo.value.message
    assert excinfo.value.remedy is Remedy.ENCODING_UTF8


@pytest.mark.parametrize("chunk_size", [5, 1 << 16])
def test_a_damaged_cp932_file_after_ascii_is_still_reported_at_its_byte(chunk_size: int) -> None:
    # given a Shift_JIS file whose first non-ASCII bytes are its damage
    head = b"order,name\r\n" * 10
    data = head + b"1002,\x81\x20\r\n"
    # when read as Shift_JIS, then the damaged byte is named with its line and offset
    with pytest.raises(DecodeRefused) as excinfo:
        decode(data, "cp932", chunk_size)
    assert excinfo.value.remedy is None
    assert excinfo.value.line == 11
    assert excinfo.value.byte_offset == len(head) + len(b"1002,")
    assert "11行目" in excinfo.value.message


# --- the command ----------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8"])
def test_the_command_names_its_encoding_options_for_a_utf8_file(
    tmp_path: Path, encoding: str
) -> None:
    path = tmp_path / "受注.csv"
    path.write_bytes(ORDERS_TEXT.encode(encoding))
    code, _out, err = kizuna_import("orders", str(path), "--encoding", "cp932")
    assert code == 1
    assert "UTF-8 です" in err
    assert "--encoding auto" in err
    assert "--encoding utf-8" in err
    assert not Order.objects.exists()
    assert not Customer.objects.exists()


@pytest.mark.django_db
def test_the_command_names_its_format_options_for_an_unknown_layout() -> None:
    code, _out, err = kizuna_import("orders", str(DATA / "generic_orders.csv"))
    assert code == 1
    assert "形式を判定できませんでした" in err
    assert "--format generic" in err
    assert "--mapping" in err


@pytest.mark.django_db
def test_the_command_names_the_other_kind_as_a_command() -> None:
    code, _out, err = kizuna_import("orders", str(DATA / "eccube_members_cp932.csv"))
    assert code == 1
    assert "kizuna import customers" in err


# --- the import page ------------------------------------------------------------------------


def refused_run(client: Client, file: SimpleUploadedFile, **fields: object) -> ImportRun:
    post_import(client, file, **fields)
    run = ImportRun.objects.latest("pk")
    assert run.status == ImportStatus.REFUSED
    page = client.get(reverse("imports:detail", args=[run.pk])).content.decode()
    assert run.message in page
    return run


@pytest.mark.django_db
@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-8"])
def test_the_page_names_its_encoding_choices_for_a_utf8_file(
    client_for: ClientFor, encoding: str
) -> None:
    client = client_for(Role.MARKETER)
    # when a UTF-8 file is uploaded with 文字コード Shift_JIS, for real (not a dry run)
    data = ORDERS_TEXT.encode(encoding)
    file = SimpleUploadedFile("受注.csv", data, content_type="text/csv")
    run = refused_run(client, file, encoding="cp932", dry_run="")
    # then the page says the file is UTF-8 and which choices of this form read it
    assert "UTF-8 です" in run.message
    assert "文字コードで「自動判定」か「UTF-8」を選んで" in run.message
    assert not any(word in run.message for word in FLAG_WORDS)
    # and nothing was imported
    assert not Order.objects.exists()
    assert not Customer.objects.exists()


@pytest.mark.django_db
def test_an_unknown_layout_on_the_page_names_the_forms_fields_not_flags(
    client_for: ClientFor,
) -> None:
    client = client_for(Role.MARKETER)
    file = SimpleUploadedFile(
        "export.csv", (DATA / "generic_orders.csv").read_bytes(), content_type="text/csv"
    )
    run = refused_run(client, file)
    assert "形式を判定できませんでした" in run.message
    assert "形式「汎用CSV」とマッピングファイルで列の対応を指定してください" in run.message
    assert not any(word in run.message for word in FLAG_WORDS)


@pytest.mark.django_db
def test_an_eccube_file_missing_a_column_on_the_page_names_no_flags(
    client_for: ClientFor,
) -> None:
    client = client_for(Role.MARKETER)
    lines = ORDERS_TEXT.splitlines(keepends=True)
    header = lines[0].replace("個数", "個数x")
    file = SimpleUploadedFile(
        "受注.csv", "".join([header, *lines[1:]]).encode("cp932"), content_type="text/csv"
    )
    run = refused_run(client, file)
    assert "EC-CUBE の受注CSVに必要な列が見つかりません" in run.message
    assert "形式「汎用CSV」" in run.message
    assert not any(word in run.message for word in FLAG_WORDS)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "kind", "advice"),
    [
        ("eccube_members_cp932.csv", "orders", "取り込む内容を「顧客」にしてください"),
        ("eccube_orders_cp932.csv", "customers", "取り込む内容を「注文」にしてください"),
    ],
)
def test_the_wrong_kind_on_the_page_names_the_forms_choice(
    client_for: ClientFor, name: str, kind: str, advice: str
) -> None:
    client = client_for(Role.MARKETER)
    file = SimpleUploadedFile(name, (DATA / name).read_bytes(), content_type="text/csv")
    run = refused_run(client, file, kind=kind)
    assert advice in run.message
    assert not any(word in run.message for word in FLAG_WORDS)
