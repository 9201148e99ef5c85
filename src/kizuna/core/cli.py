"""Command-line parsing in Japanese for the commands staff type (`kizuna import`,
`kizuna scenarios`): argparse's own messages are English."""

from __future__ import annotations

import re
import sys
from typing import NoReturn

from django.core.management.base import CommandParser

USAGE_ERROR = 2

# The messages a mistyped command line produces most, as argparse words them.
_ARGPARSE_MESSAGES = (
    (re.compile(r"the following arguments are required: (.*)"), "必須の引数がありません: {0}"),
    (
        re.compile(r"argument (\S+): invalid choice: (\S+) \(choose from (.*)\)"),
        "{0} に {1} は指定できません(指定できる値: {2})",
    ),
    (re.compile(r"argument (\S+): expected one argument"), "{0} には値を指定してください"),
    (re.compile(r"unrecognized arguments: (.*)"), "知らない引数です: {0}"),
    (re.compile(r"argument (\S+): invalid (\S+) value: (.*)"), "{0} の値 {2} が正しくありません"),
)


class JapaneseCommandParser(CommandParser):
    """Reports a usage mistake in Japanese and exits with USAGE_ERROR (2)."""

    def error(self, message: str) -> NoReturn:
        for pattern, template in _ARGPARSE_MESSAGES:
            match = pattern.fullmatch(message)
            if match:
                message = template.format(*match.groups())
                break
        self.print_usage(sys.stderr)
        self.exit(USAGE_ERROR, f"エラー: {message}\n(使い方: {self.prog} --help)\n")
