from __future__ import annotations

from django.contrib import admin

from .models import Report


@admin.register(Report)
class ReportAdmin(admin.ModelAdmin):
    list_display = ("id", "name", "limit", "status", "prime_count", "created_at")
    list_filter = ("status",)
    readonly_fields = ("task_id", "created_at", "finished_at")
