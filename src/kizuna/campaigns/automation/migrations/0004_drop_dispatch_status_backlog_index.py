# Drops dispatch_status_backlog (status, backlog): its one reader, the scheduler's release of
# confirmed backlogs, now finds a scenario's approved dispatches by its steps through
# dispatch_step_status (step, status); a backlog's own dispatches go through the partial
# dispatch_backlog. One index less to write per dispatched step.

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("automation", "0003_narrow_dispatch_and_enrollment_indexes"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="stepdispatch",
            name="dispatch_status_backlog",
        ),
    ]
