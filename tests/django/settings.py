"""Django settings of the worker subprocesses: DATABASES and TASKS from the test, as JSON
in $SQLITEJOBQ_DJANGO_TEST."""

from __future__ import annotations

import json
import os

_CONFIG = json.loads(os.environ["SQLITEJOBQ_DJANGO_TEST"])

SECRET_KEY = "sqlitejobq-tests"
USE_TZ = True
INSTALLED_APPS = ["sqlitejobq.django", "tests.django", *_CONFIG.get("APPS", [])]
DATABASES = _CONFIG["DATABASES"]
TASKS = _CONFIG["TASKS"]
