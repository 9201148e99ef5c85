"""A value longer than Python's csv module reads by default (131,072 characters) is still a
bad cell of its row — reported with line, column and length, the other rows imported — and
the reader stays bounded: a value or a line beyond the import's own caps refuses the file,
naming the line and saying a value is too long (not 「形式が正しくありません」)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kizuna.commerce.importers import ImportOptions, run_import
from kizuna.commerce.importers.decoding import lines
from kizuna.commerce.importers.errors import ImportRefused
from kizuna.commerce.importers.table import MAX_FIELD_CHARS
from kizuna.customers.models import Customer
from tests.test_import_lengths import _errors
from tests.test_import_row_checks import MEMBERS, _csv_text, _rows

pytestmark = pytest.mark.django_db


def _members(tmp_path: Path, family_name_of_member_103: str) -> Path:
    """The golden EC-CUBE 会員CSV (members 101–104 on lines 2–5), member 103's 姓 replaced."""
    header, rows = _rows(MEMBERS, "cp932")
    rows[2]["お名前(姓)"] = family_name_of_member_103
    path = tmp_path / "会員.csv"
    path.write_bytes(_csv_text(header, rows).encode("utf-8"))
    return path


def test_a_family_name_of_140000_characters_is_that_rows_error(tmp_path: Path) -> None:
    # given a member CSV whose line 4 has a 姓 longer than csv's default field limit
    path = _members(tmp_path, "山" * 140_000)
    # when it is imported
    result = run_import(path, ImportOptions(kind="customers"))
    # then that row is reported by line, column and length, and the others are imported
    assert (result.status, result.rows_read, result.rows_rejected) == ("rejected_rows", 4, 1)
    assert _errors(result) == [(4, "お名前(姓)", "姓は50文字以内にしてください(いま140,000文字)")]
    assert [error.order for error in result.errors] == ["103"]
    assert result.customers["created"] == 3
    assert not Customer.objects.filter(family_name__startswith="山山").exists()


def test_a_value_of_nine_million_characters_is_still_a_row_error(tmp_path: Path) -> None:
    result = run_import(_members(tmp_path, "x" * 9_000_000), ImportOptions(kind="customers"))
    assert _errors(result) == [(4, "お名前(姓)", "姓は50文字以内にしてください(いま9,000,000文字)")]
    assert result.customers["created"] == 3


def test_a_value_beyond_the_cap_refuses_the_file_naming_its_line(tmp_path: Path) -> None:
    # given a value longer than any CSV cell the import reads (a runaway quote looks the same)
    path = _members(tmp_path, "x" * (MAX_FIELD_CHARS + 1))
    # when it is imported
    result = run_import(path, ImportOptions(kind="customers"))
    # then the file is refused before anything is written, saying where and why
    assert result.status == "refused"
    assert result.refused_line == 4
    assert result.message.startswith("4行目から始まる行に、10,000,000文字を超える値があります。")
    assert "形式が正しくありません" not in result.message
    assert not Customer.objects.exists()


def test_a_line_beyond_the_cap_is_refused_before_it_is_held_whole() -> None:
    # a 10-character line fed in chunks: the reader stops once the line passes the cap
    chunks = iter(["a,b\nc,d\n", "12345", "6789", "0\n"])
    read = lines(chunks, max_chars=8)
    assert [next(read), next(read)] == ["a,b\n", "c,d\n"]
    with pytest.raises(ImportRefused) as refused:
        next(read)
    assert refused.value.line == 3
    assert refused.value.message.startswith("3行目が長すぎます(1行は8文字まで)。")
    assert next(chunks, None) == "0\n"  # the rest of the line was never read


def test_a_file_whose_lines_end_in_cr_only_is_told_so_when_too_long() -> None:
    read = lines(iter(["h\n", "a\rb\rc\r", "d\re\r"]), max_chars=8)
    assert next(read) == "h\n"
    with pytest.raises(ImportRefused) as refused:
        next(read)
    assert "CR だけ" in refused.value.message


def test_lines_are_unchanged_for_ordinary_files() -> None:
    chunks = ["見出し,b\n1,", "2\n3", ",4\n", "5,6"]
    assert list(lines(iter(chunks))) == ["見出し,b\n", "1,2\n", "3,4\n", "5,6"]
