"""Date functions written natively for each database, for the scenario queries.

Triggers compare months and days over a million customers every tick, and a scenario's lift
compares every order with a window after its enrollment. Django's own date functions and
`F(...) + timedelta` run as Python callbacks per row on SQLite; these are strftime/date() in
C there, and plain SQL on PostgreSQL. Japan keeps no summer time, so the Japanese calendar is
UTC + 9 hours on both.

Each function gives one SQL template per database. The `%` of strftime formats is doubled
twice: once for Django's template, once for the driver's parameter style.
"""

from __future__ import annotations

from typing import Any

from django.db.models import CharField, DateField, DateTimeField, Func, IntegerField


class _NativeDateFunc(Func):
    """A Func whose SQL is a template per database (`sqlite()` / `postgresql()`)."""

    def sqlite(self) -> str:
        raise NotImplementedError

    def postgresql(self) -> str:
        raise NotImplementedError

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template=self.sqlite(), **extra)

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        return self.as_sql(compiler, connection, template=self.postgresql(), **extra)


class MonthDay(_NativeDateFunc):
    """ "MM-DD" of a date, or of a moment (`moment=True`) on the Japanese calendar."""

    output_field = CharField()

    def __init__(self, expression: Any, *, moment: bool = False) -> None:
        super().__init__(expression)
        self.moment = moment

    def sqlite(self) -> str:
        shift = ", '+9 hours'" if self.moment else ""
        return f"strftime('%%%%m-%%%%d', %(expressions)s{shift})"

    def postgresql(self) -> str:
        value = "(%(expressions)s AT TIME ZONE 'Asia/Tokyo')" if self.moment else "%(expressions)s"
        return f"to_char({value}, 'MM-DD')"


class MonthOf(_NativeDateFunc):
    """The month (1–12) of a date, as an integer."""

    output_field = IntegerField()

    def sqlite(self) -> str:
        return "CAST(strftime('%%%%m', %(expressions)s) AS integer)"

    def postgresql(self) -> str:
        return "CAST(EXTRACT(MONTH FROM %(expressions)s) AS integer)"


class JstDate(_NativeDateFunc):
    """The Japanese calendar date of a moment."""

    output_field = DateField()

    def sqlite(self) -> str:
        return "date(%(expressions)s, '+9 hours')"

    def postgresql(self) -> str:
        return "((%(expressions)s) AT TIME ZONE 'Asia/Tokyo')::date"


class JstMidnight(_NativeDateFunc):
    """0:00 JST of a date, as a moment (what clock.jst_at gives)."""

    output_field = DateTimeField()

    def sqlite(self) -> str:
        # Stored as Django stores aware moments on SQLite: UTC text without a zone.
        return "datetime(%(expressions)s, '-9 hours')"

    def postgresql(self) -> str:
        return "((%(expressions)s)::timestamp AT TIME ZONE 'Asia/Tokyo')"


class DaysBefore(_NativeDateFunc):
    """A date `days` days earlier."""

    output_field = DateField()

    def __init__(self, expression: Any, *, days: int) -> None:
        super().__init__(expression)
        self.days = int(days)

    def sqlite(self) -> str:
        return f"date(%(expressions)s, '-{self.days} days')"

    def postgresql(self) -> str:
        return f"((%(expressions)s) - {self.days})"


class Later(Func):
    """A moment `days` and `hours` after another, to the microsecond.

    Replaces `F(...) + timedelta`, which SQLite runs through Python for every row compared
    (cart abandonment compares each cart event with the orders and cart actions after it)."""

    output_field = DateTimeField()

    def __init__(self, expression: Any, *, days: int = 0, hours: int = 0) -> None:
        super().__init__(expression)
        self.seconds = int(days) * 86_400 + int(hours) * 3_600

    def as_sqlite(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        # Stored moments are UTC text, "YYYY-MM-DD HH:MM:SS" and ".ffffff" when not zero.
        # datetime() drops the fraction; adding whole seconds leaves it as it was, so the
        # original's is put back and the text is what Django would have stored.
        shifted = f"(datetime({sql}, '{self.seconds:+d} seconds') || substr({sql}, 20))"
        return shifted, [*params, *params]

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> Any:
        sql, params = compiler.compile(self.source_expressions[0])
        return f"({sql} + interval '{self.seconds} seconds')", params
