"""Writes the analytics pages make: the shop's settings, and exports of a segment's customers.
Both leave an audit row (RELIABILITY D3)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction

from kizuna.analytics.models import AnalyticsRun, AnalyticsSettings, CustomerScore
from kizuna.analytics.selectors import scores_in_segment, segment_label
from kizuna.core.audit import Actor, audit_record, diff

SETTINGS_FIELDS = (
    "rfm_method",
    "recency_days",
    "frequency_counts",
    "monetary_yen",
    "cpm_lapse_days",
    "cpm_toddler_tenure_days",
    "cpm_loyal_tenure_days",
    "cpm_amount_yen",
    "windows_days",
    "prediction_model",
    "prediction_horizon_days",
    "keep_customer_runs",
    "nightly_backend",
)


@transaction.atomic
def analytics_settings_update(*, changes: Mapping[str, Any], acting_user: Any) -> AnalyticsSettings:
    """Change the thresholds the next runs use; the audit row keeps each old and new value.
    ValidationError (Japanese) when the combination is unusable; nothing is saved then."""
    unknown = set(changes) - set(SETTINGS_FIELDS)
    if unknown:
        raise ValidationError(f"変更できない項目です: {', '.join(sorted(unknown))}")
    row = AnalyticsSettings.objects.select_for_update().get(pk=AnalyticsSettings.load().pk)
    changed = diff({name: getattr(row, name) for name in changes}, changes)
    if not changed:
        return row
    for name, value in changes.items():
        setattr(row, name, value)
    row.full_clean()
    row.save()
    audit_record(
        actor=Actor.of(acting_user),
        action="analytics_settings.update",
        instance=row,
        customer_id=None,
        changes=changed,
    )
    return row


EXPORT_HEADER = [
    "顧客ID",
    "姓",
    "名",
    "CPMセグメント",
    "RFMセグメント",
    "R",
    "F",
    "M",
    "購入回数",
    "累計購入金額",
    "初回購入日",
    "最終購入日",
    "最終購入からの日数",
    "生存確率",
    "予測購入回数",
    "12か月CLV",
    "次回購入予測日",
]


def _number(value: float | None, places: int) -> str:
    return "" if value is None else f"{value:.{places}f}"


def segment_export_rows(
    *, run: AnalyticsRun, kind: str, code: str, acting_user: Any
) -> Iterator[list[str]]:
    """The customers of one CPM or RFM segment in `run` as CSV rows (header first), read in
    chunks. The export is audited before the first row is produced: who took which segment of
    which run, and how many customers it held."""
    label = segment_label(kind, code)
    if label is None:
        raise ValidationError("セグメントが正しくありません")
    scores = scores_in_segment(run, cpm=code) if kind == "cpm" else scores_in_segment(run, rfm=code)
    audit_record(
        actor=Actor.of(acting_user),
        action="analytics.segment_export",
        instance=run,
        customer_id=None,
        changes={"segment": [None, f"{kind}:{code}"], "rows": [None, scores.count()]},
    )
    return _rows(scores)


def _rows(scores: Any) -> Iterator[list[str]]:
    yield EXPORT_HEADER
    cpm = dict(CustomerScore._meta.get_field("cpm_segment").choices or [])
    rfm = dict(CustomerScore._meta.get_field("rfm_segment").choices or [])
    for score in scores.select_related("customer").iterator(chunk_size=2000):
        customer = score.customer
        yield [
            str(score.customer_id),
            customer.family_name,
            customer.given_name,
            str(cpm.get(score.cpm_segment, score.cpm_segment)),
            str(rfm.get(score.rfm_segment, score.rfm_segment)),
            str(score.r_score),
            str(score.f_score),
            str(score.m_score),
            str(score.purchase_count),
            str(score.total_spend),
            score.first_purchase_on.isoformat(),
            score.last_purchase_on.isoformat(),
            str(score.days_since_last),
            _number(score.p_alive, 4),
            _number(score.expected_purchases, 3),
            _number(score.clv_12m, 0),
            score.expected_next_purchase_on.isoformat() if score.expected_next_purchase_on else "",
        ]
