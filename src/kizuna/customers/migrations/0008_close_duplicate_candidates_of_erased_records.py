# Choices only: no SQL on either database.

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("customers", "0007_fold_variant_kanji_in_name_key"),
    ]

    operations = [
        migrations.AlterField(
            model_name="duplicatecandidate",
            name="status",
            field=models.CharField(
                choices=[
                    ("open", "未確認"),
                    ("merged", "統合済"),
                    ("dismissed", "別人として確認済"),
                    ("erased", "削除(匿名化)により対象外"),
                ],
                default="open",
                max_length=16,
                verbose_name="状態",
            ),
        ),
    ]
