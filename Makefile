# Set-up, demo and tests on a fresh machine (no network beyond the package registries).
VENV ?= .venv
PY := $(VENV)/bin/python
ROSPR := $(VENV)/bin/rospr
TINY := build/tiny-t0

.PHONY: setup demo test test-data tiny clean

setup: $(VENV)/.installed

# torch first, pinned exactly: on these machines 2.13.0 resolves to the local CPU wheel; anything
# looser would pull the newest CUDA build. The project's own pin (<2.14) is then already satisfied.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test,serve]'
	# promptsource 0.2.3's templates from its sdist on the package registry (sha256-pinned; the data cache, ~/.cache/rospr/data)
	$(ROSPR) data fetch templates
	touch $@

$(TINY)/config.json: $(VENV)/.installed
	$(ROSPR) tiny --out $(TINY) --size tiny

tiny: $(TINY)/config.json

demo: $(TINY)/config.json
	$(ROSPR) run configs/demo.yaml --out runs/demo
	@echo "report: runs/demo/report.md"

# The suite reads the same promptsource / BIG-bench sdists users get: fetched once per machine into the
# data cache (pip checks their sha256; a cached copy is only checked, not fetched again).
test-data: setup
	$(ROSPR) data fetch templates bigbench

test: test-data
	$(PY) -m pytest -q

clean:
	rm -rf build runs .pytest_cache
