# flowforge: two commands on a fresh machine.
#   make run    set up, then train the default preset (toy2d_fm) into runs/toy2d_fm/
#   make test   set up, then run the test suite
PYTHON ?= python3

.PHONY: setup run test lint

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

run: setup
	$(PYTHON) -m flowforge train

test: setup
	$(PYTHON) -m pytest -q

lint: setup
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
