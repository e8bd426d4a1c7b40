# Two commands for a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-quick test-amqp bench bench-tools lint install clean alerts prometheus-tools chromium-tools netns-tools fuzz

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first: the CPU build on disk (a bare `torch` would pull a multi-GB CUDA build)
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/stockq demo --epochs 3

# promtool, prometheus and Alertmanager for the alert tests (Debian packages); without root they skip.
prometheus-tools:
	@command -v promtool >/dev/null && command -v prometheus-alertmanager >/dev/null || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends prometheus prometheus-alertmanager; } || \
	  echo "promtool/alertmanager missing and not installable: the alert tests skip"

# Grafana's alert rules, generated from compose/prometheus/alerts.yml (tests fail when they drift).
alerts: $(STAMP)
	$(BIN)/python compose/alertgen.py grafana

# Chromium and its driver for the console's browser test (Debian packages, never a browser download);
# without root it skips.
chromium-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends chromium chromium-driver; } || \
	  echo "chromium/chromedriver missing and not installable: the console browser test skips"

# ip (network namespaces) and socat for the multi-host test; without root it skips.
netns-tools:
	@command -v ip >/dev/null && command -v socat >/dev/null || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends iproute2 socat; } || \
	  echo "ip/socat missing and not installable: the multi-host test skips"

test: $(STAMP) prometheus-tools chromium-tools netns-tools
	$(BIN)/ruff check .
	# Two streams (pytest-xdist, one module at a time each, a private redis-server per stream; tests/conftest.py).
	$(BIN)/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
	# The end-to-end backbone again with RabbitMQ as the broker (the rest of the suite runs on Redis;
	# tests/test_broker_amqp.py and both cases of tests/test_multihost.py run on RabbitMQ in the first pass).
	$(BIN)/python -m pytest -q --broker amqp tests/test_backbone_e2e.py

# Every end-to-end suite with RabbitMQ as the broker.
test-amqp: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --broker amqp

# schemathesis, every check, against a live gunicorn (exceptions only in tests/schemathesis.toml).
fuzz: $(STAMP)
	STOCKQ_FUZZ_EXAMPLES=50 $(BIN)/python -m pytest -q -s tests/test_fuzz_api.py

test-quick: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

BENCHES ?= features skill queue inference agent chaos memory jobs_list metrics_cost submit scale

# wrk drives the submit-throughput figures of bench/submit.py and bench/scale.py (a Debian package).
bench-tools:
	@command -v wrk >/dev/null || \
	  { apt-get update -qq && apt-get install -y --no-install-recommends wrk; } || \
	  { echo "wrk missing and not installable: the submit benchmarks cannot run"; exit 1; }

bench: $(STAMP) bench-tools
	for b in $(BENCHES); do $(BIN)/python -m bench.$$b || exit 1; done

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean:
	rm -rf var .pytest_cache
