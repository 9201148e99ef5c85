"""The `kizuna` console script: Django's management commands with Kizuna's settings.

`kizuna demo`, `kizuna worker`, `kizuna migrate`, `kizuna createsuperuser`… all go through here,
so operators never need manage.py or DJANGO_SETTINGS_MODULE.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kizuna.settings")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    args = list(sys.argv if argv is None else argv)
    args[0] = "kizuna"
    try:
        execute_from_command_line(args)
    except ImproperlyConfigured as exc:
        # A setting missing or wrong (docs/security.md): the reason, not a traceback.
        sys.stderr.write(f"エラー: 設定を確かめてください: {exc}\n")
        sys.exit(1)


if __name__ == "__main__":
    main()
