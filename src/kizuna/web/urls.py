from django.urls import path

from kizuna.web import contacts, customer_edit, points, privacy, subscriptions, views

app_name = "web"
urlpatterns = [
    path("", views.home, name="home"),
    path("customers/", views.customer_search, name="customer_search"),
    path("customers/<int:pk>/", views.customer_detail, name="customer_detail"),
    path("customers/<int:pk>/edit/", customer_edit.customer_edit, name="customer_edit"),
    path("customers/<int:pk>/identities/new/", customer_edit.identity_new, name="identity_new"),
    path(
        "customers/<int:pk>/identities/<int:identity_pk>/remove/",
        customer_edit.identity_remove,
        name="identity_remove",
    ),
    path("customers/<int:pk>/orders/", views.customer_orders, name="customer_orders"),
    path("customers/<int:pk>/points/", views.customer_points, name="customer_points"),
    path("customers/<int:pk>/points/adjust/", points.points_adjust_view, name="points_adjust"),
    path("customers/<int:pk>/timeline/", views.customer_timeline, name="customer_timeline"),
    path("customers/<int:pk>/export/", privacy.customer_export, name="customer_export"),
    path("customers/<int:pk>/erase/", privacy.customer_erase, name="customer_erase"),
    path(
        "customers/<int:pk>/subscriptions/<int:sub_pk>/cancel/",
        subscriptions.subscription_cancel_view,
        name="subscription_cancel",
    ),
    path(
        "customers/<int:pk>/subscriptions/<int:sub_pk>/pause/",
        subscriptions.subscription_pause_view,
        name="subscription_pause",
    ),
    path(
        "customers/<int:pk>/subscriptions/<int:sub_pk>/resume/",
        subscriptions.subscription_resume_view,
        name="subscription_resume",
    ),
    path(
        "customers/<int:pk>/subscriptions/<int:sub_pk>/next-delivery/",
        subscriptions.subscription_next_delivery_view,
        name="subscription_next_delivery",
    ),
    path(
        "customers/<int:pk>/subscriptions/<int:sub_pk>/cycle/",
        subscriptions.subscription_cycle_view,
        name="subscription_cycle",
    ),
    path("customers/<int:pk>/contacts/new/", contacts.contact_new, name="contact_new"),
    path(
        "customers/<int:pk>/consents/<str:channel>/<str:action>/",
        contacts.consent_change,
        name="consent_change",
    ),
]
