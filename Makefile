# The README's two commands: `make run` and `make test`. Both set up everything they need on a
# fresh Debian machine (run as root): system packages, .venv, Python packages, the database.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
FLASK := $(BIN)/flask --app portal
PORTAL_PORT ?= 8000
export PORTAL_PORT

# WeasyPrint needs Pango; reports and the UI need fonts with Cyrillic; tests need Chromium.
RUN_DEBS := libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core fonts-liberation
TEST_DEBS := $(RUN_DEBS) chromium

.PHONY: run test setup setup-test system-packages system-packages-test db demo lint format bench clean

run: setup db demo
	@$(FLASK) portal demo-logins
	@echo "Портал: http://127.0.0.1:$(PORTAL_PORT)"
	PORTAL_RUN_SERVICES=1 $(BIN)/gunicorn --bind 127.0.0.1:$(PORTAL_PORT) \
		--workers $${PORTAL_WORKERS:-2} --threads 4 --worker-class gthread \
		--access-logfile - wsgi:app

test: setup-test
	$(BIN)/ruff check portal jobs simulators tests bench wsgi.py
	$(BIN)/pytest $(PYTEST_ARGS)

setup: system-packages $(VENV)/.installed
setup-test: system-packages-test $(VENV)/.installed-test

system-packages:
	@scripts=$$(dpkg-query -W -f='$${Status}\n' $(RUN_DEBS) 2>/dev/null | grep -c "install ok installed"); \
	if [ "$$scripts" != "$(words $(RUN_DEBS))" ]; then \
		echo "Устанавливаю системные пакеты: $(RUN_DEBS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(RUN_DEBS); \
	fi

system-packages-test:
	@scripts=$$(dpkg-query -W -f='$${Status}\n' $(TEST_DEBS) 2>/dev/null | grep -c "install ok installed"); \
	if [ "$$scripts" != "$(words $(TEST_DEBS))" ]; then \
		echo "Устанавливаю системные пакеты: $(TEST_DEBS)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(TEST_DEBS); \
	fi

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(VENV)/bin/python
	$(BIN)/pip install -q ".[test]"
	touch $@ $(VENV)/.installed

db:
	$(FLASK) db upgrade

demo:
	$(FLASK) portal demo-data --once

lint:
	$(BIN)/ruff check portal jobs simulators tests bench wsgi.py

format:
	$(BIN)/ruff format portal jobs simulators tests bench wsgi.py

bench: setup-test
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/vimis.py
	$(BIN)/python bench/tfoms_files.py
	$(BIN)/python bench/tfoms_amqp.py
	$(BIN)/python bench/iemk.py
	$(BIN)/python bench/reports.py

clean:
	rm -rf $(VENV) build *.egg-info
