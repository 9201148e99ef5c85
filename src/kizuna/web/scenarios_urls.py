from django.urls import path

from kizuna.web import scenarios

app_name = "scenarios"
urlpatterns = [
    path("", scenarios.scenario_list, name="list"),
    path("new/", scenarios.scenario_create, name="create"),
    path("form/", scenarios.scenario_form_refresh, name="form_refresh"),
    path("<int:pk>/", scenarios.scenario_detail, name="detail"),
    path("<int:pk>/lift/", scenarios.scenario_lift_part, name="lift"),
    path("<int:pk>/counts/", scenarios.scenario_counts, name="counts"),
    path("<int:pk>/edit/", scenarios.scenario_edit, name="edit"),
    path("<int:pk>/activate/", scenarios.scenario_activate_view, name="activate"),
    path("<int:pk>/pause/", scenarios.scenario_pause_view, name="pause"),
    path("<int:pk>/delete/", scenarios.scenario_delete_view, name="delete"),
    path("<int:pk>/archive/", scenarios.scenario_archive_view, name="archive"),
    path("<int:pk>/unarchive/", scenarios.scenario_unarchive_view, name="unarchive"),
    path(
        "backlogs/<int:pk>/confirm/",
        scenarios.backlog_decide,
        {"decision": "confirm"},
        name="backlog_confirm",
    ),
    path(
        "backlogs/<int:pk>/discard/",
        scenarios.backlog_decide,
        {"decision": "discard"},
        name="backlog_discard",
    ),
    path("templates/", scenarios.template_list, name="templates"),
    path("templates/new/", scenarios.template_create, name="template_create"),
    path("templates/preview/", scenarios.template_preview, name="template_preview"),
    path("templates/<int:pk>/", scenarios.template_edit, name="template_edit"),
    path("templates/<int:pk>/delete/", scenarios.template_delete_view, name="template_delete"),
    path(
        "templates/<int:pk>/cancel-waiting/",
        scenarios.template_cancel_waiting,
        name="template_cancel_waiting",
    ),
    path("offers/", scenarios.offer_list, name="offers"),
    path("offers/<int:pk>/delete/", scenarios.offer_delete_view, name="offer_delete"),
]
