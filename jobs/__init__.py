"""Scheduled jobs: APScheduler set-up and thin job functions (app context → service → commit)."""
