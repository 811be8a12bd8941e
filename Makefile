# sparsyn: the two commands of the README, plus a few extras.
#   make run    - set up .venv with pinned dependencies, run `sparsyn run` on the built-in default
#   make test   - same set-up, install Icarus if missing (apt-get, as root), run the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: run test test-slow iverilog clean prove mutate

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/sparsyn run

test: $(STAMP) iverilog
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# long sweeps and big FPGA builds
test-slow: $(STAMP) iverilog
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

# formal proofs (all, incl. the slow ones) and the mutation check (every listed bug must be caught)
prove: $(STAMP)
	$(BIN)/sparsyn prove

mutate: $(STAMP) iverilog
	$(BIN)/sparsyn bench --mutants

iverilog:
	@if command -v iverilog >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing Icarus Verilog (apt-get install iverilog)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iverilog >/dev/null; \
	else \
		echo "NOTE: iverilog is missing and this is not root: the Icarus benches will be skipped"; \
	fi

clean:
	rm -rf work .pytest_cache
