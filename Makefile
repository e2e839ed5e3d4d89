# botfleet: `make run` to try it, `make test` to check it.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-pg test-sqlite lint bench fuzz clean

# Two distributions from this tree: botfleet-runtime (runtime/) and
# botfleet-server (here), both editable.
$(STAMP): pyproject.toml runtime/pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./runtime -e '.[dev]'
	touch $(STAMP)

## run: the manager on the embedded default (SQLite, embedded Redis, process backend)
run: $(STAMP)
	$(BIN)/botfleet migrate
	$(BIN)/botfleet serve --welcome

## test: install and start PostgreSQL, Redis and a Docker Engine, build the images, lint, then
## run the suite on PostgreSQL and the database-touching part again on SQLite
test: $(STAMP)
	bash scripts/test-services.sh
	bash scripts/docker-engine.sh
	bash scripts/build-images.sh
	$(BIN)/ruff check .
	$(MAKE) test-pg test-sqlite

test-pg: $(STAMP)
	BOTFLEET_TEST_DATABASE=postgresql $(BIN)/pytest -p no:cacheprovider

# Only the tests that touch the database run again on SQLite (they are marked `db`).
test-sqlite: $(STAMP)
	BOTFLEET_TEST_DATABASE=sqlite $(BIN)/pytest -p no:cacheprovider -m db

## fuzz: the schemathesis run of every endpoint, with many more examples than `make test`
fuzz: $(STAMP)
	bash scripts/test-services.sh
	BOTFLEET_FUZZ_EXAMPLES=$${BOTFLEET_FUZZ_EXAMPLES:-400} $(BIN)/pytest -p no:cacheprovider tests/test_fuzz.py

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

## bench: the benchmark suite (start latency, bursts, command round trip, load, memory,
## reconciler tick), each figure beside its floor: bench/results/latest.{json,md}, latencies.png
bench: $(STAMP)
	bash scripts/test-services.sh
	bash scripts/docker-engine.sh
	bash scripts/build-images.sh
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .botfleet
