"""The YAML files staff write by hand — an import's mapping file and the scenario file of
`kizuna scenarios load` — read strictly, with each problem told by line and column in Japanese.

PyYAML follows YAML 1.1, which reads two things differently from the person who typed them:
a key written twice silently keeps the last value (a column mapped twice, a scenario renamed by
a stray pasted line), and an unquoted `10:00` is the integer 600 (base 60), so a send time
typed without quotes would be refused as "not a time". Here a repeated key is an error and
`10:00` is the text "10:00" (as in YAML 1.2).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

_INT = "tag:yaml.org,2002:int"
_MERGE = "tag:yaml.org,2002:merge"

# PyYAML's problems as the person editing the file can act on them; the first match wins.
_PROBLEMS = (
    ("found character '\\t'", "タブ文字は使えません。字下げは半角スペースで書いてください"),
    (
        "that cannot start any token",
        "「%」「@」などで始まる値は引用符で囲んでください(例: text: '{% if name %}…')",
    ),
    (
        "found unhashable key",
        "「{」「[」で始まる値は引用符で囲んでください(例: subject: '{{ name }} 様')",
    ),
    (
        "mapping values are not allowed",
        "ここに「:」は書けません。字下げがずれていないか、「: 」を含む値を引用符で"
        "囲んだか確認してください",
    ),
    ("could not find expected ':'", "「項目: 値」の「:」がありません"),
    (
        "but found '<scalar>'",
        "引用符や「{」「[」で始まる値の後ろに文字が続いています。値全体を引用符で囲んでください"
        "(例: subject: '{{ name }} 様')",
    ),
    ("expected <block end>", "字下げ(行頭の空白)がそろっていません"),
    ("did not find expected key", "字下げ(行頭の空白)がそろっていません"),
    ("did not find expected '-' indicator", "一覧の「- 」の位置がそろっていません"),
    ("found unexpected end of stream", "引用符が閉じられていません"),
    ("expected ',' or ']'", "「[」に対応する「]」がありません"),
    ("expected ',' or '}'", "「{」に対応する「}」がありません"),
)


class YamlError(ValueError):
    """The file is not YAML we can read; `str()` is "N行目・M文字目: reason"."""

    def __init__(self, reason: str, line: int | None = None, column: int | None = None) -> None:
        self.reason = reason
        self.line = line
        self.column = column
        where = f"{line}行目・{column}文字目: " if line is not None else ""
        super().__init__(f"{where}{reason}")


class _RepeatedKey(yaml.constructor.ConstructorError):
    """A key written twice in one mapping; `problem` is already in Japanese."""


class _ImpossibleDate(yaml.constructor.ConstructorError):
    """An unquoted date that is no day of the calendar; `problem` is already in Japanese."""


class _Loader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first: dict[Any, int] = {}
        for key_node, _value in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE:
                continue
            key = self.construct_object(key_node)
            if key in first:
                raise _RepeatedKey(
                    None,
                    None,
                    f"「{key}」は{first[key]}行目にも書かれています(同じ項目は1回だけ書いてください)",
                    key_node.start_mark,
                )
            first[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_yaml_timestamp(self, node: yaml.ScalarNode) -> Any:
        # An unquoted 2026-02-30 looks like a date to PyYAML, which then fails inside Python's
        # date() with a ValueError (a traceback from `kizuna scenarios load`), not a YAMLError.
        try:
            return super().construct_yaml_timestamp(node)
        except ValueError:
            raise _ImpossibleDate(
                None,
                None,
                f"「{node.value}」という日付はありません。日付を確かめてください"
                "(YAML では '2026-01-01' のように引用符で囲みます)",
                node.start_mark,
            ) from None


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _Loader.construct_yaml_timestamp)

# YAML 1.1's integers without the base-60 form (`10:00`), which then reads as text.
_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _INT]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    _INT,
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)


def load(text: str) -> Any:
    """The document in `text`; raises YamlError naming the place and the reason."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        raise _problem(exc) from None
    except yaml.YAMLError:
        raise YamlError("YAMLとして読めません") from None


def _problem(exc: yaml.MarkedYAMLError) -> YamlError:
    problem = exc.problem or ""
    if isinstance(exc, (_RepeatedKey, _ImpossibleDate)):
        reason = problem
    else:
        known = (ours for theirs, ours in _PROBLEMS if theirs in problem)
        reason = next(known, "YAMLの書き方が正しくありません")
    # An unclosed quote is found at the end of the file; where it was opened is what helps.
    mark = exc.context_mark if "end of stream" in problem and exc.context_mark else exc.problem_mark
    if mark is None:
        return YamlError(reason)
    return YamlError(reason, mark.line + 1, mark.column + 1)
