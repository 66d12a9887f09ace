"""`flask jobs …`: list the jobs and run one by hand."""

from __future__ import annotations

from flask.cli import AppGroup

jobs_cli = AppGroup("jobs", help="Задания планировщика.")
