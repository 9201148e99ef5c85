"""`kizuna campaigns …`: delivery chores from the command line.

kizuna campaigns bounce FILE        apply bounce/complaint notifications (JSON; - for stdin)
kizuna campaigns unsubscribe TOKEN  apply an opt-out that arrived by mail (the subject of a
                                    mail to the List-Unsubscribe mailto address)
kizuna campaigns pause | resume     stop or restart all sending
"""

from __future__ import annotations

import json
import re
import sys
from argparse import ArgumentParser
from typing import Any, TextIO

from django.core.management.base import CommandError

from kizuna.campaigns.services import sending_pause
from kizuna.campaigns.suppression import notifications_ingest
from kizuna.campaigns.unsubscribe import InvalidTokenError, unsubscribe
from kizuna.core.audit import Actor
from kizuna.core.cli import JapaneseCommand, JapaneseCommandParser, read_named_file

ACTOR = Actor.system("campaigns-command")


def _records(raw: Any) -> list[dict[str, Any]]:
    """A list of notifications, or {"notifications": [...]}, or one notification."""
    if isinstance(raw, dict) and isinstance(raw.get("notifications"), list):
        raw = raw["notifications"]
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise CommandError('JSONの形が違います: 通知のリスト、または {"notifications": [...]} です')
    return raw


# An unsubscribe mail's subject is the token; a reply or forward puts "Re:", "RE:", "Fwd:" or
# 「返信:」 in front, and staff copy the subject as it is.
_REPLY_PREFIX = re.compile(r"^(?:\s*(?:re|fw|fwd|返信|転送)\s*[:：]\s*)+", re.IGNORECASE)


def _token_from_subject(subject: str) -> str:
    return _REPLY_PREFIX.sub("", subject.strip()).strip()


class Command(JapaneseCommand):
    # `bounce -` reads standard input; call_command(stdin=…) may pass another stream.
    stealth_options = ("stdin",)
    help = "配信まわりの操作(バウンス取り込み・メールでの配信停止・送信の一時停止)"

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(
            dest="action", required=True, parser_class=JapaneseCommandParser
        )
        bounce = sub.add_parser("bounce", help="バウンス・苦情通知(JSON)を取り込みます")
        bounce.add_argument("file", help="JSONファイル(- で標準入力)")
        unsub = sub.add_parser("unsubscribe", help="メールで届いた配信停止を反映します")
        unsub.add_argument("tokens", nargs="+", help="配信停止メールの件名にあるトークン")
        sub.add_parser("pause", help="すべての送信を一時停止します")
        sub.add_parser("resume", help="送信を再開します")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "bounce":
            self._bounce(options["file"], options.get("stdin") or sys.stdin)
        elif action == "unsubscribe":
            self._unsubscribe(options["tokens"])
        else:
            sending_pause(paused=action == "pause", acting_user=ACTOR)
            self.stdout.write(
                "送信を一時停止しました" if action == "pause" else "送信を再開しました"
            )

    def _bounce(self, path: str, stdin: TextIO) -> None:
        try:
            raw = json.loads(read_named_file(path, stdin))
        except json.JSONDecodeError as exc:
            raise CommandError(
                f"JSONとして読めません({exc.lineno}行目・{exc.colno}文字目)。"
                '通知のリスト([ … ])か {"notifications": [ … ]} の形で保存してください'
            ) from None
        report = notifications_ingest(_records(raw), acting_user=ACTOR)
        self.stdout.write(
            f"配信停止に追加: {report.added}件 / 登録済み: {report.already}件 / "
            f"一時的な不達(無視): {report.ignored}件 / 誤り: {len(report.errors)}件"
        )
        for error in report.errors:
            self.stderr.write(error)
        if report.errors:
            raise CommandError("読めない通知がありました(上記)。ほかの通知は反映済みです")

    def _unsubscribe(self, tokens: list[str]) -> None:
        bad = 0
        for token in tokens:
            try:
                result = unsubscribe(token=_token_from_subject(token))
            except InvalidTokenError:
                bad += 1
                self.stderr.write(f"無効なトークンです: {token[:40]}")
                continue
            state = "停止済み" if result.already else "停止しました"
            self.stdout.write(f"顧客 #{result.customer.pk} {result.channel.label}: {state}")
        if bad:
            raise CommandError(f"無効なトークンが{bad}件ありました")
