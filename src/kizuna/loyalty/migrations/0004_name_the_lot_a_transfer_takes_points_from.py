# A nullable column without a default: ALTER TABLE ADD COLUMN on both databases, which neither
# rewrites the append-only ledger nor fires its UPDATE trigger (SQLite keeps the table and its
# trigger; PostgreSQL adds the column without touching the rows).

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("loyalty", "0003_index_expiry_dates_for_the_expiring_points_trigger"),
    ]

    operations = [
        migrations.AddField(
            model_name="pointentry",
            name="lot",
            field=models.ForeignKey(
                blank=True,
                db_index=False,
                null=True,
                on_delete=django.db.models.deletion.PROTECT,
                related_name="+",
                to="loyalty.pointentry",
                verbose_name="取り崩すポイントの期限",
            ),
        ),
    ]
