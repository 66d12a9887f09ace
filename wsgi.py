"""The one place that builds the app for a server (gunicorn wsgi:app)."""

from portal import create_app

app = create_app()
