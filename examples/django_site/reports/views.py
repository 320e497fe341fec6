"""A POST starts a report: its row and its task in one transaction. A GET shows the report
with its task's status, progress and return value."""

from __future__ import annotations

from typing import Any

from django import forms
from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.shortcuts import get_object_or_404
from django.urls import reverse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

try:
    from django.tasks import TaskResultStatus, task_backends
    from django.tasks.exceptions import TaskResultDoesNotExist
except ImportError:
    from django_tasks import TaskResultStatus, task_backends
    from django_tasks.exceptions import TaskResultDoesNotExist

from .models import Report
from .tasks import build_report


class ReportForm(forms.ModelForm):
    class Meta:
        model = Report
        fields = ("name", "limit")


@csrf_exempt  # an API for curl and scripts: it acts for no logged-in user, so no forgery
@require_POST
def create_report(request: HttpRequest) -> JsonResponse:
    """Create a report and enqueue its task, both or neither: the job is a row of this
    database, written in this transaction, so a worker never sees a job whose report was
    rolled back, nor is a report left without its job."""
    form = ReportForm(request.POST)
    if not form.is_valid():
        return JsonResponse({"errors": form.errors}, status=400)
    with transaction.atomic():
        report = form.save()
        result = build_report.enqueue(report.pk)
        report.task_id = result.id
        report.save(update_fields=["task_id"])
    url = reverse("reports:detail", args=[report.pk])
    return JsonResponse({"report": report.pk, "task": result.id, "url": url}, status=202)


@require_GET
def report_detail(request: HttpRequest, pk: int) -> JsonResponse:
    """The report, and its task as Django's Tasks framework and sqlitejobq see it."""
    report = get_object_or_404(Report, pk=pk)
    return JsonResponse(
        {
            "id": report.pk,
            "name": report.name,
            "limit": report.limit,
            "status": report.status,
            "prime_count": report.prime_count,
            "largest_prime": report.largest_prime,
            "summary": report.summary,
            "created_at": report.created_at,
            "finished_at": report.finished_at,
            "task": task_state(report.task_id),
        }
    )


def task_state(task_id: str) -> dict[str, Any] | None:
    """The status and return value of the task result ``task_id``, and the progress its
    sqlitejobq job reported; None once the job is gone (``sqlitejobq purge``)."""
    try:
        result = build_report.get_result(task_id)
    except TaskResultDoesNotExist:
        return None
    # progress is sqlitejobq's, not Django's: read it from the job (its id is the result's)
    job = task_backends[result.backend].queue.get(int(result.id))
    successful = result.status == TaskResultStatus.SUCCESSFUL
    return {
        "id": result.id,
        "status": result.status,
        "progress": job.progress,
        "progress_message": job.progress_message,
        "attempts": result.attempts,
        "return_value": result.return_value if successful else None,
        "errors": [error.exception_class_path for error in result.errors],
    }
