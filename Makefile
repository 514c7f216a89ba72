# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# PYTHON picks the interpreter, VENV its virtualenv, DEMO_OUT where the demo writes; .ci/run
# uses them to run the suite on a second interpreter. PIP_UPGRADE=1 upgrades every dependency to
# the newest release the index serves (a new virtualenv gets those anyway). EXTRAS: the extras
# installed with the package (.ci/run's second pass adds torch and the peers' readers).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_OUT ?= demo-output
PIP_UPGRADE ?=
EXTRAS ?= test
# pytest-xdist workers for the suite (the 8-minute budget is for 2 cores); 0 runs it serially
TEST_WORKERS ?= 2

.PHONY: install demo test test-fast api bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(if $(PIP_UPGRADE),--upgrade --upgrade-strategy eager) -e '.[$(EXTRAS)]'
	$(PY) -m pip list --format=freeze | grep -iE '^(zarr|xarray|dask|numcodecs|numpy|jax|jaxlib|optax|h5py|numba|fsspec|crc32c|torch)==' | tr '\n' ' '; echo
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/protstore demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q -n $(TEST_WORKERS)

# the fast tier: everything but the tests marked slow (training, simulation, several processes)
test-fast: install
	$(PY) -m pytest -q -n $(TEST_WORKERS) -m "not slow"

# docs/api.md from the docstrings (a test fails when it is stale)
api: install
	$(PY) docs/gen_api.py

bench: install
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_codecs.py --store $(DEMO_OUT)/store.zarr
	$(PY) benchmarks/bench_batching.py
	$(PY) benchmarks/bench_train.py --store $(DEMO_OUT)/store.zarr
	$(PY) benchmarks/bench_evaluate.py --store $(DEMO_OUT)/store.zarr
	$(PY) benchmarks/bench_reduce.py
	$(PY) benchmarks/bench_ema.py
	$(PY) benchmarks/bench_checksum.py
	$(PY) benchmarks/bench_unit_checks.py
	$(PY) benchmarks/bench_faults.py
	$(PY) benchmarks/bench_open.py

clean:
	rm -rf $(VENV) .venv-py3* $(DEMO_OUT) .pytest_cache
