from __future__ import annotations

from django.urls import path

from . import views

app_name = "reports"

urlpatterns = [
    path("", views.create_report, name="create"),
    path("<int:pk>/", views.report_detail, name="detail"),
]
