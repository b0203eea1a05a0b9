# The two commands:  make run   (the service, with local Postgres and cluster)
#                    make test  (the whole test suite, against real components)
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PORT ?= 8000
PYTEST_ARGS ?=

.PHONY: run test pytest lint venv postgres kube kube-down browser image clean help

help:
	@echo "make run    start Postgres, the local cluster (unless KUBECONFIG is set), web (gunicorn) on :$(PORT), a worker and the watcher"
	@echo "make test   start Postgres and the local cluster, then run the whole test suite"
	@echo "make lint   ruff"

$(VENV)/.installed: requirements.txt requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

postgres:
	@scripts/postgres up >/dev/null

# The local control plane, unless the user points us at a cluster of their own.
kube:
	@if [ -z "$${KUBECONFIG:-}" ]; then scripts/kube up; else echo "[kube] using KUBECONFIG=$$KUBECONFIG"; fi

kube-down:
	scripts/kube down

# Debian's Chromium for the dashboard's browser tests (Playwright drives it; it downloads no browser).
browser:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ]; then echo "[browser] installing Debian's chromium"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "[browser] chromium is missing: sudo apt-get install chromium" >&2; exit 1; fi; fi

# podman, runc and mmdebstrap (as root, when missing and no Docker engine runs) for the image's smoke
# test; the image then builds in the background while the cluster starts (scripts/image).
image:
	@scripts/image prepare

# With the local cluster, `scripts/kube env` says how previews are reached (Traefik's IngressClass, the URL's
# scheme and port), the demo's pods go to its real node, and hosts no route claims (a preview asleep or gone)
# are sent to the web process.
run: venv postgres kube
	@if [ -z "$${KUBECONFIG:-}" ]; then eval "$$(scripts/kube env)"; fi; \
	if [ -n "$${PREVIEWS_LOCAL_NODE_SELECTOR:-}" ]; then scripts/node fallback "http://127.0.0.1:$(PORT)"; fi; \
	demo=(--node-selector "$${PREVIEWS_LOCAL_NODE_SELECTOR:-}" --tolerations "$${PREVIEWS_LOCAL_TOLERATIONS:-}" \
	  --tls-secret "$${PREVIEWS_LOCAL_TLS_SECRET:-}"); \
	export DJANGO_DEBUG="$${DJANGO_DEBUG:-true}"; \
	$(PY) manage.py migrate --no-input; \
	$(PY) manage.py ensure_schedules; \
	$(PY) manage.py seed_demo "$${demo[@]}"; \
	if [ -n "$${PREVIEWS_LOCAL_CA:-}" ]; then echo "(its certificate is the local cluster's: curl --cacert $$PREVIEWS_LOCAL_CA," \
	  "or trust that CA in your browser, or open http://pr-1.preview.localhost:$$PREVIEWS_LOCAL_HTTP_PORT/)"; fi; \
	PREVIEWS_WEB_PORT=$(PORT) exec $(VENV)/bin/honcho --no-colour start -f Procfile

# Tests always use the project's own local cluster, never the KUBECONFIG a
# developer may have set for real work.
test: venv postgres browser image
	@scripts/kube up
	@$(MAKE) --no-print-directory pytest

# The suite alone, for when Postgres and the cluster already run.
pytest: venv
	@KUBECONFIG="$$(scripts/kube kubeconfig)" $(VENV)/bin/pytest $(PYTEST_ARGS)

lint: venv
	$(VENV)/bin/ruff check .

clean:
	scripts/kube down --wipe || true
	scripts/postgres down || true
	rm -rf .state
