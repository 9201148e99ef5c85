"""The main menu: every section of Kizuna a member of staff may open, in the order of their day.

Each entry names a URL; the menu shows only entries whose view admits the user's role (read
from the view's own access declaration), so nobody is offered a page that would answer 403.
"""

from __future__ import annotations

from typing import NamedTuple


class MenuItem(NamedTuple):
    url_name: str
    label: str


MENU: tuple[MenuItem, ...] = (
    MenuItem("web:home", "ホーム"),
    MenuItem("web:customer_search", "顧客検索"),
    MenuItem("duplicates:queue", "名寄せ"),
    MenuItem("analytics:dashboard", "顧客分析"),
    MenuItem("segments:list", "セグメント"),
    MenuItem("scenarios:list", "シナリオ"),
    MenuItem("outbox:dashboard", "配信状況"),
    MenuItem("imports:index", "データ取込"),
    MenuItem("apikeys:index", "API・Webhook"),
    MenuItem("security:staff", "セキュリティ管理"),
)
