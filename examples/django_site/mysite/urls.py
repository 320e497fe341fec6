"""The site's URLs: the reports, the job dashboard for staff, the admin and the login."""

from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    path("reports/", include("reports.urls")),
    # sqlitejobq's dashboard behind Django's login: staff see it, superusers may act in it
    path("jobs/", include("sqlitejobq.django.urls")),
    path("accounts/", include("django.contrib.auth.urls")),  # login at /accounts/login/
    path("admin/", admin.site.urls),
]
