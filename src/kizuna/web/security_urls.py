from django.urls import path

from kizuna.web import security

app_name = "security"
urlpatterns = [
    path("", security.account, name="account"),
    path("password/", security.password_change, name="password_change"),
    path("staff/", security.staff, name="staff"),
]
