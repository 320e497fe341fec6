"""The management commands of sqlitejobq's Django app."""
