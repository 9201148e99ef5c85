from django.contrib import admin
from django.urls import include, path

from kizuna.api.v1 import api
from kizuna.web import security, views

admin.site.site_header = "Kizuna 絆 管理画面"
admin.site.site_title = "Kizuna 絆 管理画面"
admin.site.index_title = "管理メニュー"

urlpatterns = [
    path("login/", views.KizunaLoginView.as_view(), name="login"),
    path("login/verify/", security.verify, name="login_verify"),
    path("logout/", views.KizunaLogoutView.as_view(), name="logout"),
    # Django admin checks is_staff itself, which accounts.User keeps true for admins only.
    path("admin/", admin.site.urls),
    path("api/v1/", api.urls),
    path("settings/api-keys/", include("kizuna.web.apikeys_urls")),
    path("settings/security/", include("kizuna.web.security_urls")),
    path("imports/", include("kizuna.web.imports_urls")),
    path("duplicates/", include("kizuna.web.duplicates_urls")),
    path("delivery/", include("kizuna.web.outbox_urls")),
    path("u/", include("kizuna.web.unsubscribe_urls")),
    path("segments/", include("kizuna.web.segments_urls")),
    path("scenarios/", include("kizuna.web.scenarios_urls")),
    path("analytics/", include("kizuna.web.analytics_urls")),
    path("", include("kizuna.web.urls")),
]
