# The two set-up commands of the README: `make dev` and `make test`.
# Both create .venv (if missing) and install the project into it first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: dev test lint typecheck unit long clean proto chaos

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

dev: $(STAMP)
	$(BIN)/dynakv dev

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src tests bench

test: lint
	$(BIN)/python -m pytest -q -m "not long"

long: $(STAMP)
	$(BIN)/python -m pytest -q -m long

# The short chaos schedule on five nodes in network namespaces (root; docs/reliability.md).
# The last line is `acknowledged=A lost=L unexpected=U converge_s=S`. E.g.
# make chaos CHAOS_ARGS="--schedule long --seed 3 --keep"
chaos: $(STAMP)
	sh tests/chaos/install-tools.sh
	$(BIN)/python -m tests.chaos.run $(CHAOS_ARGS)

# Regenerate the PB messages (and their type stubs) from riak.proto.
proto: $(STAMP)
	cd src/dynakv/proto && PATH="$(abspath $(BIN)):$$PATH" $(abspath $(BIN))/python -m grpc_tools.protoc \
		-I. --python_out=. --mypy_out=. riak.proto

clean:
	rm -rf $(VENV) build src/*.egg-info .pytest_cache .mypy_cache .ruff_cache

# The benchmark (bench/run.py; docs/performance.md): e.g. make bench BENCH_ARGS="--runs 1"
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python bench/run.py $(BENCH_ARGS)
