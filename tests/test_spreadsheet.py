"""CSV cells Excel would run as formulas are kept as text; plain values are left alone."""

from __future__ import annotations

from typing import Any

import pytest

from kizuna.core.spreadsheet import safe_cell


@pytest.mark.parametrize(
    ("value", "written"),
    [
        ("=1+1", "'=1+1"),
        ("+cmd|' /C calc'!A0", "'+cmd|' /C calc'!A0"),
        ("-2+3 ご案内", "'-2+3 ご案内"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("-300", "-300"),  # a signed number is a number, not a formula
        ("+819012345678", "+819012345678"),
        ("1.5", "1.5"),
        ("山田 花子", "山田 花子"),
        ("", ""),
        (1200, 1200),
        (None, None),
    ],
)
def test_formula_like_cells_become_text(value: Any, written: Any) -> None:
    assert safe_cell(value) == written
