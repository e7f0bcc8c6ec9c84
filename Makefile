# Set-up, demo and tests on a fresh machine (no network beyond the package registries).
VENV ?= .venv
PY := $(VENV)/bin/python
ROSPR := $(VENV)/bin/rospr
TINY := build/tiny-t0

.PHONY: setup demo test test-fast tiny docs clean

setup: $(VENV)/.installed

# torch first, pinned exactly: on these machines 2.13.0 resolves to the local CPU wheel; anything
# looser would pull the newest CUDA build. The project's own pin (<2.14) is then already satisfied.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,serve,export]'
	# promptsource 0.2.3's templates into the data cache (~/.cache/rospr/data): the registry's sdist, else the
	# repository at v0.2.3, every file checked against harness/data/manifests. Without them the built-in
	# tasks still run, and the tests that need the templates skip, saying so.
	$(ROSPR) data fetch templates || echo "warning: no promptsource templates (see above); \
	  rospr data fetch templates --from PATH takes a copy you have"
	touch $@

$(TINY)/config.json: $(VENV)/.installed
	$(ROSPR) tiny --out $(TINY) --size tiny

tiny: $(TINY)/config.json

demo: $(TINY)/config.json
	$(ROSPR) run configs/demo.yaml --out runs/demo
	@echo "report: runs/demo/report.md"

# The suite downloads nothing. Its real-data tests read the data cache (setup fetched the templates;
# BIG-bench's 1.0.0 sdist has left the registry: `rospr data fetch bigbench --from PATH` takes a copy),
# $ROSPR_SHARED_DATA, or ../shared/data beside the clone; where none has a data set, they skip.
test: setup
	$(PY) -m pytest -q

# The fast tier: unit tests only (no tests/e2e, nothing marked slow), on two workers (pytest-xdist; an idle
# worker steals queued tests, so neither waits on the other's long tail).
test-fast: setup
	$(PY) -m pytest -q -n 2 --dist worksteal -m "not slow" --ignore=tests/e2e

# the generated parts of README.md and docs/ (the results schema, measured figures)
docs: setup
	$(PY) -m docs.generate

clean:
	rm -rf build runs .pytest_cache
