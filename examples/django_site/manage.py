#!/usr/bin/env python
"""Django's command line for the example site: ``python examples/django_site/manage.py
migrate`` (from the repository root, or ``python manage.py ...`` from this folder)."""

from __future__ import annotations

import os
import sys


def main() -> None:
    # Python puts this file's folder first on sys.path: ``mysite`` and ``reports`` import
    # from wherever the command is run
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "mysite.settings")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
