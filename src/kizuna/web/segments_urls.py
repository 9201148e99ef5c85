from django.urls import path

from kizuna.web import segments

app_name = "segments"
urlpatterns = [
    path("", segments.segment_list, name="list"),
    path("new/", segments.segment_create, name="create"),
    path("builder/", segments.segment_builder, name="builder"),
    path("preview/", segments.segment_preview, name="preview"),
    path("<int:pk>/", segments.segment_edit, name="edit"),
    path("<int:pk>/count/", segments.segment_count, name="count"),
    path("<int:pk>/export/", segments.segment_export, name="export"),
    path("<int:pk>/delete/", segments.segment_delete_view, name="delete"),
]
