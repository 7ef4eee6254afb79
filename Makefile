# Two entry points: `make demo` (the main job) and `make test` (the test suite). Both set up .venv first.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test setup clean model

setup: $(STAMP)

# constraints.txt pins every package (and dependency) to the versions the project is tested with.
$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -r requirements.txt -c constraints.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python tools/demo.py

# Two pytest-xdist workers, one test file each at a time (a file's fixtures are built once); much of a
# test's time is single-threaded graph tracing, so a second worker uses the second core. `make test
# TEST_WORKERS=0` runs in one process. The ten slowest tests are listed at the end; `pytest -m "not
# slow"` skips the end-to-end runs.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile --durations=10 tests

# Rebuild d2im_tf/bundled/d2im_synthetic from scratch (data, both networks, export) with the recipe of
# configs/bundled.yaml; runs for many CPU hours and resumes where it stopped (docs/bundled_model.md).
model: $(STAMP)
	$(BIN)/python tools/train_bundled.py

clean:
	rm -rf $(VENV) demo_out
