from django.urls import include, path

urlpatterns = [
    path("", include("kizuna.web.urls")),
]
