from django.db import migrations

from kizuna.core.append_only import allow_audit_redaction


class Migration(migrations.Migration):
    dependencies = [("core", "0003_add_idempotency_keys_and_webhook_events")]
    operations = [allow_audit_redaction("core_auditlog")]
