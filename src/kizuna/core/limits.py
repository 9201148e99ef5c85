"""How much text a database column holds, checked before writing, with a Japanese reason.

Forms limit what a browser sends, but a file (an import, a scenario file) or an API script
does not: SQLite would store any length, and PostgreSQL refuse it with a server error. A value
is never cut to fit either — the rest of a product name or a tracking number would be lost
without a word — so whatever writes checks it here first and names what is too long.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models


@dataclass(frozen=True)
class TextLimit:
    """How many characters a column holds, and what staff call its field."""

    label: str
    chars: int

    @classmethod
    def of(cls, model: type[models.Model], name: str) -> TextLimit:
        field = model._meta.get_field(name)
        if not isinstance(field, models.CharField) or field.max_length is None:
            raise TypeError(f"{model.__name__}.{name} holds text of any length")
        return cls(str(field.verbose_name), field.max_length)

    def reason(self, value: str, label: str = "", *, ask: str = "にしてください") -> str | None:
        """Why `value` cannot be stored (named `label`, default the field's), or None. `ask`
        ends the sentence: what a file's row must be, or, for what staff type, 「で入力して
        ください」."""
        if len(value) <= self.chars:
            return None
        return f"{label or self.label}は{self.chars}文字以内{ask}(いま{len(value):,}文字)"


def too_long(model: type[models.Model], **values: str) -> list[str]:
    """The reason for each of `values` (by field name) longer than its column holds, as staff
    entering them are told (scenario, segment, template and offer names…)."""
    reasons = (
        TextLimit.of(model, name).reason(value, ask="で入力してください")
        for name, value in values.items()
    )
    return [reason for reason in reasons if reason is not None]
