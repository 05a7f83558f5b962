# tinydyn: `make run` sets everything up and runs the main job; `make test` runs the tests.
.PHONY: setup run test lint
VENV := .venv/bin

setup:
	bash scripts/setup.sh

run: setup
	$(VENV)/tinydyn run

test: setup
	$(VENV)/python -m pytest -q

lint: setup
	$(VENV)/ruff check tinydyn tests benchmarks
