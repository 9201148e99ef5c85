"""Starting a web or delivery worker does not load the analytics engines.

Every gunicorn worker imports the URLconf; `kizuna worker` imports its command module and
whatever delivery needs. The analytics pages and API only read stored snapshots, so numpy, scipy,
pandas, Ibis, DuckDB and the pipeline's compute modules are loaded only where analytics work is
done (a run, or the what-if forecast); importing them up front cost each process about a second
and 120 MiB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HEAVY = (
    "numpy",
    "scipy",
    "pandas",
    "pyarrow",
    "ibis",
    "duckdb",
    "sqlglot",
    "pyspark",
    "connectorx",
    "threadpoolctl",
    "kizuna.analytics.clv",
    "kizuna.analytics.pipeline.compute",
    "kizuna.analytics.pipeline.backends",
    "kizuna.analytics.pipeline.dynamics",
    "kizuna.analytics.pipeline.kpis",
    "kizuna.analytics.pipeline.run",
)

# Run in a fresh interpreter: the test process itself has long since imported all of these.
PROBE = """
import json, sys
import django
django.setup()
import kizuna.urls
import kizuna.core.management.commands.worker
print(json.dumps(sorted(sys.modules)))
"""


def test_urlconf_and_worker_command_import_without_the_analytics_engines(tmp_path: Path) -> None:
    # given a fresh process with settings but no database (django.setup() does not connect)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(DJANGO_SETTINGS_MODULE="kizuna.settings", KIZUNA_DATA_DIR=str(tmp_path))

    # when it imports the URLconf and the worker command
    result = subprocess.run(  # noqa: S603 - our own interpreter and script
        [sys.executable, "-c", PROBE],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # then none of the heavy modules is loaded
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert [name for name in HEAVY if name in loaded] == []
