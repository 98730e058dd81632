# Every target sets up what it needs: a fresh clone runs `make demo` or `make test` and nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo lint typecheck pytest bench soak clean

# The web service's browser test drives Debian's Chromium (Playwright downloads no browser
# here). Installed only when missing; on CI a failed install fails the run, elsewhere the test
# skips with its reason.
CHROMIUM := /usr/bin/chromium

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy --strict nbdl

pytest: $(STAMP) | $(CHROMIUM)
	$(BIN)/python -m pytest

test: lint typecheck pytest

demo: $(STAMP)
	$(BIN)/nbdl demo

$(CHROMIUM):
	@SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	{ $$SUDO apt-get update -qq && \
	  $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	{ [ -z "$$CI" ] || exit 1; echo "warning: chromium not installed; the browser test will skip"; }

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache

# Benchmarks (not part of `make test`): nbdl vs curl, wget, aria2c and parfive on a local nginx.
# libnginx-mod-http-echo: the latency workload's 20 ms before every response (echo_sleep).
BENCH_DEBS := nginx libnginx-mod-http-echo aria2 wget curl time
bench: $(STAMP)
	@missing=""; for path in /usr/sbin/nginx /usr/lib/nginx/modules/ngx_http_echo_module.so \
		/usr/bin/aria2c /usr/bin/wget /usr/bin/curl /usr/bin/time; do \
		[ -e $$path ] || missing=yes; done; \
	if [ -n "$$missing" ]; then \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq $(BENCH_DEBS); fi
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python benchmarks/bench.py $(BENCH_ARGS)

# Soak (not part of `make test`): nbdl processes killed at random and restarted, while another
# one shares the folder, against a faulty local server; checks every byte. SOAK_ARGS="--seed 2".
soak: $(STAMP)
	$(BIN)/python benchmarks/soak.py $(SOAK_ARGS)
