"""Decoding CSV bytes: UTF-8, UTF-8 with BOM and CP932, streamed in chunks (RELIABILITY I6)."""

from __future__ import annotations

import io

import pytest

from kizuna.commerce.importers.decoding import WAVE_DASH, DecodeRefused, StreamDecoder, lines
from kizuna.commerce.importers.errors import ImportRefused
from kizuna.commerce.importers.table import CsvTable

AWKWARD = "①㈱髙﨑ｶﾀｶﾅ０９０"
SAMPLE = "注文番号,商品名\r\n1001,美容液" + AWKWARD + "\r\n1002,化粧水\r\n"


def decode(data: bytes, encoding: str = "auto", chunk_size: int = 1 << 16) -> tuple[str, str]:
    decoder = StreamDecoder(io.BytesIO(data), encoding, chunk_size=chunk_size)
    text = "".join(decoder)
    return text, decoder.encoding


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "cp932"])
@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 64])
def test_awkward_characters_survive_every_chunk_boundary(encoding: str, chunk_size: int) -> None:
    # given a file whose multibyte characters are split across reads at every possible point
    data = SAMPLE.encode(encoding)
    # when it is decoded with encoding detection
    text, detected = decode(data, "auto", chunk_size)
    # then every character comes back as written and the encoding is named
    assert text == SAMPLE
    assert detected == ("cp932" if encoding == "cp932" else "utf-8")


def test_both_wave_dashes_become_the_one_wave_dash() -> None:
    # given the wave dash as CP932 writes it (0x8160 → U+FF5E in Python) and both UTF-8 forms
    cp932 = "美容液～夜用～".encode("cp932")
    utf8 = "美容液〜夜用～".encode()
    # when decoded
    from_cp932, _ = decode(cp932)
    from_utf8, _ = decode(utf8)
    # then both read as the same text with U+301C WAVE DASH, never a tilde or a "?"
    assert from_cp932 == from_utf8 == f"美容液{WAVE_DASH}夜用{WAVE_DASH}"


def test_a_bom_is_not_part_of_the_first_header() -> None:
    data = "\ufeffName,Email\r\n#1001,a@example.jp\r\n".encode()
    decoder = StreamDecoder(io.BytesIO(data), "auto")
    table = CsvTable(lines(iter(decoder)))
    assert table.header.names[0] == "Name"
    assert decoder.had_bom


def test_an_ascii_prefix_does_not_decide_the_encoding_too_early() -> None:
    # given a Shopify-like file whose Japanese starts only after the first reads
    data = ("Name,Lineitem name\n" + "#1,soap\n" * 20 + "#2,石鹸\n").encode("cp932")
    # when decoded in small reads
    text, detected = decode(data, "auto", chunk_size=16)
    # then the first non-ASCII bytes decide, and decide right
    assert detected == "cp932"
    assert text.endswith("#2,石鹸\n")


@pytest.mark.parametrize("chunk_size", [7, 64, 1 << 16])
def test_an_undecodable_utf8_byte_is_reported_with_its_line_and_offset(chunk_size: int) -> None:
    # given a UTF-8 file with one broken byte on line 3
    head = "注文番号,商品名\n1001,美容液\n".encode()
    data = head + b"1002,\xe5\x8c" + b"x\n1003,ok\n"
    # when decoded as UTF-8
    with pytest.raises(DecodeRefused) as excinfo:
        decode(data, "utf-8", chunk_size)
    # then the line and byte offset of the first bad byte are reported in Japanese
    refused = excinfo.value
    assert refused.line == 3
    assert refused.byte_offset == len(head) + len(b"1002,")
    assert "3行目" in refused.message
    assert f"{refused.byte_offset}バイト" in refused.message


@pytest.mark.parametrize("chunk_size", [5, 1 << 16])
@pytest.mark.parametrize(
    ("bad", "what"),
    [
        (b"\x81\x20", "読めない文字"),  # a lead byte without its second byte
        (b"\xff", "定義されていない文字"),  # Python maps it to private use; it is no character
        (b"\xf0\x40", "外字"),  # the user-defined area: a shop's own glyph, not in Unicode
    ],
)
def test_an_undecodable_cp932_byte_is_reported_never_replaced(
    bad: bytes, what: str, chunk_size: int
) -> None:
    head = "注文番号,商品名\r\n1001,美容液\r\n".encode("cp932")
    data = head + b"1002," + "石".encode("cp932") + bad + b"\r\n"
    with pytest.raises(DecodeRefused) as excinfo:
        decode(data, "cp932", chunk_size)
    refused = excinfo.value
    assert refused.line == 3
    assert refused.byte_offset == len(head) + len(b"1002,") + 2
    assert what in refused.message


def test_auto_detection_reports_a_damaged_cp932_file_in_cp932_terms() -> None:
    # given a CP932 file with one damaged byte far from its start
    head = ("注文番号,商品名\r\n" + "1001,美容液\r\n" * 50).encode("cp932")
    data = head + b"1002,\x81\x20\r\n"
    # when the encoding is detected
    with pytest.raises(DecodeRefused) as excinfo:
        decode(data, "auto")
    # then the damage is named where it is, not at the first Japanese byte
    assert excinfo.value.line == 52
    assert excinfo.value.byte_offset == len(head) + len(b"1002,")
    assert "Shift_JIS" in excinfo.value.message


def test_only_a_newline_ends_a_line() -> None:
    # a line separator (U+2028) inside a field must not shift the line numbers
    text = "a,b\n1,x\u2028y\n2,z\n"
    table = CsvTable(lines(iter([text])))
    records = list(table)
    assert [record.line for record in records] == [2, 3]
    assert records[0].values == ["1", "x\u2028y"]


def test_a_quoted_line_break_keeps_later_line_numbers_true() -> None:
    text = 'a,b\n1,"two\nlines"\n2,z\n'
    records = list(CsvTable(lines(iter([text]))))
    assert [record.line for record in records] == [2, 4]


def test_a_last_line_cut_short_refuses_the_file() -> None:
    # given a download that stopped in the middle of the last row: "19" of "1980", no newline
    text = "注文番号,単価,数量,商品名\n1001,1980,1,石鹸\n1002,19"
    # when the file is read
    with pytest.raises(ImportRefused) as excinfo:
        list(CsvTable(lines(iter([text]))))
    # then it is refused at that line rather than read with a wrong price and no quantity
    assert excinfo.value.line == 3
    assert "途中で切れています" in excinfo.value.message


@pytest.mark.parametrize(
    "text",
    [
        "注文番号,単価,数量,商品名\n1001,1980,1,石鹸\n1002,1980,2,タオル",  # no final newline
        "注文番号,単価,数量,商品名\n1001,1980,1\n1002,1980,2,タオル\n",  # short, but complete
    ],
)
def test_a_complete_last_line_without_a_newline_is_read(text: str) -> None:
    assert [record.line for record in CsvTable(lines(iter([text])))] == [2, 3]


def test_a_file_with_only_carriage_returns_says_how_to_fix_it() -> None:
    # old Excel for Mac saves "CSV (Macintosh)" with CR alone at the end of each line
    text = "注文番号,商品名\r1001,石鹸\r1002,タオル\r"
    with pytest.raises(ImportRefused) as excinfo:
        list(CsvTable(lines(iter([text]))))
    assert "CR" in excinfo.value.message
    assert "保存し直してください" in excinfo.value.message


@pytest.mark.parametrize("encoding", ["auto", "utf-8", "cp932"])
def test_an_excel_workbook_saved_under_a_csv_name_says_to_save_it_as_csv(encoding: str) -> None:
    # given an .xlsx (a ZIP archive) renamed to .csv, with bytes no encoding reads
    workbook = b"PK\x03\x04\x14\x00\x06\x00\x08\x00\x00\x00!\x00\xa3\xff" + bytes(range(256))
    # when it is read, whatever encoding was chosen
    with pytest.raises(DecodeRefused) as refused:
        "".join(StreamDecoder(io.BytesIO(workbook), encoding, chunk_size=2))
    # then the refusal says what the file is and how to make a CSV of it
    assert refused.value.message.startswith(
        "Excelファイル(.xlsx)のようです。Excelで「CSV UTF-8」または「CSV」形式で保存し直してから"
        "アップロードしてください"
    )
    assert "文字コード" not in refused.value.message


def test_the_header_line_decides_the_delimiter() -> None:
    # a header with tabs and no commas: a tab-separated file, its values may hold commas
    tabbed = CsvTable(["注文番号\t金額\n", "1001\t1,980\n"])
    assert (tabbed.header.names, [r.values for r in tabbed]) == (
        ["注文番号", "金額"],
        [["1001", "1,980"]],
    )
    # a header with commas stays a comma file, even when a value holds a tab
    commas = CsvTable(["注文番号,商品名\n", "1001,a\tb\n"])
    assert [r.values for r in commas] == [["1001", "a\tb"]]
    # blank lines before the header do not decide it
    assert CsvTable(["\n", "a\tb\n", "1\t2\n"]).header.names == ["a", "b"]
