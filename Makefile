# Tasks: `make demo` grades the bundled examples with the embedded model; `make test` runs
# every test (and smoke-runs every benchmark once). Both set up .venv on first use.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
SOURCES := $(shell find prometheus_lite convert kernels bench -type f -not -path '*/__pycache__/*') pyproject.toml CMakeLists.txt

.PHONY: install demo test bench lint clean

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch 2.13.0 (CPU) is only for the converter's reference tests against transformers.
# llama-cpp-python: the pinned version with our ggml-cpu patch (kernels/llama_cpp/), built
# once into $(VENV)/wheels; it satisfies the pin, so the package install keeps it.
$(STAMP): $(PY) $(SOURCES)
	$(PY) -m pip install -q "torch==2.13.0"
	$(PY) kernels/llama_cpp/build_wheel.py --wheel-dir $(VENV)/wheels --install
	$(PY) -m pip install -q ".[test,reference,bench,eval,integrations,serve]"
	touch $(STAMP)

install: $(STAMP)

# The embedded model is a 135M smoke-test model, not a judge: the point is the output's shape.
demo: $(STAMP)
	rm -f examples/out/grade.jsonl examples/out/compare.jsonl
	$(VENV)/bin/prometheus-lite grade --input examples/grade.jsonl --output examples/out/grade.jsonl
	$(VENV)/bin/prometheus-lite compare --input examples/compare.jsonl --output examples/out/compare.jsonl
	$(PY) examples/show.py examples/out/grade.jsonl examples/out/compare.jsonl

# `pytest` (not `python -m pytest`) so that tests import the installed package, not the tree.
# Two or more workers (pytest-xdist), each test file on one worker so that its module-scoped
# models, servers and Ray cluster are made once; most tests run llama.cpp on one thread.
# The schemathesis fuzz runs on its own: its generated tests share one node id, and xdist
# would run only one of them.
FUZZ := tests/test_server_fuzz.py
test: $(STAMP)
	$(VENV)/bin/pytest -n auto --maxprocesses 4 --dist loadfile --ignore $(FUZZ)
	$(VENV)/bin/pytest $(FUZZ)

bench: $(STAMP)
	mkdir -p .benchmarks
	$(VENV)/bin/pytest bench --benchmark-enable --benchmark-only --benchmark-json=.benchmarks/bench.json -s

lint:
	$(VENV)/bin/ruff check prometheus_lite convert tests bench

clean:
	rm -rf build .venv examples/out
