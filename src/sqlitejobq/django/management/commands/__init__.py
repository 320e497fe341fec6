"""``sqlitejobq_worker``: run the Django tasks enqueued through ``TasksBackend``."""
