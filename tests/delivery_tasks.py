"""A task for the task-backend tests: it leaves a file behind, so a test in another process
can see that a worker ran it."""

from __future__ import annotations

from pathlib import Path

from django_tasks import task


@task()
def leave_mark(path: str, text: str) -> str:
    Path(path).write_text(text, encoding="utf-8")
    return text
