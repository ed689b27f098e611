# The two commands: `make run` and `make test`. Both create .venv and install
# the project (with its test tools) first, once per change of pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test lint install bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) main.py --demo

# Lint and types: ruff (ruff.toml) and mypy (mypy.ini; strict for app/services and app/read).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy app

# pytest's exit code 5 ("no tests ran") is a failure here, not a pass.
test: lint
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest -q -p no:cacheprovider $(PYTEST_ARGS); \
	rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest ran no tests: failing" >&2; exit 1; fi; exit $$rc

bench: $(STAMP)
	$(PY) bench/guarded_vs_naive.py
	$(PY) bench/read_side.py
	$(PY) bench/actions.py

clean:
	rm -rf $(VENV) build *.egg-info
