"""Logging that keeps customer data out of the logs.

Search terms travel in query strings (`/customers/?q=山田`, `/api/v1/customers?email=…`), and a
request line is logged whole by the development server (`django.server`, every 4xx at
WARNING). The README promises logs never carry customer data, so request lines are logged
without their query string.
"""

from __future__ import annotations

import logging
import re

# From the "?" to the end of the URL: the request line is "METHOD URL PROTOCOL".
_QUERY_STRING = re.compile(r"\?\S*")


class WithoutQueryString(logging.Filter):
    """Replaces the query string of a logged request line by "?…" (that there was one can
    matter when reading a log; what it said cannot be logged)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args and isinstance(record.args[0], str):
            record.args = (_QUERY_STRING.sub("?…", record.args[0], count=1), *record.args[1:])
        return True
