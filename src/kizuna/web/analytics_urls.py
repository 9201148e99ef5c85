from django.urls import path

from kizuna.web import analytics, analytics_dynamics

app_name = "analytics"
urlpatterns = [
    path("", analytics.dashboard, name="dashboard"),
    path("repeat/", analytics.repeat, name="repeat"),
    path("cohorts/", analytics.cohorts, name="cohorts"),
    path("subscriptions/", analytics.subscriptions, name="subscriptions"),
    path("predictions/", analytics.predictions, name="predictions"),
    path("dynamics/", analytics_dynamics.dynamics, name="dynamics"),
    path("fans/", analytics_dynamics.fans, name="fans"),
    path("runs/", analytics.runs, name="runs"),
    path("runs/start/", analytics.run_start, name="run_start"),
    path("runs/nightly/", analytics.run_nightly, name="run_nightly"),
    path("runs/<int:pk>/progress/", analytics.run_progress, name="run_progress"),
    path("settings/", analytics.settings, name="settings"),
    path("export/<str:kind>/<str:code>/", analytics.segment_export, name="segment_export"),
]
