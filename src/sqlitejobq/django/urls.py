"""The sqlitejobq dashboard's URLs: ``path("jobs/", include("sqlitejobq.django.urls"))``.

Extra arguments of ``include`` reach the view: ``{"backend": "other"}`` shows another TASKS
alias's queue, ``{"act_permission": "myapp.manage_jobs"}`` lets users with that permission
act as superusers do."""

from __future__ import annotations

from django.urls import re_path

from . import views

app_name = "sqlitejobq"

urlpatterns = [
    re_path(r"^(?P<subpath>.*)\Z", views.dashboard, name="dashboard"),
]
