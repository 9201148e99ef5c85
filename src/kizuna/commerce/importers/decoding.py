"""Reading a CSV file's bytes as text, a chunk at a time, in the encoding the shop's cart used.

Japanese carts export CP932 (Windows Shift_JIS), newer ones UTF-8, sometimes with a BOM so Excel
opens them. `auto` decides from the first bytes that are not plain ASCII. A byte that cannot be
decoded stops the import with its line and byte offset: a silent replacement character would
put "?" into a customer's name and nobody would notice (RELIABILITY I6).
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Callable, Iterator
from typing import BinaryIO

from kizuna.commerce.importers.errors import ImportRefused, Remedy

ENCODINGS = ("auto", "utf-8", "cp932")
ENCODING_LABELS = {"auto": "自動判定", "utf-8": "UTF-8", "cp932": "Shift_JIS(CP932)"}
CHUNK_SIZE = 1 << 16
_BOM = codecs.BOM_UTF8
# Every .xlsx is a ZIP archive, which starts with these bytes: an Excel workbook renamed to
# .csv would otherwise be refused as an undecodable byte, which sends the user to the
# encoding choice instead of to Excel's 「名前を付けて保存」.
_ZIP_SIGNATURE = b"PK\x03\x04"
XLSX_REFUSAL = (
    "Excelファイル(.xlsx)のようです。Excelで「CSV UTF-8」または「CSV」形式で保存し直してから"
    "アップロードしてください(何も取り込んでいません)。"
)

# CP932 maps its wave dash (0x8160) to U+FF5E FULLWIDTH TILDE, while UTF-8 files carry either
# U+301C WAVE DASH or U+FF5E for the same character. NFKC, which the customer services apply to
# names and addresses, folds U+FF5E to an ASCII "~" but leaves U+301C alone, so without one
# canonical form the same address would read differently depending on where it came from.
WAVE_DASH = "\u301c"
_FULLWIDTH_TILDE = "\uff5e"


# Python's cp932 codec follows Microsoft's table, which gives bytes Shift_JIS leaves undefined
# (0x80, 0xA0, 0xFD–0xFF) and the user-defined area (外字, 0xF040–0xF9FC) private-use code
# points. Such a character shows as an empty box, or nothing, in a customer's name: it is
# refused like any other byte that cannot be read.
_CP932_UNDEFINED = re.compile("[\x80\ue000-\uf8ff]")


class DecodeRefused(ImportRefused):
    """An undecodable byte; `line` and `byte_offset` (from 0) say where. A UTF-8 file read as
    CP932 is refused as a whole instead: no place in it is damaged, the choice of encoding is
    wrong (`remedy` is Remedy.ENCODING_UTF8 and there is no line)."""


def _utf8_as_cp932(why: str) -> DecodeRefused:
    return DecodeRefused(
        f"このファイルの文字コードは UTF-8 です({why})。"
        f"文字コードに{ENCODING_LABELS['cp932']}が指定されているため、"
        "取り込みを中止しました(何も取り込んでいません)。",
        remedy=Remedy.ENCODING_UTF8,
    )


def _describe(encoding: str) -> str:
    return ENCODING_LABELS.get(encoding, encoding)


class StreamDecoder:
    """Decode a binary stream chunk by chunk; `encoding` is what was used once decided."""

    def __init__(
        self,
        raw: BinaryIO,
        encoding: str = "auto",
        *,
        on_bytes: Callable[[int], None] | None = None,
        chunk_size: int = CHUNK_SIZE,
    ) -> None:
        if encoding not in ENCODINGS:
            raise ValueError(encoding)
        self._raw = raw
        self._requested = encoding
        self.encoding = "" if encoding == "auto" else encoding
        self.had_bom = False
        self._on_bytes = on_bytes
        self._chunk_size = chunk_size
        self._offset = 0  # bytes of the file before the current chunk
        self._newlines = 0  # b"\n" in those bytes
        self._decoder: codecs.IncrementalDecoder | None = None
        # Asked for CP932: the same bytes read as UTF-8 too, for as long as they are valid
        # UTF-8, so that a CP932 failure in a UTF-8 file can say that it is one.
        self._utf8: codecs.IncrementalDecoder | None = None
        if encoding == "cp932":
            self._utf8 = codecs.getincrementaldecoder("utf-8")()

    def __iter__(self) -> Iterator[str]:
        chunk = self._raw.read(max(self._chunk_size, len(_BOM), len(_ZIP_SIGNATURE)))
        if chunk.startswith(_ZIP_SIGNATURE):
            raise DecodeRefused(XLSX_REFUSAL)
        if chunk.startswith(_BOM) and self._requested == "cp932":
            # The BOM reads as CP932 too (as "・ｿ"), so such a file would otherwise be read
            # as garbage in its first header, or fail somewhere later.
            raise _utf8_as_cp932("先頭に UTF-8 の印(BOM)があります")
        if chunk.startswith(_BOM):
            self.had_bom = True
            self.encoding = "utf-8"
            chunk = chunk[len(_BOM) :] or self._raw.read(self._chunk_size)
            self._offset = len(_BOM)
        while chunk:
            text = self._decode(chunk, final=False)
            self._offset += len(chunk)
            self._newlines += chunk.count(b"\n")
            if self._on_bytes is not None:
                self._on_bytes(self._offset)
            if text:
                yield text.replace(_FULLWIDTH_TILDE, WAVE_DASH)
            chunk = self._raw.read(self._chunk_size)
        tail = self._decode(b"", final=True)
        if tail:
            yield tail.replace(_FULLWIDTH_TILDE, WAVE_DASH)

    def _decode(self, chunk: bytes, *, final: bool) -> str:
        if self._decoder is None:
            if not self.encoding:
                if chunk.isascii() and not final:
                    return chunk.decode("ascii")  # the same in every candidate encoding
                self.encoding = self._guess(chunk, final=final)
            self._decoder = codecs.getincrementaldecoder(self.encoding)()
        decoder = self._decoder
        pending = bytes(decoder.getstate()[0])
        if self._utf8 is not None:
            try:
                self._utf8.decode(chunk, final)
            except UnicodeDecodeError:
                self._utf8 = None  # not UTF-8 either: CP932 errors are the file's own
        try:
            text = decoder.decode(chunk, final)
        except UnicodeDecodeError:
            raise self._refusal(pending, chunk, self.encoding) from None
        if self.encoding == "cp932":
            undefined = _CP932_UNDEFINED.search(text)
            if undefined is not None:
                start = len(text[: undefined.start()].encode("cp932"))
                raise self._refusal(pending, chunk, self.encoding, undefined_at=start)
        return text

    def _guess(self, chunk: bytes, *, final: bool) -> str:
        """UTF-8 when the bytes are valid UTF-8 (Shift_JIS text almost never is), else CP932.

        When neither reads the chunk, the one that read further is the file's encoding with a
        damaged byte, and the damage is reported in its terms.
        """
        failures: list[tuple[int, str]] = []
        for candidate in ("utf-8", "cp932"):
            try:
                codecs.getincrementaldecoder(candidate)().decode(chunk, final)
            except UnicodeDecodeError as exc:
                failures.append((exc.start, candidate))
            else:
                return candidate
        _start, best = max(failures)
        return best

    def _where(self, pending: bytes, chunk: bytes, start: int) -> tuple[int, int]:
        """Line (from 1) and file offset (from 0) of position `start` in pending + chunk."""
        in_chunk = max(start - len(pending), 0)
        line = self._newlines + chunk[:in_chunk].count(b"\n") + 1
        return line, self._offset + start - len(pending)

    def _refusal(
        self, pending: bytes, chunk: bytes, encoding: str, *, undefined_at: int | None = None
    ) -> DecodeRefused:
        if self._utf8 is not None:
            # Every byte so far is valid UTF-8, and the one CP932 cannot read is not ASCII.
            return _utf8_as_cp932("Shift_JIS として読めない文字が、UTF-8 としては読めます")
        data = pending + chunk
        if undefined_at is not None:
            start = undefined_at
            what = f"{_describe(encoding)}で定義されていない文字(外字など)です"
        else:
            try:
                data.decode(encoding)
            except UnicodeDecodeError as exc:
                start = exc.start
            else:  # pragma: no cover - the incremental decoder failed, so this one does too
                start = 0
            what = f"{_describe(encoding)}として読めない文字です"
        line, offset = self._where(pending, chunk, start)
        bad = data[start] if start < len(data) else 0
        return DecodeRefused(
            f"{line}行目(ファイル先頭から{offset}バイトの位置、0x{bad:02X})は{what}。"
            "取り込みを中止しました(何も取り込んでいません)。"
            "文字コードの指定が正しいか、ファイルが壊れていないか確認してください。",
            line=line,
            byte_offset=offset,
        )


# The longest physical line read: a line is held whole before the CSV reader splits it, so
# this bounds memory however the file is made. Twice table.MAX_FIELD_CHARS, so that a value
# that long still reaches its row's checks with the rest of its row.
MAX_LINE_CHARS = 20_000_000


def lines(texts: Iterator[str], *, max_chars: int = MAX_LINE_CHARS) -> Iterator[str]:
    """Text chunks as lines ending in "\\n", the way `csv.reader` wants them.

    Only "\\n" ends a line: `str.splitlines` would also break on characters such as U+2028 that
    may sit inside a field, and line numbers would then no longer match the file. A line longer
    than `max_chars` refuses the file, naming it.
    """
    pending: list[str] = []  # the start of a line that spans chunks
    pending_chars = 0
    number = 0  # lines yielded
    for text in texts:
        parts = text.split("\n")
        last = parts.pop()
        for part in parts:
            line = part
            if pending:
                line = "".join([*pending, part])
                pending, pending_chars = [], 0
            if len(line) > max_chars:
                raise _line_too_long(number + 1, line, max_chars)
            number += 1
            yield line + "\n"
        if last:
            pending.append(last)
            pending_chars += len(last)
            if pending_chars > max_chars:
                raise _line_too_long(number + 1, "".join(pending), max_chars)
    if pending:
        yield "".join(pending)


def _line_too_long(line: int, text: str, max_chars: int) -> ImportRefused:
    hint = (
        "改行が CR だけのファイル(古い Mac の Excel など)は、CRLF か LF で保存し直してください。"
        if "\r" in text
        else "CSVファイルか、改行が正しいか確かめてください。"
    )
    return ImportRefused(
        f"{line}行目が長すぎます(1行は{max_chars:,}文字まで)。"
        f"取り込みを中止しました(何も取り込んでいません)。{hint}",
        line=line,
    )
