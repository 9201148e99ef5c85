from django.urls import path

from kizuna.web import imports

app_name = "imports"
urlpatterns = [
    path("", imports.import_index, name="index"),
    path("<int:pk>/", imports.import_detail, name="detail"),
    path("<int:pk>/status/", imports.import_status, name="status"),
    path("<int:pk>/errors/", imports.import_errors, name="errors"),
    path("<int:pk>/errors.csv", imports.import_errors_csv, name="errors_csv"),
]
