"""Background work for CSV imports started from the web page, run by `kizuna worker`."""

from __future__ import annotations

from django_tasks import task

from kizuna.commerce.importers.runs import import_run_execute


@task()
def run_csv_import(run_id: int) -> str:
    """Import one uploaded file; returns the run's final status."""
    return import_run_execute(run_id)
