"""Void finished runs whose as-of day is after today (Japan), from before such days were refused.

Pages, segment conditions and the pruning of per-customer rows take the run with the newest
as-of day as the latest, so one `kizuna analytics run --as-of 2099-01-01` stayed the latest for
good. Only the shop's own ways of starting a run are voided (the command, a queued or nightly
task, the web button): the demo's snapshot may lie ahead of the real calendar on purpose. A
voided run is marked failed with the reason, and its per-customer rows are deleted (pruning
only looks at finished runs, so they would otherwise stay for ever).
"""

from typing import Any

from django.db import migrations
from django.utils import timezone

SHOP_TRIGGERS = ("command", "queued", "task", "web", "nightly")
MESSAGE = (
    "基準日が実行した日より後(未来)の日付だったため、この分析を無効にしました。"
    "今日以前の基準日で実行し直してください。"
)


def void_future_runs(apps: Any, schema_editor: Any) -> None:
    run_model = apps.get_model("analytics", "AnalyticsRun")
    score_model = apps.get_model("analytics", "CustomerScore")
    db = schema_editor.connection.alias
    future = run_model.objects.using(db).filter(
        status="done", as_of__gt=timezone.localdate(), trigger__in=SHOP_TRIGGERS
    )
    ids = list(future.values_list("pk", flat=True))
    if not ids:
        return
    score_model.objects.using(db).filter(run_id__in=ids).delete()
    run_model.objects.using(db).filter(pk__in=ids).update(
        status="failed", message=MESSAGE, customer_rows_kept=False
    )


class Migration(migrations.Migration):
    dependencies = [("analytics", "0001_create_analytics_runs_scores_and_settings")]

    operations = [migrations.RunPython(void_future_runs, migrations.RunPython.noop)]
