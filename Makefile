# prfleet: `make demo` and `make test` set up everything they need themselves.
SHELL := /bin/bash
VENV := .venv
SAMVENV := .venv-sam
BIN := $(VENV)/bin
# Lambda runs python3.12: use it where present (also under pyenv), else the newest 3.11+.
PYTHON ?= $(shell for p in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null) python3.11 python3; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { echo $$p; break; }; done)

.PHONY: install demo test lint validate build bench clean serve

install: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt layers/prfleet/requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 or newer"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

$(SAMVENV)/.installed: requirements-sam.txt
	$(PYTHON) -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install -q --upgrade pip
	$(SAMVENV)/bin/pip install -q -r requirements-sam.txt
	touch $@

demo: install
	$(BIN)/prfleet demo

serve: install
	$(BIN)/prfleet local serve --port 8787

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

validate: install $(SAMVENV)/.installed
	$(BIN)/cfn-lint template.yaml
	$(SAMVENV)/bin/sam validate --lint --region us-east-1

build: $(SAMVENV)/.installed
	PATH="$$(dirname $$(command -v $(PYTHON))):$$PATH" $(SAMVENV)/bin/sam build --region us-east-1

test: install
	$(BIN)/ruff check .
	$(BIN)/cfn-lint template.yaml
	$(BIN)/pytest

bench: install
	$(BIN)/python -m prfleet_local.bench

clean:
	rm -rf $(VENV) $(SAMVENV) .aws-sam .pytest_cache
