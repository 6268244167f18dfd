# Quick start: `make demo` and `make test` set up everything they need in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The CPU build of torch: export needs torch, scoring never does. Override for a CUDA build.
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# Tested versions of every dependency: pip resolves the boto3/aiobotocore pins in seconds with them
# instead of backtracking for many minutes. setup.cfg keeps the open ranges users install with.
CONSTRAINTS := requirements/constraints.txt

.PHONY: demo test test-fast lint venv clean image bench-peers

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e ".[cpu,export,eval,dev]"
	touch $@

demo: $(STAMP)
	$(BIN)/emonet-batch demo

# The linter and formatter check first: they take a second, the tests a few minutes (the slowest are listed).
test: lint
	$(BIN)/python -m pytest -q --durations=12

# Everything that needs neither Ray nor torch nor the S3 server (markers in setup.cfg; tests/conftest.py sets them
# from the fixtures a test uses): under 30 s.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not ray and not torch and not s3 and not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The cluster image (Dockerfile); the README's "Install" shows the push and the cluster files that run it.
image:
	@test -n "$(IMAGE)" || { echo "make image: name the image, e.g. make image IMAGE=registry.example.com/emonet-batch:0.1.0" >&2; exit 2; }
	docker build -t "$(IMAGE)" .

# benchmarks/peers.py: our job, Ray Data's batch-inference pattern and Daft side by side. In a venv of its own: Daft
# 0.7 pins pyarrow < 26 and tqdm < 4.68, below the tested versions, so those two are left to pip there.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed

$(BENCH_STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	grep -v -e '^pyarrow==' -e '^tqdm==' $(CONSTRAINTS) > $(BENCH_VENV)/constraints.txt
	$(BENCH_VENV)/bin/python -m pip install --quiet -c $(BENCH_VENV)/constraints.txt "$(TORCH_SPEC)"
	$(BENCH_VENV)/bin/python -m pip install --quiet -c $(BENCH_VENV)/constraints.txt -e ".[cpu,export,bench]"
	touch $@

bench-peers: $(BENCH_STAMP)
	$(BENCH_VENV)/bin/python benchmarks/peers.py $(ARGS)

clean:
	rm -rf $(VENV) $(BENCH_VENV) emonet-demo .pytest_cache
