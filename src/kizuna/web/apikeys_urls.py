from django.urls import path

from kizuna.web import apikeys

app_name = "apikeys"
urlpatterns = [
    path("", apikeys.index, name="index"),
    path("new/", apikeys.create_key, name="create"),
    path("new/done/", apikeys.created_key, name="created"),
    path("webhooks/new/", apikeys.create_source, name="create_source"),
    path("webhooks/new/done/", apikeys.created_source, name="source_created"),
    path("webhooks/<int:pk>/rotate/", apikeys.rotate_source, name="rotate_source"),
]
