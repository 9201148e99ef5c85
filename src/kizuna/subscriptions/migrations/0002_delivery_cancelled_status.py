"""A delivery status 中止(解約), and the deliveries of cancelled subscriptions marked with it.

Cancelling a 定期 cleared its next delivery date but left its planned deliveries as 予定, so the
customer page and the APPI export showed a box still coming after the cancellation. A delivery
still scheduled and not yet ordered (no order) of a cancelled subscription will not come: it
becomes `cancelled`. One with an order (受注・未出荷) keeps its status: the order still ships.
"""

from typing import Any

from django.db import migrations, models


def cancel_leftover_deliveries(apps: Any, schema_editor: Any) -> None:
    delivery_model = apps.get_model("subscriptions", "SubscriptionDelivery")
    db = schema_editor.connection.alias
    delivery_model.objects.using(db).filter(
        subscription__status="cancelled", status="scheduled", order__isnull=True
    ).update(status="cancelled")


class Migration(migrations.Migration):
    dependencies = [("subscriptions", "0001_create_subscriptions_and_deliveries")]

    operations = [
        migrations.AlterField(
            model_name="subscriptiondelivery",
            name="status",
            field=models.CharField(
                choices=[
                    ("scheduled", "予定"),
                    ("shipped", "出荷済"),
                    ("delivered", "お届け済"),
                    ("skipped", "スキップ"),
                    ("cancelled", "中止(解約)"),
                ],
                max_length=16,
                verbose_name="状態",
            ),
        ),
        migrations.RunPython(cancel_leftover_deliveries, migrations.RunPython.noop),
    ]
