"""The WSGI entry point: `gunicorn -c health_app/gunicorn.conf.py health_app.wsgi:app`."""

from health_app import create_app

app = create_app()
