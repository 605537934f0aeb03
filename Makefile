# make demo: a private PostgreSQL (unless WORKERPOOL_DSN is set) and a pool draining real files.
# make test: the whole suite against the real PostgreSQL, supervisord and gunicorn.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test lint demo install uninstall bench clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -x -q tests

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

demo: $(STAMP)
	$(BIN)/python scripts/demo.py

# make install [DESTDIR=/staging/root] [PREFIX=/opt/workerpool] [PYTHON=/usr/bin/python3], as root.
install:
	scripts/install.sh

# Keeps /etc/workerpool/workerpool.env, the logs and the user; PURGE=1 removes them too.
uninstall:
	scripts/uninstall.sh

# make bench: workerpool against its peers on this machine (docs/BENCHMARKS.md); BENCH_ARGS="--quick" for a smoke run.
bench: $(STAMP)
	$(BIN)/pip install -q -e '.[bench]'
	@if command -v npm >/dev/null; then npm ci --prefix bench/node --no-audit --no-fund --loglevel=error; \
	else echo "npm not found: graphile-worker and pg-boss will be skipped"; fi
	$(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) var build *.egg-info
