"""The pages speak to marketing staff and call-center operators, who have no terminal and no
copy of the repository: no page tells them to run a `kizuna` command or read a file under docs/.
(What the server's administrator needs is in the docs and in the commands' own output.)"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse

from kizuna.accounts.models import Role

TEMPLATES = Path(__file__).parents[1] / "src" / "kizuna" / "web" / "templates"
# `{% load … kizuna %}` names the template tag library, not a command.
COMMAND = re.compile(r"(?<![\w-])kizuna (?!%\})[a-z]")
LOAD = re.compile(r"{%\s*load[^%]*%}")
ClientFor = Callable[[Role], Client]


@pytest.mark.parametrize(
    "template", sorted(TEMPLATES.rglob("*.html")), ids=lambda p: str(p.relative_to(TEMPLATES))
)
def test_no_page_sends_staff_to_a_command_or_a_repository_file(template: Path) -> None:
    text = LOAD.sub("", template.read_text(encoding="utf-8"))
    assert not COMMAND.search(text), "name what to do on the page, not a kizuna command"
    assert "docs/" not in text, "say it on the page, or offer the file to download"


@pytest.mark.django_db
def test_the_import_page_offers_the_mapping_example_to_download(client_for: ClientFor) -> None:
    client: Client = client_for(Role.MARKETER)
    page = client.get(reverse("imports:index")).content.decode()
    assert 'href="/static/web/examples/generic-orders.yml" download' in page
    assert 'href="/static/web/examples/generic-customers.yml" download' in page
