from django.contrib import admin
from django.urls import include, path

from kizuna.web import views

admin.site.site_header = "Kizuna 絆 管理画面"
admin.site.site_title = "Kizuna 絆 管理画面"
admin.site.index_title = "管理メニュー"

urlpatterns = [
    path("login/", views.KizunaLoginView.as_view(), name="login"),
    path("logout/", views.KizunaLogoutView.as_view(), name="logout"),
    # Django admin checks is_staff itself, which accounts.User keeps true for admins only.
    path("admin/", admin.site.urls),
    path("", include("kizuna.web.urls")),
]
