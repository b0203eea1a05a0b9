# syntax=docker/dockerfile:1
# One image for the web server, the worker and migrations, chosen by command:
#   web (default): gunicorn -c config/gunicorn.py config.wsgi:application
#   worker:        python manage.py qcluster
#   migrate:       python manage.py migrate --no-input && python manage.py ensure_schedules

FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
# All pinned dependencies ship wheels (psycopg-binary included), so no compiler is needed here either.
RUN python -m venv /venv && /venv/bin/pip install --no-cache-dir -r requirements.txt
COPY . .
RUN DJANGO_SECRET_KEY=collectstatic-only /venv/bin/python manage.py collectstatic --no-input

FROM python:3.11-slim-bookworm
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home previews
WORKDIR /app
COPY --from=build /venv /venv
COPY --from=build --chown=10001:10001 /app /app
USER 10001
EXPOSE 8000
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application"]
