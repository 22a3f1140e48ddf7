# Shunter: `make demo` runs the whole system, `make test` runs the whole suite.
# Both create .venv at the repository root and install what they need (the Kafka broker is
# fetched from Maven Central into ~/.cache/shunter on first use).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install compile uncompile demo test test-unit test-integration typecheck broker-start broker-stop clean prereqs benchmarks robustness

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is needed"' 
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,plots,peer]'
	@touch $(STAMP)

install: $(STAMP)

# The hot policy modules compiled by mypyc into C extensions beside their sources, about twice as
# fast (tools/compile_policies.py). Rebuilt when a policy source changes; until then, and with
# SHUNTER_PURE_PYTHON=1, the policies run from source. `make uncompile` removes them.
COMPILED_STAMP := build/compile/.compiled-stamp
$(COMPILED_STAMP): $(STAMP) $(wildcard policies/*.py policies/plugins/*.py) tools/compile_policies.py
	$(PY) tools/compile_policies.py
	@touch $(COMPILED_STAMP)

compile: $(COMPILED_STAMP)

uncompile: install
	$(PY) tools/compile_policies.py --clean

# Java 17+ and Maven run the local broker; the suite also runs PostgreSQL and Chromium for real.
# On Debian/Ubuntu as root the missing ones are installed here.
prereqs:
	@bash .ci/prereqs.sh test

demo: install compile
	@bash .ci/prereqs.sh demo
	$(VENV)/bin/shunter demo

test: install prereqs typecheck compile
	$(PY) -m pytest -q

test-unit: install compile
	$(PY) -m pytest -q tests/unit tests/agents

test-integration: install compile
	$(PY) -m pytest -q tests/integration tests/chaos

# mypy cannot follow the editable install's folder mapping (package-dir in pyproject.toml), so
# it checks a tree of links spelled the way the package is installed: build/typecheck/shunter/*.
typecheck: install
	@rm -rf build/typecheck && mkdir -p build/typecheck/shunter
	@cp shunter/__init__.py build/typecheck/shunter/
	@for d in schemas streams agents policies connectors; do ln -s ../../../$$d build/typecheck/shunter/$$d; done
	cd build/typecheck && ../../$(PY) -m mypy --config-file ../../pyproject.toml -p shunter

broker-start: install
	$(VENV)/bin/shunter broker start

broker-stop: install
	$(VENV)/bin/shunter broker stop

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache
	rm -f policies/*.so policies/plugins/*.so

# Regenerates the committed benchmark reports under docs/benchmarks/ (about three minutes): each
# strategy runs three times, and decisions/s is the fastest run (policies/simulation.py: benchmark).
TRACE ?= ../shared/data/azure_llm_conv_2023.csv
benchmarks: install compile
	for u in 0.7 0.85 0.95; do \
	  $(VENV)/bin/shunter simulate --workload azure-llm --trace $(TRACE) --utilization $$u --seed 1 --timing-runs 3 --report docs/benchmarks; \
	done
	$(VENV)/bin/shunter simulate --workload seed-mix --tasks 5000 --utilization 0.9 --seed 7 --timing-runs 3 --report docs/benchmarks
	$(VENV)/bin/shunter simulate --workload seed-mix --tasks 20000 --utilization 0.9 --seed 3 --timing-runs 3 --report docs/benchmarks

# The quality benchmark on variants of the shared trace (seeds 1-5 and each half at 0.85, seeds 1-5
# at 0.9): docs/benchmarks/robustness-u0.85.md and robustness-u0.9.md. About 2 minutes compiled.
robustness: install compile
	$(VENV)/bin/shunter robustness --trace $(TRACE) --utilization 0.85 --seeds 1,2,3,4,5 --out docs/benchmarks
	$(VENV)/bin/shunter robustness --trace $(TRACE) --utilization 0.9 --seeds 1,2,3,4,5 --no-halves --out docs/benchmarks
