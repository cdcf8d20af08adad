# The README's two commands: `make run` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
HOST ?= 127.0.0.1
PORT ?= 8000
WORKERS ?= 1
ROUTERWEB_SHUTDOWN_GRACE_S ?= 30
# Several workers: their metrics directory (from the environment or .env), emptied before they start.
PROMETHEUS_MULTIPROC_DIR ?= $(shell sed -n 's/^PROMETHEUS_MULTIPROC_DIR=//p' .env 2>/dev/null)
export ROUTERWEB_PUBLIC_URL ?= http://$(HOST):$(PORT)

.PHONY: run test lint format setup browser bench bench-dashboard clean

# Two stamps: .installed for what runs the app (`make run`), .installed-dev for the tools on top of it
# (`make test`, `lint`, `format`, `bench`). Either is redone when a requirements file it reads changes.
$(VENV)/.installed: requirements.txt
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements.txt requirements-dev.txt
	$(PY) -m pip install --quiet -r requirements-dev.txt
	@touch $@

# A local .env with a generated SECRET_KEY, so `make run` works with DEBUG off and no setup, and the
# offline demo provider on (it is off unless a .env or the environment turns it on).
.env:
	@echo "SECRET_KEY=$$(python3 -c 'import secrets; print(secrets.token_urlsafe(50))')" > .env
	@echo "ROUTERWEB_DEMO_PROVIDER=1" >> .env
	@echo "created .env with a generated SECRET_KEY and the demo provider on"

# seed_demo fills an empty registry only: a restart never undoes an admin edit. The demo provider's
# address is the path /demo/v1 (reached where each call comes in), so no port needs remembering.
setup: $(VENV)/.installed .env
	@grep -q '^ROUTERWEB_DEMO_PROVIDER=' .env || echo "ROUTERWEB_DEMO_PROVIDER=1" >> .env
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input --verbosity 0
	$(PY) manage.py seed_demo
	$(PY) manage.py ensure_admin

# Serves with the production command of routerweb/serve.py (tests/test_serve.py checks that they agree).
run: setup
	@echo ""
	@echo "  routerweb on $(ROUTERWEB_PUBLIC_URL)"
	@echo "    admin:      $(ROUTERWEB_PUBLIC_URL)/admin/   (user: admin)"
	@echo "    playground: $(ROUTERWEB_PUBLIC_URL)/playground/"
	@echo "    dashboard:  $(ROUTERWEB_PUBLIC_URL)/dashboard/"
	@echo "    API:        $(ROUTERWEB_PUBLIC_URL)/v1/   (keys: manage.py createapikey admin)"
	@echo ""
	@if [ -n "$(PROMETHEUS_MULTIPROC_DIR)" ]; then rm -rf "$(PROMETHEUS_MULTIPROC_DIR)" && mkdir -p "$(PROMETHEUS_MULTIPROC_DIR)"; fi
	$(VENV)/bin/uvicorn routerweb.asgi:application --host $(HOST) --port $(PORT) \
		--loop uvloop --http httptools --no-access-log --workers $(WORKERS) \
		--timeout-graceful-shutdown $(ROUTERWEB_SHUTDOWN_GRACE_S)

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@test -x /usr/bin/chromium || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: $(VENV)/.installed-dev browser lint
	SECRET_KEY=$${SECRET_KEY:-test-secret-key} $(PY) manage.py makemigrations --check --dry-run
	SECRET_KEY=$${SECRET_KEY:-test-secret-key} $(PY) manage.py collectstatic --no-input --verbosity 0
	SECRET_KEY=$${SECRET_KEY:-test-secret-key} $(PY) -m pytest

bench: $(VENV)/.installed-dev
	$(PY) -m bench.gateway

bench-dashboard: $(VENV)/.installed-dev
	$(PY) -m bench.dashboard --rows 1000000 --database-url postgres://postgres@127.0.0.1:5432/routerweb_dash_bench

clean:
	rm -rf $(VENV) staticfiles var db.sqlite3
