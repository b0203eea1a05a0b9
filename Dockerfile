# syntax=docker/dockerfile:1
# One image for the web server, the worker and migrations, chosen by command:
#   web (default): gunicorn -c config/gunicorn.py config.wsgi:application
#   worker:        python manage.py qcluster
#   migrate:       python manage.py migrate --no-input && python manage.py ensure_schedules
#
# BASE_IMAGE is any Debian bookworm image with Python 3.11 (`python`, `venv`, `useradd`). scripts/image
# builds with the official one when it can pull it, else with one bootstrapped from the Debian mirror.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
COPY requirements.txt .
# All pinned dependencies ship wheels (psycopg-binary included), so no compiler is needed here either.
# pip and setuptools are only needed to install, and the service uses the kubernetes package's
# synchronous client only: its asyncio copy (kubernetes/aio, 68 MB) stays out of the image.
RUN python -m venv /venv \
    && /venv/bin/pip install --no-cache-dir -r requirements.txt \
    && /venv/bin/pip uninstall --yes --quiet pip setuptools \
    && rm -r /venv/lib/python3*/site-packages/kubernetes/aio
COPY . .
RUN DJANGO_SECRET_KEY=collectstatic-only /venv/bin/python manage.py collectstatic --no-input

FROM ${BASE_IMAGE}
ENV PATH=/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    DJANGO_SETTINGS_MODULE=config.settings \
    PROMETHEUS_MULTIPROC_DIR=/tmp/prometheus
# The group gets the same fixed id as the user (useradd --user-group would pick a system gid).
RUN groupadd --system --gid 10001 previews \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --home-dir /app --no-create-home --shell /usr/sbin/nologin previews
WORKDIR /app
COPY --from=build /venv /venv
COPY --from=build --chown=10001:10001 /app /app
USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "-c", "config/gunicorn.py", "config.wsgi:application"]
