"""`kizuna customers …`: APPI requests from the command line, for the shop's DPO.

kizuna customers export ID [-o FILE]                      everything held about one customer (JSON)
kizuna customers erase ID --reason TEXT --confirm ID      erase (anonymise) it, irreversibly

Both are audited like the customer page's buttons; the audit rows name the command and the
operating-system user who ran it.
"""

from __future__ import annotations

import getpass
import json
from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from kizuna.core.audit import Actor
from kizuna.customers import privacy
from kizuna.customers.models import Customer


def _actor() -> Actor:
    return Actor.system(f"customers-command({getpass.getuser()})")


class Command(BaseCommand):
    help = "個人データの書き出し・削除(匿名化)(個人情報保護法の開示・削除請求)"

    def add_arguments(self, parser: ArgumentParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        export = sub.add_parser("export", help="顧客について保有するすべての記録をJSONで出力")
        export.add_argument("customer_id", type=int, help="顧客ID")
        export.add_argument("-o", "--output", help="出力ファイル(省略時は標準出力)")
        erase = sub.add_parser("erase", help="顧客の個人データを削除(匿名化)します(元に戻せません)")
        erase.add_argument("customer_id", type=int, help="顧客ID")
        erase.add_argument("--reason", required=True, help="理由(請求の受付番号など)")
        erase.add_argument(
            "--confirm", type=int, required=True, help="確認のため同じ顧客IDをもう一度"
        )

    def handle(self, *args: Any, **options: Any) -> None:
        customer = Customer.objects.filter(pk=options["customer_id"]).first()
        if customer is None:
            raise CommandError(f"顧客ID {options['customer_id']} は見つかりません")
        try:
            if options["action"] == "export":
                self._export(customer, options.get("output"))
            else:
                self._erase(customer, options["reason"], options["confirm"])
        except privacy.PrivacyError as exc:
            raise CommandError(" ".join(exc.messages)) from None

    def _export(self, customer: Customer, output: str | None) -> None:
        text = json.dumps(privacy.customer_export(customer, _actor()), ensure_ascii=False, indent=2)
        if not output:
            self.stdout.write(text)
            return
        try:
            with open(output, "w", encoding="utf-8") as handle:
                handle.write(text + "\n")
        except OSError as exc:
            raise CommandError(f"ファイルに書き込めません: {exc}") from None
        self.stderr.write(f"顧客ID {customer.pk} の個人データを {output} に書き出しました")

    def _erase(self, customer: Customer, reason: str, confirm: int) -> None:
        if confirm != customer.pk:
            raise CommandError("--confirm の顧客IDが一致しません。何も変更していません")
        report = privacy.customer_erase(customer=customer, acting_user=_actor(), reason=reason)
        ids = "、".join(str(pk) for pk in report.customer_ids)
        self.stdout.write(f"顧客ID {ids} の個人データを削除(匿名化)しました")
