# syntax=docker/dockerfile:1
# One image runs the web server, the worker or migrations, chosen by command:
#   web:     gunicorn config.wsgi:application --bind 0.0.0.0:8000
#   worker:  python manage.py qcluster
#   migrate: python manage.py migrate --no-input
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
RUN python -m venv /venv && /venv/bin/pip install -r requirements.txt

FROM python:3.11-slim-bookworm
ENV PATH=/venv/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DJANGO_SETTINGS_MODULE=config.settings
RUN useradd --system --uid 10001 --home-dir /app previews
WORKDIR /app
COPY --from=build /venv /venv
COPY --chown=previews:previews . .
RUN DJANGO_SECRET_KEY=collectstatic-only python manage.py collectstatic --no-input
USER 10001
EXPOSE 8000
CMD ["gunicorn", "config.wsgi:application", "--bind", "0.0.0.0:8000", "--workers", "3"]
