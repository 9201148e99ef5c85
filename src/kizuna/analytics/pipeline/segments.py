"""Segment names: the CPM ten and the RFM grid. Codes are stored; labels are shown.

CPM stage from (purchase count, tenure, total spend), then 現役/離脱 from days since the last
purchase; every comparison and its side of the boundary is listed in docs/analytics.md.
Pages and the API import this module, so it imports nothing of the pipeline's engines or
numerics.
"""

from __future__ import annotations

from enum import StrEnum


class CpmStage(StrEnum):
    FIRST = "first"
    TODDLER = "toddler"
    STEADY = "steady"
    TRENDY = "trendy"
    LOYAL = "loyal"


CPM_STAGE_LABELS: dict[CpmStage, str] = {
    CpmStage.FIRST: "初回客",
    CpmStage.TODDLER: "よちよち客",
    CpmStage.STEADY: "コツコツ客",
    CpmStage.TRENDY: "流行客",
    CpmStage.LOYAL: "優良客",
}

ACTIVE_SUFFIX = "active"
LAPSED_SUFFIX = "lapsed"

# "first_active", "first_lapsed", … in display order: stages up the ladder, 現役 before 離脱.
CPM_SEGMENTS: dict[str, str] = {
    f"{stage.value}_{suffix}": f"{state}{label}"
    for stage, label in CPM_STAGE_LABELS.items()
    for suffix, state in ((ACTIVE_SUFFIX, "現役"), (LAPSED_SUFFIX, "離脱"))
}

# RFM segments from the (R, F) scores. The grid is the widely used 5×5 map (R rows, F columns):
#
#          F=1       F=2       F=3       F=4          F=5
#   R=5   新規      ロイヤル候補 ロイヤル候補 チャンピオン   チャンピオン
#   R=4   有望      ロイヤル候補 ロイヤル候補 ロイヤル      ロイヤル
#   R=3   休眠予備軍 休眠予備軍  要フォロー   ロイヤル      ロイヤル
#   R=2   休眠      休眠       要注意      要注意        失いたくない
#   R=1   離脱      離脱       要注意      要注意        失いたくない
RFM_SEGMENTS: dict[str, str] = {
    "champions": "チャンピオン",
    "loyal": "ロイヤル",
    "potential_loyalist": "ロイヤル候補",
    "new": "新規",
    "promising": "有望",
    "need_attention": "要フォロー",
    "about_to_sleep": "休眠予備軍",
    "at_risk": "要注意",
    "cannot_lose": "失いたくない",
    "hibernating": "休眠",
    "lost": "離脱",
}


def _rfm_grid() -> dict[tuple[int, int], str]:
    grid: dict[tuple[int, int], str] = {}
    rows = {
        5: ("new", "potential_loyalist", "potential_loyalist", "champions", "champions"),
        4: ("promising", "potential_loyalist", "potential_loyalist", "loyal", "loyal"),
        3: ("about_to_sleep", "about_to_sleep", "need_attention", "loyal", "loyal"),
        2: ("hibernating", "hibernating", "at_risk", "at_risk", "cannot_lose"),
        1: ("lost", "lost", "at_risk", "at_risk", "cannot_lose"),
    }
    for r, names in rows.items():
        for f, name in enumerate(names, start=1):
            grid[(r, f)] = name
    return grid


RFM_GRID: dict[tuple[int, int], str] = _rfm_grid()


class WhatIfError(ValueError):
    """A what-if change to the CPM transitions that cannot be applied (dynamics.what_if); the
    message says why, in Japanese."""
