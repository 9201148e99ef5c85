from django.db import migrations

from kizuna.core.append_only import make_append_only


class Migration(migrations.Migration):
    dependencies = [("core", "0001_create_audit_log")]
    operations = [make_append_only("core_auditlog")]
