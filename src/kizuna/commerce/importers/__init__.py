"""CSV importers for orders and customers: EC-CUBE 4, Shopify, and any CSV with a mapping file.

    from kizuna.commerce.importers import ImportOptions, run_import
    result = run_import(Path("受注.csv"), ImportOptions(kind="orders", dry_run=True))

Formats only read; every order is written through `orders_upsert_many` (which `order_upsert`
and the API use too), so a CSV import, the API and webhooks store orders the same way. docs/ingest.md is the user's guide.
"""

from kizuna.commerce.importers.errors import ImportRefused, RowError, UsageError
from kizuna.commerce.importers.pipeline import ImportOptions, ImportResult, Progress, run_import

__all__ = [
    "ImportOptions",
    "ImportRefused",
    "ImportResult",
    "Progress",
    "RowError",
    "UsageError",
    "run_import",
]
