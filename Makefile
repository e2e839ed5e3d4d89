# botfleet: `make run` to try it, `make test` to check it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Two install steps: what running needs (`make run`), then the test toolchain on top of it
# (`make test`, lint, bench, fuzz, docs), so a first `make run` never waits for the test tools.
RUN_STAMP := $(VENV)/.run-stamp
STAMP     := $(VENV)/.dev-stamp
SITE      := .botfleet/site

.PHONY: run test test-fast test-node test-pg test-pg-serial test-sqlite test-cluster test-cluster-run lint docs bench fuzz clean

# Two distributions from this tree: botfleet-runtime (runtime/) and botfleet-server (here), both
# editable. The telegram kind's aiogram comes with the dev extra (botfleet-runtime[telegram]).
$(RUN_STAMP): pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -e ./runtime -e .
	touch $(RUN_STAMP)

# The `dev` extra: pytest, ruff, mypy, schemathesis, selenium, matplotlib, mkdocs-material...
$(STAMP): $(RUN_STAMP)
	$(BIN)/pip install --quiet -e ./runtime -e '.[dev]'
	touch $(STAMP)

## run: the manager on the embedded default (SQLite, embedded Redis, process backend)
run: $(RUN_STAMP)
	$(BIN)/botfleet migrate
	$(BIN)/botfleet serve --welcome

## test: install and start PostgreSQL, Redis and a Docker Engine, build the images, lint and
## type-check, then run every tier on PostgreSQL and the tests that exercise SQL again on SQLite;
## ends with the 15 slowest tests of the whole run
test: $(STAMP)
	bash scripts/test-services.sh
	bash scripts/docker-engine.sh
	mkdir -p .botfleet
	# The images build while the linters and the Node tests run (their log is shown after);
	# then the browser bot's image (over 1 GB, from Debian's mirror) builds in the background
	# on the runtime image, and its test waits for it.
	bash scripts/build-images.sh >.botfleet/images.log 2>&1 & images=$$!; \
	  $(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy \
	  && $(BIN)/mkdocs build --strict --quiet --site-dir $(SITE) && $(MAKE) test-node; \
	  checked=$$?; wait $$images; built=$$?; cat .botfleet/images.log; \
	  test $$checked -eq 0 -a $$built -eq 0
	bash scripts/build-browser-image.sh >.botfleet/browser-image.log 2>&1 &
	rm -rf $(RESULTS)
	# The cluster lane (a three-node Swarm, mostly waiting on its drills' clocks) runs beside
	# the PostgreSQL tier, its output shown after it; it ends before the serial tests restart
	# PostgreSQL.
	$(MAKE) test-cluster-run >.botfleet/cluster.log 2>&1 & cluster=$$!; \
	  BOTFLEET_TEST_DATABASE=postgresql $(PYTEST_N) -m "not serial and not cluster" \
	    --junitxml=$(RESULTS)/pg.xml; pg=$$?; wait $$cluster; cluster=$$?; \
	  cat .botfleet/cluster.log; test $$pg -eq 0 -a $$cluster -eq 0
	# The `serial` tests restart PostgreSQL, which the SQLite tier never uses: they run beside
	# it, their output shown after it.
	$(MAKE) test-pg-serial >.botfleet/serial.log 2>&1 & serial=$$!; \
	  $(MAKE) test-sqlite; sqlite=$$?; wait $$serial; serial=$$?; cat .botfleet/serial.log; \
	  test $$sqlite -eq 0 -a $$serial -eq 0
	$(BIN)/python -m tests.slowest $(RESULTS)/*.xml

## test-fast: the unit tier alone (tests/unit: no services, no processes), in seconds
test-fast: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/unit

## test-node: the Node.js SDK's own tests (sdk/node, `node --test`); needs node 20 or later
test-node:
	@if command -v node >/dev/null 2>&1; then \
		cd sdk/node && timeout 300 node --test --test-timeout=60000 test/*.test.js; \
	else \
		echo "SKIPPED: the Node.js SDK tests (sdk/node): no 'node' on PATH (install node >= 18)"; \
	fi

# Two workers, a test module on one worker (its manager is started once); the tests marked
# `serial` (they restart PostgreSQL, which every other PostgreSQL test uses) run afterwards.
# Three workers would finish sooner (two keep the cores ~60% busy) but made timing-bound tests
# flaky (a 200-request burst past its admission wait, a token bucket's refill count).
PYTEST_N := $(BIN)/pytest -p no:cacheprovider -n 2 --dist loadscope
RESULTS  := .botfleet/test-results

# Every tier (tests/unit, tests/integration, tests/e2e) on PostgreSQL.
test-pg: $(STAMP)
	BOTFLEET_TEST_DATABASE=postgresql $(PYTEST_N) -m "not serial and not cluster" --junitxml=$(RESULTS)/pg.xml
	$(MAKE) test-pg-serial

# The tests marked `serial` (they restart PostgreSQL), alone.
test-pg-serial: $(STAMP)
	BOTFLEET_TEST_DATABASE=postgresql $(BIN)/pytest -p no:cacheprovider -m serial \
		--junitxml=$(RESULTS)/pg-serial.xml

# Only the tests that exercise SQL (marker `sql`, set by folder in tests/conftest.py) run again on
# SQLite; fleet tests that merely need a manager run once, above.
test-sqlite: $(STAMP)
	BOTFLEET_TEST_DATABASE=sqlite $(PYTEST_N) -m "sql and not serial and not cluster" --junitxml=$(RESULTS)/sqlite.xml

## test-cluster: the multi-node drills alone: a real three-node Docker Swarm in network
## namespaces the tests make (tests/cluster), the swarm backend's contract suite and its drills
test-cluster: $(STAMP)
	bash scripts/test-services.sh
	bash scripts/docker-engine.sh
	bash scripts/build-images.sh
	$(MAKE) test-cluster-run

# The cluster lane itself (make test runs it beside the SQLite tier).
test-cluster-run: $(STAMP)
	BOTFLEET_TEST_DATABASE=postgresql $(BIN)/pytest -p no:cacheprovider -m cluster tests/cluster \
		--junitxml=$(RESULTS)/cluster.xml

## fuzz: the schemathesis run of every endpoint, with many more examples than `make test`
fuzz: $(STAMP)
	bash scripts/test-services.sh
	BOTFLEET_FUZZ_EXAMPLES=$${BOTFLEET_FUZZ_EXAMPLES:-400} $(BIN)/pytest -p no:cacheprovider tests/integration/api/test_fuzz.py

## lint: ruff (rules and format) and mypy (pydantic plugin) over the whole tree
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## docs: the documentation site (mkdocs.yml, docs/), built strictly into .botfleet/site;
## `$(BIN)/mkdocs serve` shows it while you edit
docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir $(SITE)

## bench: the benchmark suite (start latency, bursts, command round trip, load, memory,
## reconciler tick), each figure beside its floor: bench/results/latest.{json,md}, latencies.png
bench: $(STAMP)
	bash scripts/test-services.sh
	bash scripts/docker-engine.sh
	bash scripts/build-images.sh
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .botfleet
