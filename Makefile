# Each target builds its own virtualenv from nothing; `make demo` and `make test` are the two set-up commands.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO_WEEK ?= 2026-W48
export DIGEST_SECRET ?= demo-secret-change-me

.PHONY: demo test lint docs bench bench-quick dist-check clean browser-deps

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

# Debian's chromium drives the browser tests; Playwright never downloads its own.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

demo: $(STAMP)
	rm -rf outbox digest.db
	$(BIN)/digest ingest
	$(BIN)/digest subscribers import subscribers/ --skip-invalid
	$(BIN)/digest build weekly --week $(DEMO_WEEK)
	$(BIN)/digest edition approve weekly --week $(DEMO_WEEK)
	$(BIN)/digest send weekly --week $(DEMO_WEEK) --transport outbox
	@echo
	@echo "Open outbox/weekly/$(DEMO_WEEK)/index.html in a browser, or read the .eml files beside it."

# The whole suite on SQLite, then every store test again on a throwaway PostgreSQL server
# (tests/pgserver.py starts it on a loopback port and stops it even when tests fail).
test: $(STAMP) browser-deps
	@status=0; \
	DIGEST_TEST_POSTGRES= $(BIN)/python -m pytest -q -m "not postgres" || status=$$?; \
	echo "== store tests on PostgreSQL =="; \
	$(BIN)/python tests/pgserver.py $(BIN)/python -m pytest -q -m postgres || status=$$?; \
	exit $$status

# Rewrites the generated config and command references in README.md.
docs: $(STAMP)
	$(BIN)/cog -r README.md

lint: $(STAMP)
	$(BIN)/ruff check digest tests bench
	$(BIN)/ruff format --check digest tests bench
	$(BIN)/mypy digest
	$(BIN)/cog --check README.md

# Build the wheel, install it in a clean venv outside the repo, `digest init` an empty
# folder, run the commands it prints, serve, and open /subscribe and a one-click link.
dist-check: $(STAMP)
	$(BIN)/python tests/dist_check.py

# Benchmarks run PostgreSQL with its syncs on, as deployed (the tests' server skips them).
PG_DURABLE = -c fsync=on -c full_page_writes=on

# Every figure at 100,000 and 1,000,000 subscribers (SQLite in one process, then
# PostgreSQL with 1 and 2 workers), SMTP, import and export, one-click under load, kills.
bench: $(STAMP)
	$(BIN)/python tests/pgserver.py $(PG_DURABLE) $(BIN)/python bench/send.py
	$(BIN)/python bench/smtp.py
	$(BIN)/python bench/subscribers.py
	$(BIN)/python bench/web.py
	$(BIN)/python bench/kill.py

# The SendGrid path at 50,000 subscribers, on SQLite and on PostgreSQL workers (CI runs it).
bench-quick: $(STAMP)
	$(BIN)/python tests/pgserver.py $(PG_DURABLE) $(BIN)/python bench/send.py --quick

clean:
	rm -rf $(VENV) outbox preview digest.db test-artifacts
