"""Rendering message templates in a sandbox.

A template is written by shop staff and sent to customers, so it may only see what it is
given: a plain dict of strings, numbers, dates and lists/dicts of those, built here from a
handful of columns (`customer_contexts`). No model object ever enters the context, so
`{{ customer.password }}`, `{{ order.customer.identities }}` and the like have nothing to
reach and render empty. Saving (and the preview) goes further and refuses a name the template is
not given, and a {{ or {% left as text by a tag not closed (`_strict_problems`): either would
send 「様」 addressed to nobody, or raw braces.

The engine is Django's, but with its built-in library replaced by a short allowlist: `if`,
`for`, `with`, `firstof`, `now`, `comment`, `verbatim` and plain formatting filters. `include`,
`extends`, `load`, `url`, `debug`, `csrf_token`… are unknown tags here, so a template using
them is refused when it is saved, with the tag named.

Rendering cannot fail in any other way than a TemplateRenderError in Japanese (`_render`): a
date given a time format, a division by zero, a loop over a number… name the part and the
{{ }} or {% %} at fault. Nor can it tie up the server: widths, decimals, joins, loops and the
length of what is rendered are capped (MAX_WIDTH, MAX_DECIMALS, MAX_LOOPS, MAX_FILTERED,
MAX_RENDERED). A template is saved only once it renders for the made-up customer and for one
with nothing yet (`render_check`).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, cast

from django.db import connection
from django.db.models import Min, OuterRef, Subquery
from django.db.models.expressions import RawSQL
from django.template import (
    Context,
    Engine,
    Library,
    Template,
    TemplateSyntaxError,
    defaultfilters,
    defaulttags,
)
from django.template.base import (
    FilterExpression,
    Node,
    NodeList,
    TextNode,
    TokenType,
    Variable,
    VariableDoesNotExist,
    VariableNode,
)
from django.template.defaulttags import ForNode, IfNode, WithNode
from django.utils.dateformat import TimeFormat, re_formatchars
from django.utils.html import escape

from kizuna.campaigns.automation.clock import jst_date
from kizuna.campaigns.automation.models import MessageTemplate, Offer, OfferKind
from kizuna.campaigns.models import Channel
from kizuna.campaigns.unsubscribe import UNSUBSCRIBE_PLACEHOLDER
from kizuna.commerce.models import OrderLine, OrderStatus
from kizuna.customers.models import Customer
from kizuna.loyalty.models import PointEntry
from kizuna.loyalty.selectors import expiring_on, remaining_lots
from kizuna.subscriptions.models import Subscription, SubscriptionStatus

VOID_ORDER = (OrderStatus.CANCELLED, OrderStatus.RETURNED)

MAX_RENDERED = 100_000
"""Characters one rendered part may have: longer is not a message but a mistake (and memory)."""
MAX_FILTERED = 1_000_000
"""Characters the filters of one part may produce together, intermediate results included."""
MAX_LOOPS = 10_000
"""{% for %} rounds one part may go through, nested loops included (their product counts)."""
MAX_WIDTH = 200
"""ljust, rjust and center: the widest a value may be padded to."""
MAX_DECIMALS = 20
"""floatformat: the most digits after the decimal point (Decimal writes every one)."""

TOO_LONG = f"表示すると長くなりすぎます({MAX_RENDERED:,}文字まで)"


class Record(Mapping[str, Any]):
    """A read-only record a template reads fields of ({{ offer.code }}). Printed whole
    ({{ offer }}) it shows its `shown` field — what a customer can read — instead of Python's
    notation for a dict, which would otherwise go out in the message. Read-only because one
    offer is given to every message of a step ({{ offer.clear }} must not empty it)."""

    __slots__ = ("_fields", "_shown")

    def __init__(self, fields: Mapping[str, Any], *, shown: str) -> None:
        self._fields = dict(fields)
        self._shown = shown

    def __getitem__(self, key: str) -> Any:
        return self._fields[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __str__(self) -> str:
        return str(self._fields[self._shown])


class Records(tuple[Record, ...]):
    """A read-only list of records ({% for r in recommendations %}); printed whole, their
    shown fields joined with 「、」 (nothing when empty)."""

    __slots__ = ()

    def __str__(self) -> str:
        return "、".join(str(record) for record in self)


def _recommendation(name: str, price: int) -> Record:
    return Record({"name": name, "price": price}, shown="name")


class _RefusedError(Exception):
    """Rendering stopped for `reason` (Japanese); `where` is the {{ }} or {% %} at fault, ""
    for the part as a whole, None until the node that failed is known."""

    def __init__(self, reason: str, where: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.where = where


@dataclass
class _Budget:
    """What one part's rendering has used so far (see the MAX_* limits)."""

    output: int = 0
    filtered: int = 0
    loops: int = 0


# The budget of the part being rendered: filters get no context, so it is not kept there.
_BUDGET: ContextVar[_Budget | None] = ContextVar("kizuna_template_budget", default=None)


def _spend_filtered(size: int) -> None:
    if size > MAX_RENDERED:
        raise _RefusedError(TOO_LONG)
    budget = _BUDGET.get()
    if budget is not None:
        budget.filtered += size
        if budget.filtered > MAX_FILTERED:
            raise _RefusedError(TOO_LONG)


def _spend_loops(rounds: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.loops += rounds
        if budget.loops > MAX_LOOPS:
            raise _RefusedError(
                f"繰り返しが多すぎます({{% for %}} は入れ子も合わせて{MAX_LOOPS:,}回まで)"
            )


def _spend_output(size: int) -> None:
    budget = _BUDGET.get()
    if budget is not None:
        budget.output += size
        if budget.output > MAX_RENDERED:
            raise _RefusedError(TOO_LONG, where="")


def _number(arg: Any, message: str) -> int:
    try:
        return int(arg)
    except (TypeError, ValueError) as exc:
        raise _RefusedError(message) from exc


def _check_width(value: Any, arg: Any) -> None:
    if _number(arg, "幅は数字で書いてください。例: ljust:10") > MAX_WIDTH:
        raise _RefusedError(f"幅は{MAX_WIDTH}までです")


def _check_wrap(value: Any, arg: Any) -> None:
    if _number(arg, "wordwrap の幅は数字で書いてください。例: wordwrap:30") < 1:
        raise _RefusedError("wordwrap の幅は1以上にしてください")


def _check_decimals(value: Any, arg: Any = -1) -> None:
    # floatformat's argument is a number of digits, optionally followed by g and/or u.
    try:
        digits = int(str(arg).rstrip("gu"))
    except ValueError:
        return  # floatformat shows the value unchanged
    if abs(digits) > MAX_DECIMALS:
        raise _RefusedError(f"小数点以下の桁数は{MAX_DECIMALS}桁までです")


def _check_join(value: Any, arg: Any) -> None:
    # The result is about as long as the separator times the number of items: refused before
    # it is built, not after.
    try:
        size = len(value) * len(str(arg))
    except TypeError:
        return
    if size > MAX_RENDERED:
        raise _RefusedError(TOO_LONG)


# Checks made before a filter runs, on its value and argument.
_CHECKS: dict[str, Callable[..., None]] = {
    "center": _check_width,
    "ljust": _check_width,
    "rjust": _check_width,
    "wordwrap": _check_wrap,
    "floatformat": _check_decimals,
    "join": _check_join,
}


def _time_letters(arg: Any) -> str:
    letters = dict.fromkeys(
        letter for letter in re_formatchars.findall(str(arg or "")) if hasattr(TimeFormat, letter)
    )
    return "・".join(letters)


def _date_only(func: Callable[..., Any]) -> Callable[..., Any]:
    """`date`, refusing a time format on a value that is only a date (last_order_date…)."""

    @functools.wraps(func)
    def date(value: Any, arg: Any = None) -> Any:
        try:
            return func(value, arg)
        except TypeError as exc:
            letters = _time_letters(arg)
            if not letters or not isinstance(value, dt.date) or isinstance(value, dt.datetime):
                raise
            raise _RefusedError(
                f"日付だけの項目なので、時刻の書式({letters})は使えません。"
                "日付の書式(例: Y年n月j日)にしてください"
            ) from exc

    return date


def _limited(func: Callable[..., Any], check: Callable[..., None] | None) -> Callable[..., Any]:
    """`func` with its argument checked first and its result counted against the budget.

    functools.wraps keeps what Django reads from a filter: its flags (is_safe,
    needs_autoescape, expects_localtime) and, through __wrapped__, its signature."""

    @functools.wraps(func)
    def limited(value: Any, *args: Any, **kwargs: Any) -> Any:
        if check is not None:
            check(value, *args)
        result = func(value, *args, **kwargs)
        if isinstance(result, str):
            _spend_filtered(len(result))
        return result

    return limited


library = Library()
for _name in ("if", "for", "with", "firstof", "now", "comment", "verbatim", "spaceless"):
    library.tag(_name, defaulttags.register.tags[_name])
for _name in (
    "add",
    "capfirst",
    "center",
    "cut",
    "date",
    "default",
    "default_if_none",
    "divisibleby",
    "first",
    "floatformat",
    "join",
    "last",
    "length",
    "linebreaks",
    "linebreaksbr",
    "ljust",
    "lower",
    "pluralize",
    "rjust",
    "slice",
    "time",
    "title",
    "truncatechars",
    "truncatewords",
    "upper",
    "urlencode",
    "wordwrap",
    "yesno",
):
    _filter = defaultfilters.register.filters[_name]
    if _name == "date":
        _filter = _date_only(_filter)
    library.filter(_name, _limited(_filter, _CHECKS.get(_name)))


@library.filter
def yen(value: Any) -> str:
    """Integer yen as "¥4,980"."""
    if value in (None, ""):
        return ""
    try:
        return f"¥{int(value):,}"
    except (TypeError, ValueError):
        return ""


@library.filter
def jdate(value: Any) -> str:
    """A date as "2025年3月4日"."""
    if isinstance(value, dt.datetime):
        value = jst_date(value)
    if not isinstance(value, dt.date):
        return ""
    return f"{value.year}年{value.month}月{value.day}日"


@library.filter
def comma(value: Any) -> str:
    """A number with thousands separators: 1,200."""
    try:
        return f"{int(value):,}"
    except (TypeError, ValueError):
        return ""


class _SandboxEngine(Engine):
    # Django always adds its default tags (include, load, url, debug…) to every engine;
    # emptying this list is what leaves only the allowlist above.
    default_builtins: list[str] = []


def _engine(*, autoescape: bool) -> Engine:
    engine = _SandboxEngine(
        dirs=[],
        app_dirs=False,
        loaders=[],
        libraries={},
        autoescape=autoescape,
        string_if_invalid="",
        debug=False,
    )
    engine.template_builtins = [library]
    return engine


TEXT_ENGINE = _engine(autoescape=False)
HTML_ENGINE = _engine(autoescape=True)


class TemplateRenderError(ValueError):
    """A template that cannot be used; `messages` say what to fix."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = messages


def _compile(source: str, engine: Engine, part: str) -> Template:
    try:
        template = engine.from_string(source)
        _guard(template)
    except TemplateSyntaxError as exc:
        raise TemplateRenderError(
            [f"{part}: テンプレートに誤りがあります({_explain(exc)})"]
        ) from exc
    except RecursionError as exc:
        raise TemplateRenderError(
            [f"{part}: テンプレートに誤りがあります(タグの入れ子が深すぎます)"]
        ) from exc
    return template


def _where(node: Node) -> str:
    """The {{ }} or {% %} a node was written as, for a message."""
    token = getattr(node, "token", None)
    if token is None:
        return ""
    contents = token.contents if len(token.contents) <= 60 else token.contents[:60] + "…"
    if token.token_type == TokenType.VAR:
        return f"{{{{ {contents} }}}}"
    if token.token_type == TokenType.BLOCK:
        return f"{{% {contents} %}}"
    return ""


# What a marketer can do about an exception raised while rendering, by its type or a phrase
# of its (English) text; anything else gets the last, general advice.
_REASONS: tuple[tuple[type[BaseException] | str, str], ...] = (
    (ZeroDivisionError, "0で割ることはできません"),
    (OverflowError, "数が大きすぎます"),
    (MemoryError, TOO_LONG),
    (RecursionError, "入れ子が深すぎます"),
    ("not iterable", "{% for %} で繰り返せるのは recommendations のような一覧だけです"),
    (
        "values to unpack",
        "{% for %} で取り出す名前の数が合いません(例: {% for r in recommendations %})",
    ),
)


def _reason(exc: Exception) -> str:
    text = str(exc)
    for kind, reason in _REASONS:
        if isinstance(kind, str) and kind in text:
            return reason
        if isinstance(kind, type) and isinstance(exc, kind):
            return reason
    return "値と書き方の組み合わせを確かめてください"


def _guard(template: Template) -> None:
    """Make the nodes of `template` that can fail do so only with a _RefusedError naming
    them, and count what its loops do against the budget.

    Every node is rendered through its render_annotated (by its parent, or by the template
    for the top ones), so replacing that method on a node reaches it wherever it is. Text and
    a plain {{ name }} cannot fail: they are left alone (the scheduler renders them for every
    message), unless they are in a loop. Output is counted only in loops — elsewhere each
    node renders once, and the template's own length, the filters' budget and the final check
    on the part's length bound it — and only by nodes without children, so each character is
    counted once."""
    looped: set[int] = set()
    for loop in template.nodelist.get_nodes_by_type(ForNode):
        if not isinstance(loop, ForNode):
            continue
        if isinstance(loop.sequence, FilterExpression):
            loop.sequence = _Rounds(loop.sequence)  # type: ignore[assignment]
        for nodelist in (loop.nodelist_loop, loop.nodelist_empty):
            if isinstance(nodelist, NodeList):
                looped.update(id(node) for node in nodelist.get_nodes_by_type(Node))
    for node in template.nodelist.get_nodes_by_type(Node):
        counted = id(node) in looped and node.get_nodes_by_type(Node) == [node]
        plain = isinstance(node, TextNode) or (
            isinstance(node, VariableNode) and not node.filter_expression.filters
        )
        if not plain:
            _guard_node(node, counted=counted)
        elif counted:
            _count_output(node)


def _count_output(node: Node) -> None:
    render_annotated = cast(Callable[[Context], str], node.render_annotated)

    def counted(context: Context) -> str:
        output = render_annotated(context)
        _spend_output(len(output))
        return output

    node.render_annotated = counted  # type: ignore[method-assign]


def _guard_node(node: Node, *, counted: bool) -> None:
    where = _where(node)
    render_annotated = cast(Callable[[Context], str], node.render_annotated)

    def guarded(context: Context) -> str:
        try:
            output = render_annotated(context)
        except VariableDoesNotExist:
            # A name missing from a filter's argument ({{ x|default:offer.code }} in a step
            # without offer): empty, as any name missing from the context renders.
            return ""
        except _RefusedError as exc:
            if exc.where is None:
                exc.where = where
            raise
        except Exception as exc:
            raise _RefusedError(_reason(exc), where) from exc
        if counted:
            _spend_output(len(output))
        return output

    node.render_annotated = guarded  # type: ignore[method-assign]


class _Rounds:
    """A {% for %}'s sequence, its rounds counted (all of them once the sequence is known)."""

    def __init__(self, sequence: FilterExpression) -> None:
        self.sequence = sequence

    def resolve(self, context: Context, ignore_failures: bool = False) -> Any:
        values = self.sequence.resolve(context, ignore_failures=ignore_failures)
        if values is not None and hasattr(values, "__len__"):
            _spend_loops(len(values))
        return values

    def __str__(self) -> str:
        return str(self.sequence)


def _misplaced_or_unknown_tag(quoted: list[str]) -> str:
    tag = quoted[0] if quoted else ""
    if len(quoted) > 1:  # "…'endfor', expected 'elif', 'else' or 'endif'"
        return f"「{{% {tag} %}}」の位置が正しくありません(ここで閉じられるのは {'・'.join(quoted[1:])} です)"
    return f"「{{% {tag} %}}」は使えません。使えるのは if・for・with・firstof・now です"


IF_HINT = "{% if %} の条件の書き方に誤りがあります(例: {% if points_balance %})"

# Django's (English) syntax errors, by a phrase each contains, in the words a marketer needs:
# what to look for. Each maker gets the error's text and its quoted parts.
_EXPLANATIONS: tuple[tuple[str, Callable[[str, list[str]], str]], ...] = (
    ("Invalid block tag", lambda _, q: _misplaced_or_unknown_tag(q)),
    ("Invalid filter", lambda _, q: f"フィルタ「{q[0] if q else ''}」は使えません"),
    ("may not begin with underscores", lambda _, q: "「_」で始まる名前は使えません"),
    ("Unclosed tag", lambda _, q: "閉じていないタグがあります(endif・endfor など)"),
    ("Empty variable tag", lambda _, q: "{{ }} の中が空です。差し込む項目名を書いてください"),
    ("in if tag", lambda _, q: IF_HINT),
    ("if expression", lambda _, q: IF_HINT),
    ("'if' statement", lambda _, q: IF_HINT),
    (
        "'for' statements",
        lambda _, q: "{% for %} は {% for r in recommendations %} の形で書いてください",
    ),
    (
        "requires 2 arguments",
        lambda t, q: f"フィルタ「{t.split(' ', 1)[0]}」には「:」のあとに値が必要です",
    ),
    (
        "Could not parse the remainder",
        lambda _, q: (
            f"「{q[0] if q else ''}」の部分を読み取れません(記号や閉じていない引用符を確かめてください)"
        ),
    ),
)


def _explain(exc: TemplateSyntaxError) -> str:
    text = str(exc)
    quoted = re.findall(r"'([^']*)'", text)
    for phrase, explain in _EXPLANATIONS:
        if phrase in text:
            return explain(text, quoted)
    # Anything rarer: no English on the page, but where to look.
    return "{{ }} や {% %} の書き方を読み取れません。閉じ忘れや綴りを確かめてください"


# A template made only of text and plain `{{ name }}` variables, as its pieces in order: a
# str is text, a 1-tuple names a context key. None when the template uses anything else.
Plan = tuple[str | tuple[str], ...] | None


def _plan(template: Template) -> Plan:
    pieces: list[str | tuple[str]] = []
    for node in template.nodelist:
        if isinstance(node, TextNode):
            pieces.append(node.s)
            continue
        if not isinstance(node, VariableNode):
            return None
        expression = node.filter_expression
        var = expression.var
        if (
            expression.filters
            or not isinstance(var, Variable)
            or var.translate
            or var.lookups is None
            or len(var.lookups) != 1
        ):
            return None
        pieces.append((var.lookups[0],))
    return tuple(pieces)


def _render_plan(plan: Plan, context: Mapping[str, Any], autoescape: bool) -> str | None:
    """What Django renders for `plan`, without building a Context — or None when a value is
    not plain text (a number, a date, a missing key…), which Django's own rendering formats."""
    if plan is None:
        return None
    out: list[str] = []
    for piece in plan:
        if isinstance(piece, str):
            out.append(piece)
            continue
        value = context.get(piece[0])
        if type(value) is not str:
            return None
        out.append(escape(value) if autoescape else value)
    return "".join(out)


@dataclass(frozen=True)
class CompiledTemplate:
    """A template's three parts, compiled once per step and rendered once per message.

    Most message templates are text with `{{ name }}`-style variables; for those `plans`
    render by joining strings (≈ 1 µs a part instead of ≈ 15 µs), producing exactly what
    Django would. Anything else — tags, filters, dotted names, non-text values — goes through
    Django's renderer.
    """

    subject: Template
    text: Template
    html: Template | None
    uses: frozenset[str]
    plans: tuple[Plan, Plan, Plan] = (None, None, None)

    def render(self, context: Mapping[str, Any]) -> dict[str, str]:
        """The parts rendered for `context`; TemplateRenderError, every failing part named,
        when one cannot be."""
        subject_plan, text_plan, html_plan = self.plans
        try:
            rendered = {
                "subject": _render(self.subject, subject_plan, context, "件名").strip(),
                "text": _render(self.text, text_plan, context, "本文"),
            }
            if self.html is not None:
                rendered["html"] = _render(self.html, html_plan, context, "HTML本文")
        except TemplateRenderError as exc:
            raise TemplateRenderError(self._errors(context) or exc.messages) from exc
        return rendered

    def _errors(self, context: Mapping[str, Any]) -> list[str]:
        """What is wrong with each part for `context` (the parts rendered again, one by one:
        a failure is rare, and this keeps render's usual path as short as it was)."""
        errors: list[str] = []
        for template, plan, part in (
            (self.subject, self.plans[0], "件名"),
            (self.text, self.plans[1], "本文"),
            (self.html, self.plans[2], "HTML本文"),
        ):
            if template is None:
                continue
            try:
                _render(template, plan, context, part)
            except TemplateRenderError as exc:
                errors.extend(exc.messages)
        return errors


def _render(template: Template, plan: Plan, context: Mapping[str, Any], part: str) -> str:
    """One part rendered: the one place a template's rendering can fail, always as a
    TemplateRenderError saying in Japanese what to fix (the preview shows it, the template
    page refuses to save, the scheduler reports it) and within the MAX_* limits."""
    autoescape = template.engine.autoescape
    output = _render_plan(plan, context, autoescape)
    if output is None:
        budget = _BUDGET.set(_Budget())
        try:
            output = template.render(Context(dict(context), autoescape=autoescape))
        except _RefusedError as exc:
            said = f"「{exc.where}」を表示できません({exc.reason})" if exc.where else exc.reason
            raise TemplateRenderError([f"{part}: {said}"]) from exc
        except Exception as exc:
            # Every node is guarded (_guard): this is only for what happens around them.
            raise TemplateRenderError(
                [f"{part}: テンプレートを表示できません({_reason(exc)})"]
            ) from exc
        finally:
            _BUDGET.reset(budget)
    if len(output) > MAX_RENDERED:
        raise TemplateRenderError([f"{part}: {TOO_LONG}"])
    return output


CONTEXT_KEYS = (
    "name",
    "family_name",
    "given_name",
    "product",
    "last_product",
    "last_order_date",
    "points_balance",
    "points_expiring",
    "points_expiry_date",
    "next_delivery_date",
    "recommendations",
    "offer",
    "unsubscribe_url",
)


# What each name a template is given means, for the message listing them (CONTEXT_KEYS order).
CONTEXT_LABELS: dict[str, str] = {
    "name": "氏名",
    "family_name": "姓",
    "given_name": "名",
    "product": "商品",
    "last_product": "前回の購入商品",
    "last_order_date": "前回の購入日",
    "points_balance": "ポイント残高",
    "points_expiring": "失効予定ポイント",
    "points_expiry_date": "ポイント失効日",
    "next_delivery_date": "次回お届け日",
    "recommendations": "おすすめ商品",
    "offer": "オファー",
    "unsubscribe_url": "配信停止リンク",
}
KNOWN_NAMES = "、".join(f"{key}({CONTEXT_LABELS[key]})" for key in CONTEXT_KEYS)
# Django's own names in every context ({% if points_balance == None %}).
_BUILTIN_NAMES = frozenset({"True", "False", "None"})
# Text that is a tag left unclosed (or closed without being opened): Django keeps it as text,
# and customers would get the braces. The HTML part is checked for openers only: CSS may end
# rules with "}}" or "100%}".
_LEFTOVERS: tuple[tuple[str, str], ...] = (
    ("{{", "{{ の閉じ忘れがあります"),
    ("{%", "{% の閉じ忘れがあります"),
    ("}}", "}} の前の {{ が抜けています"),
    ("%}", "%} の前の {% が抜けています"),
)


# The fields of the records a template is given ({{ offer.code }}), with what each means, for
# the message listing them: offer_context's, and each of the recommendations' (_recommendation).
OFFER_FIELDS: dict[str, str] = {
    "name": "名前",
    "label": "表示名",
    "code": "クーポンコード",
    "value": "値",
    "expires_on": "有効期限",
}
RECOMMENDATION_FIELDS: dict[str, str] = {"name": "商品名", "price": "価格"}
RECORD_FIELDS: dict[str, Mapping[str, str]] = {
    "offer": OFFER_FIELDS,
    "recommendations": RECOMMENDATION_FIELDS,
}
"""Names whose fields are checked. Those in LISTS_OF_RECORDS are lists: the fields are their
items' (the name {% for r in recommendations %} binds, recommendations.0)."""
LISTS_OF_RECORDS = frozenset({"recommendations"})

# What kind of value each other name, and each field of a record, holds (customer_contexts,
# offer_context, _recommendation): an attribute the kind does not have ({{ name.foo }},
# {{ last_order_date.yeer }}, {{ offer.expires_on.yeer }}) renders empty, so saving refuses it.
# A value may also be None (no order yet), which renders empty whatever is looked up.
TEXT, NUMBER, DATE = "text", "number", "date"
VALUE_KINDS: dict[str, str] = {
    "name": TEXT,
    "family_name": TEXT,
    "given_name": TEXT,
    "product": TEXT,
    "last_product": TEXT,
    "last_order_date": DATE,
    "points_balance": NUMBER,
    "points_expiring": NUMBER,
    "points_expiry_date": DATE,
    "next_delivery_date": DATE,
    "unsubscribe_url": TEXT,
}
"""By field name: a field means the same kind of value in every record (offer.name, r.name)."""
FIELD_KINDS: dict[str, str] = {
    "name": TEXT,
    "label": TEXT,
    "code": TEXT,
    "value": NUMBER,
    "expires_on": DATE,
    "price": NUMBER,
}
# What Django finds on each kind: its Python attributes ({{ name.upper }}, {{ d.isoformat }}),
# and for a text a character by position ({{ name.0 }}).
_ATTRIBUTES: dict[str, frozenset[str]] = {
    kind: frozenset(a for a in dir(python_type) if not a.startswith("_"))
    for kind, python_type in ((TEXT, str), (NUMBER, int), (DATE, dt.date))
}
# The attributes the refusal lists (none for a text or a number: used as they are).
_SHOWN_ATTRIBUTES: dict[str, Mapping[str, str]] = {
    TEXT: {},
    NUMBER: {},
    DATE: {"year": "年", "month": "月", "day": "日"},
}


def _has_attribute(kind: str, lookup: str) -> bool:
    return lookup in _ATTRIBUTES[kind] or (kind == TEXT and lookup.isdigit())


@dataclass
class _Found:
    """What _walk finds: names not given (first name → the {{ }} or {% %} written in), fields
    records do not have (「offer.cod」 → where, and the record's fields), and the text between
    tags."""

    unknown: dict[str, str]
    fields: dict[str, tuple[str, Mapping[str, str]]]
    texts: list[str]


@dataclass(frozen=True)
class _Scope:
    """The names known where a node is, and the records among them whose fields are known."""

    known: frozenset[str]
    records: Mapping[str, Mapping[str, str]]
    kinds: Mapping[str, str]  # the other names whose kind is known (VALUE_KINDS)

    def bind(self, names: Iterable[str], records: Mapping[str, Mapping[str, str]]) -> _Scope:
        """With `names` bound: a record only if given in `records`, otherwise unchecked."""
        bound = set(names)
        kept = {name: fields for name, fields in self.records.items() if name not in bound}
        kinds = {name: kind for name, kind in self.kinds.items() if name not in bound}
        return _Scope(self.known | bound, {**kept, **records}, kinds)


def _strict_problems(template: Template, part: str, *, html: bool) -> list[str]:
    """What saving refuses in a compiled part beyond Django's syntax: a {{ name }} the
    template is not given (it would render empty: 「様」 addressed to nobody), a field a
    record does not have ({{ offer.cod }}: empty too) and a tag left as text ({{ last_name }様).
    Names bound in the template itself — {% for r in … %} with forloop, {% with x=… %},
    {% firstof … as x %}, {% now … as x %} — count where they are bound."""
    found = _Found({}, {}, [])
    assigned = frozenset(
        str(getattr(node, "asvar", ""))
        for node in template.nodelist.get_nodes_by_type(Node)
        if getattr(node, "asvar", None)
    )
    scope = _Scope(frozenset(CONTEXT_KEYS) | _BUILTIN_NAMES, RECORD_FIELDS, VALUE_KINDS).bind(
        assigned, {}
    )
    _walk(template.nodelist, scope, found)

    def no_such(places: Mapping[str, str], usable: str) -> str:
        """「{{ x }} という項目はありません。…」 for names (a name → where it is written)."""
        named = "、".join(
            where if where == f"{{{{ {name} }}}}" else f"{where} の「{name}」"
            for name, where in places.items()
        )
        space = "" if named.endswith("」") else " "
        return f"{part}: {named}{space}という項目はありません。{usable}"

    problems: list[str] = []
    if found.unknown:
        problems.append(no_such(found.unknown, f"使える項目: {KNOWN_NAMES}"))
    for name, (where, fields) in found.fields.items():
        owner = name.rpartition(".")[0]
        usable = (
            "使える項目: " + "、".join(f"{owner}.{key}({label})" for key, label in fields.items())
            if fields
            else f"{owner} に項目はありません({{{{ {owner} }}}} と書いてください)"
        )
        problems.append(no_such({name: where}, usable))
    leftovers = _LEFTOVERS[:2] if html else _LEFTOVERS
    for marker, said in leftovers:
        for text in found.texts:
            at = text.find(marker)
            if at >= 0:
                near = text[max(0, at - 10) : at + 20].strip()
                problems.append(f"{part}: {said}(「{near}」の近く)")
                break
    return problems


def _walk(nodes: Iterable[Node], scope: _Scope, found: _Found) -> None:
    for node in nodes:
        where = _where(node)
        if isinstance(node, TextNode):
            found.texts.append(node.s)
        elif isinstance(node, VariableNode):
            _check_expression(node.filter_expression, scope, found, where)
        elif isinstance(node, ForNode | WithNode):
            _walk_binding(node, scope, found)
        elif isinstance(node, IfNode):
            for condition, branch in node.conditions_nodelists:
                _check_condition(condition, scope, found, where)
                _walk(branch, scope, found)
        else:
            for value in getattr(node, "vars", None) or ():  # {% firstof %}
                _check_expression(value, scope, found, where)
            for attribute in node.child_nodelists:
                child = getattr(node, attribute, None)
                if isinstance(child, NodeList):
                    _walk(child, scope, found)


def _walk_binding(node: ForNode | WithNode, scope: _Scope, found: _Found) -> None:
    """{% for %} and {% with %}: their values read with the names known outside, their
    contents with the names they bind as well ({% for r in recommendations %}: r has the
    fields of a recommendation)."""
    where = _where(node)
    if isinstance(node, WithNode):
        for value in node.extra_context.values():
            _check_expression(value, scope, found, where)
        _walk(node.nodelist, scope.bind(node.extra_context, {}), found)
        return
    sequence = node.sequence
    if isinstance(sequence, _Rounds):  # counted by _guard
        sequence = sequence.sequence
    _check_expression(sequence, scope, found, where)
    records: dict[str, Mapping[str, str]] = {}
    variable = getattr(sequence, "var", None)
    if (
        len(node.loopvars) == 1
        and isinstance(sequence, FilterExpression)
        and not sequence.filters
        and isinstance(variable, Variable)
        and len(variable.lookups or ()) == 1
        and (name := str((variable.lookups or ("",))[0])) in LISTS_OF_RECORDS
        and name in scope.records
    ):
        records[node.loopvars[0]] = scope.records[name]
    loop, empty = cast(NodeList, node.nodelist_loop), cast(NodeList, node.nodelist_empty)
    _walk(loop, scope.bind([*node.loopvars, "forloop"], records), found)
    _walk(empty, scope, found)


def _check_condition(condition: Any, scope: _Scope, found: _Found, where: str) -> None:
    """An {% if %} condition: a smartif tree of literals (`value`) and operators."""
    if condition is None:
        return
    value = getattr(condition, "value", None)
    if isinstance(value, FilterExpression):
        _check_expression(value, scope, found, where)
    for side in (getattr(condition, "first", None), getattr(condition, "second", None)):
        _check_condition(side, scope, found, where)


def _check_expression(expression: Any, scope: _Scope, found: _Found, where: str) -> None:
    if not isinstance(expression, FilterExpression):
        return
    variables = [expression.var] + [
        arg for _, args in expression.filters for lookup, arg in args if lookup
    ]
    for variable in variables:
        if not isinstance(variable, Variable) or variable.lookups is None:
            continue  # a literal: "text", 3
        lookups = [str(part) for part in variable.lookups]
        first = lookups[0]
        if first not in scope.known:
            found.unknown.setdefault(first, where)
            continue
        fields = scope.records.get(first)
        rest = lookups[1:]
        if first in LISTS_OF_RECORDS:
            # recommendations.0.name: an item's field; the list's own attributes unchecked
            if fields is None or not rest or not rest[0].isdigit():
                continue
            first, rest = f"{first}.{rest[0]}", rest[1:]
        kind = scope.kinds.get(first)
        if fields is not None and rest:
            if rest[0] not in fields:
                found.fields.setdefault(f"{first}.{rest[0]}", (where, fields))
                continue
            # offer.expires_on.year: an attribute of the field's value
            first, rest, kind = f"{first}.{rest[0]}", rest[1:], FIELD_KINDS.get(rest[0])
        if kind is not None and rest and not _has_attribute(kind, rest[0]):
            found.fields.setdefault(f"{first}.{rest[0]}", (where, _SHOWN_ATTRIBUTES[kind]))


def compile_template(
    *, subject: str, text: str, html: str = "", strict: bool = True
) -> CompiledTemplate:
    """Compile the three parts, refusing (TemplateRenderError) anything outside the sandbox.

    `strict` (saving, the preview) also refuses a name the template is not given and a {{ or
    {% left as text (`_strict_problems`); a stored template is compiled without it
    (`compile_stored`), so one saved before these checks keeps being sent as it was."""
    errors: list[str] = []
    parts: dict[str, Template | None] = {}
    for name, source, engine, label in (
        ("subject", subject, TEXT_ENGINE, "件名"),
        ("text", text, TEXT_ENGINE, "本文"),
        ("html", html, HTML_ENGINE, "HTML本文"),
    ):
        if name == "html" and not source.strip():
            parts[name] = None
            continue
        try:
            parts[name] = compiled = _compile(source, engine, label)
        except TemplateRenderError as exc:
            errors.extend(exc.messages)
            continue
        if strict:
            errors.extend(_strict_problems(compiled, label, html=name == "html"))
    if not subject.strip():
        errors.insert(0, "件名を入力してください")
    if not text.strip():
        errors.insert(0, "本文を入力してください")
    if errors:
        raise TemplateRenderError(errors)
    source = subject + text + html
    uses = frozenset(key for key in CONTEXT_KEYS if key in source)
    subject_t, text_t = parts["subject"], parts["text"]
    assert subject_t is not None  # noqa: S101 - compiled above
    assert text_t is not None  # noqa: S101 - compiled above
    html_t = parts["html"]
    plans = (_plan(subject_t), _plan(text_t), _plan(html_t) if html_t is not None else None)
    return CompiledTemplate(subject=subject_t, text=text_t, html=html_t, uses=uses, plans=plans)


def prints_offer_unguarded(compiled: CompiledTemplate) -> bool:
    """Whether a part prints {{ offer… }} outside an {% if offer… %}: in a step without an
    offer that prints nothing, and 「今なら でお届けします。クーポンコード: (まで)」 goes out."""
    parts = (compiled.subject, compiled.text, compiled.html)
    return any(_offer_unguarded(part.nodelist) for part in parts if part is not None)


def _offer_unguarded(nodes: NodeList) -> bool:
    for node in nodes:
        branches: list[Any]
        if isinstance(node, IfNode):
            branches = [
                branch
                for condition, branch in node.conditions_nodelists
                if condition is None or not _mentions_offer(condition)
            ]
        elif isinstance(node, VariableNode):
            variable = node.filter_expression.var
            if isinstance(variable, Variable) and str(variable.var).split(".")[0] == "offer":
                return True
            continue
        else:
            branches = [getattr(node, name, None) for name in node.child_nodelists]
        if any(isinstance(b, NodeList) and _offer_unguarded(b) for b in branches):
            return True
    return False


def _mentions_offer(condition: Any) -> bool:
    """Whether an {% if %} condition reads the offer (a smartif tree of literals and operators)."""
    text = getattr(condition, "text", None)
    if text is not None:
        return str(text).split(".")[0].split("|")[0] == "offer"
    return any(
        _mentions_offer(part)
        for part in (getattr(condition, "first", None), getattr(condition, "second", None))
        if part is not None
    )


def compile_stored(template: MessageTemplate) -> CompiledTemplate:
    """A saved template, compiled for sending: without the save-time checks of names and
    leftover braces (`strict`), which a template saved before them may break."""
    return compile_template(
        subject=template.subject, text=template.text, html=template.html, strict=False
    )


def content_for(channel: str, rendered: Mapping[str, str]) -> dict[str, str]:
    """Rendered parts as the outbox content keys of `channel` (docs/automation.md, Outbox)."""
    subject, text = rendered["subject"], rendered["text"]
    if channel == Channel.EMAIL:
        content = {"subject": subject, "text": text}
        if rendered.get("html"):
            content["html"] = rendered["html"]
        return content
    if channel in (Channel.LINE, Channel.SMS):
        return {"text": text}
    if channel in (Channel.POSTAL, Channel.INSERT, Channel.ONSITE):
        return {"title": subject, "text": text}
    if channel == Channel.CALL:
        return {"reason": subject, "script": text}
    content = {"subject": subject, "text": text}
    if rendered.get("html"):
        content["html"] = rendered["html"]
    return content


def offer_context(offer: Offer | None, *, today: dt.date) -> Mapping[str, Any] | None:
    """The step's offer for the template: read-only, as the scheduler gives the same one to
    every message of the step (a dict's {{ offer.clear }} would empty it for the next ones)."""
    if offer is None:
        return None
    return Record(
        {
            "name": offer.name,
            "label": offer.label,
            "code": offer.code,
            "value": offer.value,
            "expires_on": today + dt.timedelta(days=offer.valid_days),
        },
        shown="label",
    )


def customer_contexts(
    customer_ids: Iterable[int],
    *,
    today: dt.date,
    uses: frozenset[str] = frozenset(CONTEXT_KEYS),
    recommendations: Mapping[int, list[tuple[int, str, int]]] | None = None,
) -> dict[int, dict[str, Any]]:
    """The template context of each customer, as plain values, from one query per 10,000
    customers (plus one for what they bought, when recommendations are used).

    Only the columns the template `uses` are read. `recommendations` maps a product id to its
    co-purchase list [(product id, name, price)] (recommendations.copurchase_table).
    """
    # In id order: each chunk then reads neighbouring customers, orders and order lines, so
    # the pages it needs are mostly ones the previous chunk already read. Ids in the order a
    # tick finds them (enrollment order, e.g. by registration) scatter every chunk over the
    # whole database and cost twice the CPU (95,000 customers: 0.6 s against 0.3 s on SQLite).
    ids = sorted(set(customer_ids))
    result: dict[int, dict[str, Any]] = {}
    for start in range(0, len(ids), CONTEXT_CHUNK):
        chunk = ids[start : start + CONTEXT_CHUNK]
        result.update(_context_chunk(chunk, today, uses, recommendations))
    return result


CONTEXT_CHUNK = 10_000


def _among(ids: list[int]) -> RawSQL:
    """`ids` for `pk__in=` as one parameter (a JSON array on SQLite, an array on PostgreSQL).

    Django turns `pk__in=[…]` into one placeholder per id and prepares each of them: ≈ 0.2 s
    of a tick's CPU for 95,000 customers, and SQLite refuses more than 32,766 placeholders."""
    if connection.vendor == "postgresql":
        return RawSQL("SELECT unnest(%s::bigint[])", (ids,))
    return RawSQL("SELECT value FROM json_each(%s)", (json.dumps(ids),))


def _context_chunk(
    ids: list[int],
    today: dt.date,
    uses: frozenset[str],
    recommendations: Mapping[int, list[tuple[int, str, int]]] | None,
) -> dict[int, dict[str, Any]]:
    rows = Customer.objects.filter(pk__in=_among(ids))
    fields = ["pk", "family_name", "given_name"]
    lines = OrderLine.objects.filter(order__customer=OuterRef("pk")).exclude(
        order__status__in=VOID_ORDER
    )
    last_line = lines.order_by("-order__ordered_at", "-order_id", "id")
    want_recs = "recommendations" in uses and recommendations is not None
    if "last_product" in uses:
        rows = rows.annotate(last_product=Subquery(last_line.values("product_name")[:1]))
        fields.append("last_product")
    if want_recs:
        # Each of these subqueries is a search per customer: only what the template uses.
        rows = rows.annotate(last_product_id=Subquery(last_line.values("product_id")[:1]))
        fields.append("last_product_id")
    if "last_order_date" in uses:
        rows = rows.annotate(last_ordered_at=Subquery(last_line.values("order__ordered_at")[:1]))
        fields.append("last_ordered_at")
    if "points_balance" in uses:
        entries = PointEntry.objects.filter(customer=OuterRef("pk"))
        rows = rows.annotate(
            balance=Subquery(entries.order_by("-seq").values("balance_after")[:1]),
        )
        fields.append("balance")
    if "next_delivery_date" in uses:
        subs = Subscription.objects.filter(
            customer=OuterRef("pk"), status=SubscriptionStatus.ACTIVE, next_delivery_on__gte=today
        )
        rows = rows.annotate(
            next_delivery=Subquery(
                subs.order_by().values("customer").annotate(m=Min("next_delivery_on")).values("m")
            )
        )
        fields.append("next_delivery")
    # Tuples read by position rather than a dict per row (values()) and a lookup per key:
    # this loop runs once per message of a tick.
    column = {name: index for index, name in enumerate(fields)}
    product_at, product_id_at, ordered_at = (
        column.get(name) for name in ("last_product", "last_product_id", "last_ordered_at")
    )
    balance_at, delivery_at = (column.get(name) for name in ("balance", "next_delivery"))
    contexts: dict[int, dict[str, Any]] = {}
    last_product_ids: dict[int, int] = {}
    for row in rows.values_list(*fields):
        pk, family, given = row[0], row[1], row[2]
        ordered = None if ordered_at is None else row[ordered_at]
        contexts[pk] = {
            "name": f"{family} {given}".strip(),
            "family_name": family,
            "given_name": given,
            # The delivery worker puts the customer's own one-click link here (S5, S8).
            "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
            "last_product": ("" if product_at is None else row[product_at]) or "",
            "last_order_date": jst_date(ordered) if ordered else None,
            "points_balance": (0 if balance_at is None else row[balance_at]) or 0,
            "points_expiring": 0,
            "points_expiry_date": None,
            "next_delivery_date": None if delivery_at is None else row[delivery_at],
            "recommendations": Records(),
        }
        if product_id_at is not None and row[product_id_at] is not None:
            last_product_ids[pk] = row[product_id_at]
    if uses & {"points_expiring", "points_expiry_date"}:
        _fill_expiring(contexts, ids, today)
    if want_recs and recommendations is not None:
        _fill_recommendations(contexts, last_product_ids, recommendations)
    return contexts


def _fill_expiring(contexts: dict[int, dict[str, Any]], ids: list[int], today: dt.date) -> None:
    # The soonest date from `today` on which the customer still holds points, and how many
    # expire then: what is left of them once the points used are taken soonest first
    # (loyalty.selectors, the rule the "points expiring" trigger applies).
    for customer_id, lots in remaining_lots(_among(ids)).items():
        context = contexts.get(customer_id)
        if context is None:
            continue
        for day, points in lots:
            if day >= today:
                context["points_expiry_date"], context["points_expiring"] = day, points
                break


def points_expiry_values(
    messages: Iterable[tuple[int, dt.date, dt.datetime | None]],
) -> dict[tuple[int, dt.date], int]:
    """For messages about points expiring on a given date (the "points expiring" trigger's
    enrollments): the points each (customer, date) still holds expiring then, counting the
    ledger up to the given moment (None: all of it), from one query per 10,000 customers.
    A message whose points are all used or gone (0) is not sent."""
    wanted = sorted(set(messages), key=lambda m: (m[0], m[1]))
    result: dict[tuple[int, dt.date], int] = {}
    ids = sorted({m[0] for m in wanted})
    for start in range(0, len(ids), CONTEXT_CHUNK):
        chunk = ids[start : start + CONTEXT_CHUNK]
        first, last = chunk[0], chunk[-1]
        result.update(
            expiring_on(
                [m for m in wanted if first <= m[0] <= last],
                customers=_among(chunk),
            )
        )
    return result


def _fill_recommendations(
    contexts: dict[int, dict[str, Any]],
    last_product_ids: Mapping[int, int],
    table: Mapping[int, list[tuple[int, str, int]]],
) -> None:
    bought: dict[int, set[int]] = {}
    pairs = (
        OrderLine.objects.filter(order__customer_id__in=_among(list(contexts)))
        .values_list("order__customer_id", "product_id")
        .distinct()
    )
    for customer_id, product_id in pairs:
        bought.setdefault(customer_id, set()).add(product_id)
    for pk, last in last_product_ids.items():
        owned = bought.get(pk, set())
        contexts[pk]["recommendations"] = Records(
            [
                _recommendation(name, price)
                for product_id, name, price in table.get(last, [])
                if product_id not in owned
            ][:3]
        )


def sample_context(today: dt.date) -> dict[str, Any]:
    """A made-up customer, to check a template renders before a real customer is picked, with
    dates around `today` (the preview must not show an offer that expired months ago)."""
    return {
        "name": "山田 花子",
        "family_name": "山田",
        "given_name": "花子",
        "product": "薬用ホワイトニング美容液 30日分",
        "last_product": "薬用ホワイトニング美容液 トライアルセット",
        "last_order_date": today - dt.timedelta(days=30),
        "points_balance": 1200,
        "points_expiring": 300,
        "points_expiry_date": today + dt.timedelta(days=60),
        "next_delivery_date": today + dt.timedelta(days=14),
        "recommendations": Records([_recommendation("うるおい保湿クリーム 50g", 3280)]),
        # Built as a real step's offer is, so it has every field a template may print.
        "offer": offer_context(
            Offer(
                name="本品1,000円OFF",
                kind=OfferKind.YEN_OFF,
                value=1000,
                code="WELCOME1000",
                valid_days=30,
            ),
            today=today,
        ),
        "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
    }


SAMPLE_CONTEXT: dict[str, Any] = sample_context(dt.date(2026, 5, 1))
"""The made-up customer on a fixed day, for the save check (render_check), which every save
of the process shares: its offer and recommendations are read-only, so {{ offer.clear }} or
{{ recommendations.pop }} cannot change them."""


NEW_CUSTOMER_CONTEXT: dict[str, Any] = {
    **SAMPLE_CONTEXT,
    "product": "",
    "last_product": "",
    "last_order_date": None,
    "points_balance": 0,
    "points_expiring": 0,
    "points_expiry_date": None,
    "next_delivery_date": None,
    "recommendations": Records(),
    "offer": None,
}
"""A customer with nothing yet — no order, points or subscription — in a step without offer:
the other end of what a template meets."""


def render_check(compiled: CompiledTemplate) -> None:
    """Refuse (TemplateRenderError) a template that cannot be rendered for the made-up
    customer or for a customer with nothing yet.

    What fails for every customer (a time format on a date…) is found here rather than by
    the scheduler at every tick; what fails for empty values only (a division by a count
    that can be 0) is found too, and said so."""
    found: dict[str, str] = {}  # message → the message as shown
    for context, note in (
        (SAMPLE_CONTEXT, ""),
        (NEW_CUSTOMER_CONTEXT, "(購入やポイントがまだないお客様・オファーのないステップの場合)"),
    ):
        try:
            compiled.render(context)
        except TemplateRenderError as exc:
            for message in exc.messages:
                found.setdefault(message, message + note)
    if found:
        raise TemplateRenderError(list(found.values()))
