from django.urls import path

from kizuna.web.unsubscribe import unsubscribe_view

app_name = "unsubscribe"
urlpatterns = [
    path("<str:token>", unsubscribe_view, name="unsubscribe"),
]
