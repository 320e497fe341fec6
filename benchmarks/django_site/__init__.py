"""A tiny Django site for ``benchmarks/django_vs_db.py``: its settings choose the tasks
backend (sqlitejobq or django-tasks-db) and the SQLite file from environment variables."""
