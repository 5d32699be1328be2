# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The venv is reused; pip runs again only when pyproject.toml changes (the stamp file).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.iqaflow-installed
DEMO_OUT ?= demo-output

.PHONY: demo test lint bench clean-demo

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/iqaflow demo --out $(DEMO_OUT)

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

lint: $(STAMP)
	$(BIN)/ruff check iqaflow tests bench

clean-demo:
	rm -rf $(DEMO_OUT)
