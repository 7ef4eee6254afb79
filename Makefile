# Two entry points: `make demo` (the main job) and `make test` (the test suite). Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean

setup: $(STAMP)

# constraints.txt pins every package (and dependency) to the versions the project is tested with.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

# The ten slowest tests are listed at the end; `pytest -m "not slow"` skips the end-to-end runs.
test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=10 tests

clean:
	rm -rf $(VENV) demo_out
