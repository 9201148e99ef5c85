"""The interactive API docs page (Swagger UI), served from the files django-ninja ships.

django-ninja's docs page fetches Swagger UI from a CDN unless "ninja" is an installed app;
Kizuna must work without Internet access, so the page and its three assets are served here
from the installed package instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ninja
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.urls import reverse
from django.utils.html import escape
from ninja.openapi.docs import DocsBase

if TYPE_CHECKING:
    from ninja import NinjaAPI

_ASSET_DIR = Path(ninja.__file__).resolve().parent / "static" / "ninja"
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui-init.js": "text/javascript",
}
ASSET_URL_NAME = "docs-asset"

_PAGE = """<!doctype html>
<html lang="ja">
<head>
<meta charset="utf-8">
<title>{title}</title>
<link rel="stylesheet" href="{css}">
</head>
<body data-csrf-token="" data-api-csrf="">
<script type="application/json" id="swagger-settings">{settings}</script>
<div id="swagger-ui"></div>
<script src="{bundle}"></script>
<script src="{init}"></script>
</body>
</html>
"""


class LocalSwagger(DocsBase):
    def render_page(self, request: HttpRequest, api: NinjaAPI, **kwargs: Any) -> HttpResponse:
        def asset(name: str) -> str:
            return escape(reverse(f"{api.urls_namespace}:{ASSET_URL_NAME}", args=[name]))

        settings = {"url": self.get_openapi_url(api, kwargs), "layout": "BaseLayout"}
        # "</" cannot end the script element early once its slash is escaped.
        settings_json = json.dumps(settings).replace("</", "<\\/")
        html = _PAGE.format(
            title=escape(api.title),
            css=asset("swagger-ui.css"),
            settings=settings_json,
            bundle=asset("swagger-ui-bundle.js"),
            init=asset("swagger-ui-init.js"),
        )
        return HttpResponse(html)


def docs_asset(request: HttpRequest, name: str) -> FileResponse:
    if name not in ASSETS:
        raise Http404(name)
    response = FileResponse((_ASSET_DIR / name).open("rb"), content_type=ASSETS[name])
    response["Cache-Control"] = "public, max-age=86400"
    return response
