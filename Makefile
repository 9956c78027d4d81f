# The two commands (README): `make demo` runs the pipeline on the embedded default, `make test`
# runs the test suite. Both set everything up first on a fresh machine (Python 3.11, no venv).
UV := python3 -m uv

.PHONY: setup demo test bench

setup:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen

demo: setup
	$(UV) run dvc repro
	@echo
	@echo "Done. Look at: metrics/ (dvc metrics show), data/ (shards + manifest.json per dataset)."

test: setup
	$(UV) run pytest

bench: setup
	$(UV) run python bench/data_loading.py
