# flowforge: two commands on a fresh machine.
#   make run    set up, then train the default preset (toy2d_fm) into runs/toy2d_fm/
#   make test   set up, then run the test suite
PYTHON ?= python3

.PHONY: setup run test lint bench-setup bench bench-quick

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

run: setup
	$(PYTHON) -m flowforge train

test: setup
	$(PYTHON) -m pytest -q

lint: setup
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .

# Peer comparison (torchcfm, flow_matching): installs the peers without letting pip touch torch.
bench-setup: setup
	PYTHON=$(PYTHON) bash scripts/bench_setup.sh

bench: bench-setup
	$(PYTHON) benchmarks/peers_2d.py --profile

bench-quick: bench-setup
	$(PYTHON) benchmarks/peers_2d.py --quick
