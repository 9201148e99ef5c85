"""Reading the pages a browser would: the one-time token a guarded form carries
(kizuna.web.formtokens), taken from the form's page as a browser gets it by opening it."""

from __future__ import annotations

import re

from django.test import Client

_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


def form_token(client: Client, url: str) -> str:
    response = client.get(url)
    assert response.status_code == 200
    found = _TOKEN.search(response.content.decode())
    assert found is not None
    return found.group(1)
