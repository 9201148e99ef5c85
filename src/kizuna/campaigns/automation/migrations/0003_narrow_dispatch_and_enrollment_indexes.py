# Drops the enrollment and step-dispatch indexes other indexes already cover (enrollment_once
# and enrollment_scenario_status start with the scenario, enrollment_customer with the
# customer, dispatch_once_per_step with the enrollment, dispatch_step_status with the step),
# and indexes the optional links (order, subscription, product, backlog) only where set.
# Fewer indexes, fewer writes per enrolled customer and per dispatched step.

import django.db.models.deletion
from django.db import migrations, models

from kizuna.campaigns.schema import unindex_foreign_keys


class Migration(migrations.Migration):
    dependencies = [
        ("automation", "0002_add_scenario_trigger_checked_at"),
        ("commerce", "0005_index_orders_by_time"),
        ("customers", "0005_record_customer_merges_for_undo"),
        ("subscriptions", "0001_create_subscriptions_and_deliveries"),
    ]

    operations = [
        unindex_foreign_keys(
            "automation",
            "enrollment",
            {
                "customer": models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="enrollments",
                    to="customers.customer",
                ),
                "order": models.ForeignKey(
                    blank=True,
                    db_index=False,
                    null=True,
                    on_delete=django.db.models.deletion.SET_NULL,
                    related_name="+",
                    to="commerce.order",
                ),
                "product": models.ForeignKey(
                    blank=True,
                    db_index=False,
                    null=True,
                    on_delete=django.db.models.deletion.SET_NULL,
                    related_name="+",
                    to="commerce.product",
                ),
                "scenario": models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="enrollments",
                    to="automation.scenario",
                ),
                "subscription": models.ForeignKey(
                    blank=True,
                    db_index=False,
                    null=True,
                    on_delete=django.db.models.deletion.SET_NULL,
                    related_name="+",
                    to="subscriptions.subscription",
                ),
            },
        ),
        unindex_foreign_keys(
            "automation",
            "stepdispatch",
            {
                "backlog": models.ForeignKey(
                    blank=True,
                    db_index=False,
                    null=True,
                    on_delete=django.db.models.deletion.SET_NULL,
                    related_name="dispatches",
                    to="automation.backlog",
                ),
                "enrollment": models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.CASCADE,
                    related_name="dispatches",
                    to="automation.enrollment",
                ),
                "step": models.ForeignKey(
                    db_index=False,
                    on_delete=django.db.models.deletion.PROTECT,
                    related_name="dispatches",
                    to="automation.scenariostep",
                ),
            },
        ),
        migrations.AddIndex(
            model_name="enrollment",
            index=models.Index(
                condition=models.Q(("order__isnull", False)),
                fields=["order"],
                name="enrollment_order",
            ),
        ),
        migrations.AddIndex(
            model_name="enrollment",
            index=models.Index(
                condition=models.Q(("subscription__isnull", False)),
                fields=["subscription"],
                name="enrollment_subscription",
            ),
        ),
        migrations.AddIndex(
            model_name="enrollment",
            index=models.Index(
                condition=models.Q(("product__isnull", False)),
                fields=["product"],
                name="enrollment_product",
            ),
        ),
        migrations.AddIndex(
            model_name="stepdispatch",
            index=models.Index(
                condition=models.Q(("backlog__isnull", False)),
                fields=["backlog"],
                name="dispatch_backlog",
            ),
        ),
    ]
