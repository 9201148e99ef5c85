# Identity.observed_at: when the source said the customer has the identity. Messages go to the
# identity of a kind observed last (campaigns.consent_checks), no longer to the one inserted
# last, so an old order imported after the current address no longer takes over.
#
# Existing rows were observed when they were stored: observed_at = created_at, which keeps
# where every customer's messages go today. One UPDATE, the same on SQLite and PostgreSQL.

from typing import Any

import django.utils.timezone
from django.db import migrations, models


def observed_when_stored(apps: Any, schema_editor: Any) -> None:
    Identity = apps.get_model("customers", "Identity")
    Identity.objects.update(observed_at=models.F("created_at"))


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0009_index_given_name_and_reading_for_search"),
    ]

    operations = [
        migrations.AddField(
            model_name="identity",
            name="observed_at",
            field=models.DateTimeField(default=django.utils.timezone.now, verbose_name="確認日時"),
        ),
        migrations.RunPython(observed_when_stored, migrations.RunPython.noop, elidable=True),
    ]
