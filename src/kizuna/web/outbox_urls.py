from django.urls import path

from kizuna.web import outbox

app_name = "outbox"
urlpatterns = [
    path("", outbox.dashboard, name="dashboard"),
    path("pause/", outbox.pause, name="pause"),
    path("settings/", outbox.update_settings, name="settings"),
    path("suppressions/", outbox.suppressions, name="suppressions"),
    path("queue/", outbox.queue, name="queue"),
    path("queue/confirm/", outbox.queue_confirm, name="queue_confirm"),
    path("queue/action/", outbox.queue_action, name="queue_action"),
    path("lists/<int:pk>/close/", outbox.close_list, name="close_list"),
    path("lists/<int:pk>/reopen/", outbox.reopen_list, name="reopen_list"),
    path("lists/<int:pk>.<str:file_format>", outbox.download_list, name="download_list"),
]
