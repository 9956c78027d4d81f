# The two commands (README): `make demo` runs the pipeline on the embedded default, `make test`
# runs the test suite. Both set everything up first on a fresh machine (Python 3.11, no venv).
UV := python3 -m uv

.PHONY: setup demo test test-fast bench table12 ablations gpu-kit gpu-check

setup:
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet --disable-pip-version-check uv
	$(UV) sync --frozen

demo: setup
	$(UV) run dvc repro
	@echo
	@echo
	@cat reports/compare.md 2>/dev/null || true
	@echo
	@echo "Done. Look at:"
	@echo "  reports/compare.md            baseline (noisy web) vs bootstrapped (CapFilt) model"
	@echo "  metrics/capfilt.json          what CapFilt kept and removed; reports/capfilt/examples.html"
	@echo "  metrics/ (dvc metrics show)   every stage's figures; plots: dvc plots show"
	@echo "  reports/contracts/*/          data contracts' Data Docs"
	@echo "  MLflow: $(UV) run mlflow ui --backend-store-uri sqlite:///mlruns.db   (runs and registered models)"

# two workers, a test file each at a time: much of the suite waits on subprocesses and servers
test: setup
	$(UV) run pytest -n 2 --dist loadfile

# the loop while working: every test not marked slow
test-fast: setup
	$(UV) run pytest -n 2 --dist loadfile -m "not slow"

bench: setup
	$(UV) run python bench/data_loading.py
	$(UV) run python bench/model.py
	$(UV) run python bench/capfilt.py
	$(UV) run python bench/capfilt_ray.py
	$(UV) run python bench/select_contract_memory.py
	$(UV) run python bench/chain.py

# the paper's Table 12 over three seeds, and its CapFilt ablations: each a DVC experiment queue of whole
# chains (about 16 minutes a chain on 2 cores); results in reports/table12.md and reports/ablations.md
table12: setup
	$(UV) run python experiments/table12.py --seeds 0 1 2

ablations: setup
	$(UV) run python experiments/ablations.py

# the GPU check (infra/gpu_check.py): here, with the project's environment; on a GPU machine without a
# package registry, build the offline kit with `make gpu-kit` and run it there (infra/gpu_kit.sh)
gpu-check: setup
	$(UV) run python infra/gpu_check.py

gpu-kit: setup
	bash infra/gpu_kit.sh
