from django.urls import path

from kizuna.web import security

app_name = "security"
urlpatterns = [
    path("", security.account, name="account"),
    path("staff/", security.staff, name="staff"),
]
