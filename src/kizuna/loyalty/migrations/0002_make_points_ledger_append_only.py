from django.db import migrations

from kizuna.core.append_only import make_append_only


class Migration(migrations.Migration):
    dependencies = [("loyalty", "0001_create_points_ledger")]
    operations = [make_append_only("loyalty_pointentry")]
