"""On-site messages (web接客) for the shop's site: what to show the logged-in member.

The site calls this with its own member ID (the cart member ID Kizuna already knows) and an
API key holding the `onsite:read` scope. Only messages the delivery worker released (consent,
timing and cap checked) are returned, for 30 days after they were released.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from django.http import HttpRequest
from ninja import Query, Router, Schema
from ninja.decorators import decorate_view
from pydantic import Field

from kizuna.accounts.models import ApiScope
from kizuna.api.auth import ApiKeyAuth
from kizuna.api.query import known_query
from kizuna.api.schemas import chars
from kizuna.api.v1.responses import read_errors
from kizuna.campaigns.selectors import onsite_messages

router = Router(tags=["サイト内メッセージ"])


class OnsiteQuery(Schema):
    member_id: Annotated[str, chars(100, min_length=1)] = Field(
        description="ショップの会員ID(カート会員ID)", examples=["M-000123"]
    )


class OnsiteMessageOut(Schema):
    id: int = Field(description="メッセージID")
    title: str = Field(description="見出し")
    text: str = Field(description="本文")
    url: str = Field(description="リンク先(なければ空)")
    sent_at: dt.datetime = Field(description="掲出開始日時")


class OnsiteMessagesOut(Schema):
    messages: list[OnsiteMessageOut]


@router.get(
    "/onsite/messages",
    response={200: OnsiteMessagesOut, **read_errors()},
    auth=ApiKeyAuth(ApiScope.ONSITE_READ),
    summary="会員に表示するサイト内メッセージを取得する",
)
@decorate_view(known_query(OnsiteQuery))
def list_onsite_messages(request: HttpRequest, query: Query[OnsiteQuery]) -> dict[str, Any]:
    """会員IDの顧客に向けたサイト内メッセージを新しい順に最大20件返します(過去30日分)。
    会員IDが登録されていなければ空の一覧です。"""
    return {
        "messages": [
            {
                "id": message.pk,
                "title": message.content.get("title", ""),
                "text": message.content.get("text", ""),
                "url": message.content.get("url", ""),
                "sent_at": message.sent_at,
            }
            for message in onsite_messages(query.member_id)
        ]
    }
