from django.db import migrations

from kizuna.core.append_only import make_append_only


class Migration(migrations.Migration):
    dependencies = [("customers", "0001_create_customers_identities_consent_timeline")]
    operations = [make_append_only("customers_consentevent")]
