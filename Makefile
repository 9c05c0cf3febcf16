# EDIQA: `make demo` runs the main job on the bundled sample; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: install
	$(VENV)/bin/ediqa demo --out out/demo
	@echo "Demo outputs: out/demo/assess (result.json, heatmap.nrrd, overlay.png), out/demo/compare (compare.png, .csv, .json)"

test: install
	$(PY) -m pytest -q Testing

clean:
	rm -rf out simulated .pytest_cache
