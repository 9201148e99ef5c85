"""Command-line parsing in Japanese for the commands staff type (`kizuna import`,
`kizuna scenarios`): argparse's own messages are English."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any, NoReturn, TextIO

from django.core.management.base import BaseCommand, CommandError, CommandParser

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


class JapaneseCommand(BaseCommand):
    """A command whose mistakes read as staff read them: a mistyped command line in Japanese
    (JapaneseCommandParser, subcommands included when they are added with
    `parser_class=JapaneseCommandParser`), and a refusal (CommandError) as 「エラー: …」 rather
    than Django's "CommandError: …". call_command (tests, other code) still gets the exception."""

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parser.__class__ = JapaneseCommandParser
        return parser

    def execute(self, *args: Any, **options: Any) -> str | None:
        try:
            return super().execute(*args, **options)
        except CommandError as exc:
            from_terminal = getattr(self, "_called_from_command_line", False)  # run_from_argv
            if options.get("traceback") or not from_terminal:
                raise
            self.stderr.write(f"エラー: {exc}")
            sys.exit(exc.returncode)


def read_named_file(name: str, stdin: TextIO) -> str:
    """The UTF-8 text of the file named on the command line (`-`: standard input), or a
    CommandError saying in Japanese what is wrong with the name (missing, a folder, not UTF-8,
    unreadable) rather than Python's "[Errno 2] …" or a traceback."""
    if name == "-":
        return stdin.read()
    path = Path(name)
    if path.is_dir():
        raise CommandError(f"ファイルではなくフォルダが指定されています: {name}")
    if not path.exists():
        raise CommandError(f"ファイルがありません: {name}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CommandError("ファイルはUTF-8で保存してください") from exc
    except OSError:
        raise CommandError(f"ファイルを読めません: {name}") from None
