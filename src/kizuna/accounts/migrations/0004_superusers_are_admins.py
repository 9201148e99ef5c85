"""Superusers made before User.save kept their role in step (`kizuna createsuperuser` gave
them the default, オペレーター) get the admin role their rights already are."""

from typing import Any

from django.db import migrations


def superusers_are_admins(apps: Any, schema_editor: Any) -> None:
    user_model = apps.get_model("accounts", "User")
    superusers = user_model.objects.filter(is_superuser=True).exclude(role="admin")
    superusers.update(role="admin", is_staff=True)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_add_security_settings_for_two_factor_policy"),
    ]

    # Nothing to undo: the rights never changed, only the role that shows them.
    operations = [migrations.RunPython(superusers_are_admins, migrations.RunPython.noop)]
