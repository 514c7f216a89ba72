# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
DEMO_OUT ?= demo-output

.PHONY: install demo test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/protstore demo --out $(DEMO_OUT)

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) benchmarks/bench_store.py
	$(PY) benchmarks/bench_codecs.py --store $(DEMO_OUT)/store.zarr
	$(PY) benchmarks/bench_batching.py
	$(PY) benchmarks/bench_train.py --store $(DEMO_OUT)/store.zarr
	$(PY) benchmarks/bench_evaluate.py --store $(DEMO_OUT)/store.zarr
	$(PY) benchmarks/bench_ema.py

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache
