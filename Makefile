# registry-admin: `make run` serves the app on embedded SQLite; `make test`
# runs the whole suite (SQLite, then PostgreSQL), installing what it needs.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
# What the suite drives for real: Apache and its htpasswd tool, the registry,
# skopeo, headless Chromium, wrk, nginx, and sqlite3 (the backup test).
SYSTEM_PACKAGES := apache2 apache2-utils docker-registry skopeo chromium wrk nginx-light sqlite3
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/registry_admin

export PYTHONDONTWRITEBYTECODE := 1

.PHONY: run test test-sqlite test-postgres venv system-packages postgres bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

venv: $(VENV)/.installed

var/secret_key:
	mkdir -p var
	$(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(50))' > $@
	chmod 600 $@

# The local server: migrations, static files, a first staff account (its
# password is printed, or taken from DJANGO_SUPERUSER_PASSWORD), then
# gunicorn with WhiteNoise, as in production. Without SECRET_KEY in the
# environment, settings read the key generated in var/secret_key.
run: venv var/secret_key
	$(BIN)/python manage.py migrate --noinput
	$(BIN)/python manage.py collectstatic --noinput --verbosity 0
	$(BIN)/python manage.py ensure_staff_user
	$(BIN)/python manage.py sync_htpasswd
	@echo "Serving http://$(HOST):$(PORT)/ (admin at /admin/)"
	$(BIN)/gunicorn registry_admin.wsgi --config gunicorn.conf.py --bind $(HOST):$(PORT)

system-packages:
	@missing=$$(for p in $(SYSTEM_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q "install ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing system packages:" $$missing; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

# The suite's second run needs PostgreSQL on 127.0.0.1:5432 with a `postgres`
# role it may use without a password (as on the CI machines). Install and
# start it if it is missing or stopped.
postgres:
	@dpkg-query -W -f='$${Status}\n' postgresql 2>/dev/null | grep -q "install ok installed" || { \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq postgresql >/dev/null; }
	@pg_isready -q -h 127.0.0.1 -p 5432 || pg_ctlcluster --skip-systemctl-redirect $$(ls /etc/postgresql | tail -n 1) main start
	@for i in $$(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && exit 0; sleep 1; done; echo "PostgreSQL is not answering on 127.0.0.1:5432" >&2; exit 1

test-sqlite: venv system-packages
	$(BIN)/pytest

test-postgres: venv system-packages postgres
	DATABASE_URL=$(TEST_DATABASE_URL) $(BIN)/pytest

test: test-sqlite test-postgres

bench: venv system-packages
	$(BIN)/python benchmarks/run_all.py

# Refresh the screenshots in docs/img (docs/staff-guide.md) from the browser tests.
.PHONY: screenshots
screenshots: venv system-packages
	REGISTRY_ADMIN_SCREENSHOTS=$(CURDIR)/docs/img $(BIN)/pytest tests/test_browser.py

lint: venv
	$(BIN)/pip install --quiet --disable-pip-version-check ruff==0.17.6
	$(BIN)/ruff check customers registry_admin tests benchmarks

clean:
	rm -rf $(VENV) staticfiles .pytest_cache
