# prfleet: `make demo` and `make test` set up everything they need themselves.
SHELL := /bin/bash
VENV := .venv
SAMVENV := .venv-sam
CKVENV := .venv-checkov
BIN := $(VENV)/bin
# Lambda runs python3.12: use it where present (also under pyenv), else the newest 3.11+.
PYTHON ?= $(shell for p in python3.12 $$(ls -d $$HOME/.pyenv/versions/3.12*/bin/python3.12 2>/dev/null) python3.11 python3; do \
	$$p -c 'import sys; assert sys.version_info >= (3, 11)' >/dev/null 2>&1 && { echo $$p; break; }; done)

.PHONY: install demo test lint validate build bench clean serve soak browser

install: $(VENV)/.installed

$(VENV)/.installed: requirements-dev.txt layers/prfleet/requirements.txt pyproject.toml
	@test -n "$(PYTHON)" || { echo "need python3.11 or newer"; exit 1; }
	@echo "prfleet: first run: creating $(VENV) with $(PYTHON) and installing the pinned dependencies of"
	@echo "         requirements-dev.txt (boto3, moto, anthropic, powertools, pytest, ruff, cfn-lint; about a minute)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@
	@echo "prfleet: $(VENV) ready"

# The SAM CLI pins an older boto3 than ours: it gets its own virtual environment.
$(SAMVENV)/.installed: requirements-sam.txt
	@test -n "$(PYTHON)" || { echo "need python3.11 or newer"; exit 1; }
	@echo "prfleet: installing the SAM CLI into $(SAMVENV) (its own boto3 pin; about a minute, once)"
	$(PYTHON) -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install -q --upgrade pip
	$(SAMVENV)/bin/pip install -q -r requirements-sam.txt
	touch $@

# checkov pins an older boto3 (and packaging) than ours too: its own virtual environment, like the SAM CLI.
$(CKVENV)/.installed: requirements-checkov.txt
	@test -n "$(PYTHON)" || { echo "need python3.11 or newer"; exit 1; }
	@echo "prfleet: installing checkov into $(CKVENV) (its own boto3 pin; about a minute, once)"
	$(PYTHON) -m venv $(CKVENV)
	$(CKVENV)/bin/pip install -q --upgrade pip
	$(CKVENV)/bin/pip install -q -r requirements-checkov.txt
	touch $@

demo: install
	$(BIN)/prfleet demo

serve: install
	$(BIN)/prfleet local serve --port 8787

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Offline: cfn-lint, then SAM's own lint (plain `sam validate` needs a region, hence --region), then checkov's
# CloudFormation checks: non-zero on any finding not fixed or skipped with a reason in the resource's Metadata
# (docs/security.md). --skip-download: no Prisma Cloud look-ups; CKV_SKIP_PACKAGE_UPDATE_CHECK: no PyPI one.
validate: install $(SAMVENV)/.installed $(CKVENV)/.installed
	$(BIN)/cfn-lint template.yaml
	SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam validate --lint --region us-east-1
	CKV_SKIP_PACKAGE_UPDATE_CHECK=true $(CKVENV)/bin/checkov -f template.yaml --framework cloudformation \
		--skip-download --quiet --compact
	# ... and once per model provider, with that provider's parameters (.ci/provider_templates.py)
	$(BIN)/python .ci/provider_templates.py build/providers
	$(BIN)/cfn-lint build/providers/template.*.json
	for p in anthropic claude-platform-aws bedrock; do \
		SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam validate --lint --region us-east-1 -t build/providers/template.$$p.json || exit 1; done

# sam build resolves the layer's wheels for python3.12 manylinux with pip: it needs python3.12 first on PATH.
# Then the built sizes are checked against Lambda's limits (the table goes to docs/performance.md).
build: install $(SAMVENV)/.installed
	@test -n "$(PYTHON)" && $(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 12)' \
		|| { echo "sam build needs python3.12 (the Lambda runtime) on PATH or under pyenv"; exit 1; }
	PATH="$$(dirname $$(command -v $(PYTHON))):$$PATH" SAM_CLI_TELEMETRY=0 $(SAMVENV)/bin/sam build --region us-east-1
	$(BIN)/python .ci/package_sizes.py .aws-sam/build

# The review-page test runs in headless Chromium: installed with apt-get where that works (root, Debian/Ubuntu),
# quick when present; elsewhere the test is skipped and says why (CI sets PRFLEET_REQUIRE_BROWSER=1: it fails).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 \
		|| command -v google-chrome >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "prfleet: installing chromium (apt-get) for the review-page browser test"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
		else echo "prfleet: no chromium and no root apt-get: the review-page browser test will be skipped"; fi; }

test: install browser
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/cfn-lint template.yaml
	$(BIN)/pytest -n 2 --dist loadfile

# BENCH names parts to run alone, e.g. make bench BENCH=review_time (not in the default run: tens of minutes).
BENCH ?=
bench: install
	$(BIN)/python -m prfleet_local.bench $(BENCH)

# The whole stack under load and faults, every invariant checked (non-zero exit if one fails). Scale with
# SOAK_ARGS, e.g. make soak SOAK_ARGS="--prs 6 --files 3 --repos 2" (default: 50 PRs x 10 files x 3 agents).
SOAK_ARGS ?=
soak: install
	$(BIN)/python -m prfleet_local.soak $(SOAK_ARGS)

clean:
	rm -rf $(VENV) $(SAMVENV) $(CKVENV) .aws-sam .pytest_cache
