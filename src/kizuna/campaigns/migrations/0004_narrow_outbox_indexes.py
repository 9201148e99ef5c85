# Drops the outbox indexes other indexes already cover: the customer's own (outbox_customer_cap
# starts with the customer) and one of the two identical delivery-list indexes; the one kept
# indexes only rows that have a list. On PostgreSQL also the LIKE index of dedupe_key (a key
# is only ever looked up whole; its unique index stays). Fewer indexes, fewer writes per
# queued message.

import django.db.models.deletion
from django.db import migrations, models

from kizuna.campaigns.schema import drop_pattern_index, unindex_foreign_keys


class Migration(migrations.Migration):
    dependencies = [
        ("campaigns", "0003_delivery_settings_database_identity"),
        ("customers", "0005_record_customer_merges_for_undo"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="outboxmessage",
            name="outbox_list",
        ),
        unindex_foreign_keys(
            "campaigns",
            "outboxmessage",
            {
                "customer": models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="outbox_messages",
                    to="customers.customer",
                    verbose_name="顧客",
                ),
                "delivery_list": models.ForeignKey(
                    blank=True,
                    db_index=False,
                    null=True,
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="messages",
                    to="campaigns.deliverylist",
                    verbose_name="出力リスト",
                ),
            },
        ),
        drop_pattern_index("campaigns", "outboxmessage", "dedupe_key"),
        migrations.AddIndex(
            model_name="outboxmessage",
            index=models.Index(
                condition=models.Q(("delivery_list__isnull", False)),
                fields=["delivery_list"],
                name="outbox_list",
            ),
        ),
    ]
