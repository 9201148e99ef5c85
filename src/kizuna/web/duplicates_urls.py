from django.urls import path

from kizuna.web import duplicates

app_name = "duplicates"
urlpatterns = [
    path("", duplicates.duplicate_queue, name="queue"),
    path("<int:pk>/merge/", duplicates.duplicate_merge, name="merge"),
    path("<int:pk>/dismiss/", duplicates.duplicate_dismiss, name="dismiss"),
    path("<int:pk>/reopen/", duplicates.duplicate_reopen, name="reopen"),
    path("merges/<int:pk>/", duplicates.merge_detail, name="merge_detail"),
    path("merges/<int:pk>/undo/", duplicates.merge_undo, name="merge_undo"),
]
