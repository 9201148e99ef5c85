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

from django.db.models import CharField, DateField, DateTimeField, Func


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


class _DayShift(_NativeDateFunc):
    """A date or moment `days` days from another (the number is written into the SQL)."""

    def __init__(self, expression: Any, *, days: int) -> None:
        super().__init__(expression)
        self.days = int(days)


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


class DaysBefore(_DayShift):
    """A date `days` days earlier."""

    output_field = DateField()

    def sqlite(self) -> str:
        return f"date(%(expressions)s, '-{self.days} days')"

    def postgresql(self) -> str:
        return f"((%(expressions)s) - {self.days})"


class DaysLater(_DayShift):
    """A moment `days` days later. On SQLite stored moments are UTC text, so strftime's text
    compares the same way (to the millisecond, which a window of days does not notice)."""

    output_field = DateTimeField()

    def sqlite(self) -> str:
        return (
            f"strftime('%%%%Y-%%%%m-%%%%d %%%%H:%%%%M:%%%%f', %(expressions)s, '+{self.days} days')"
        )

    def postgresql(self) -> str:
        return f"(%(expressions)s + interval '{self.days} days')"
