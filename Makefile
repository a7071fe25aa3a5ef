# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo: Figure 6's right-hand panels (batch size 4) on scikit-learn's bundled digits, a few epochs per norm.
DEMO_DIR ?= runs/demo
DEMO_EPOCHS ?= 8

.PHONY: demo test lint bench report clean

# The pinned, tested versions first; then the project itself, editable, so `python -m experiments.mnist` works from
# any directory once .venv is active (`source .venv/bin/activate`).
$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

# Table 1, then the three norms at batch size 4 and their Figure 6 plot. Re-running resumes or reports each run done.
demo: $(STAMP)
	$(PY) -m scripts.invariance_table
	for norm in none bn ln; do \
	  $(PY) -m experiments.mnist --config configs/mnist.py:norm=$$norm,batch_size=4 \
	    --config.num_epochs=$(DEMO_EPOCHS) --workdir $(DEMO_DIR)/norm=$$norm,batch_size=4 || exit 1; \
	done
	$(PY) -m scripts.plot $(DEMO_DIR)/norm=*,batch_size=4 --layout fig6 --out $(DEMO_DIR)/fig6.png

test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m pytest -n 2 tests

# The paper at CPU scale: every table's and figure's runs (collected when done, resumed when not), then
# report/REPORT.md with the paper's numbers beside ours. REPORT_ARGS adds flags, e.g. REPORT_ARGS='--only fig6'.
REPORT_SEEDS ?= 2
report: $(STAMP)
	$(PY) -m scripts.reproduce --scale cpu --root runs/paper --out report --seeds $(REPORT_SEEDS) --jobs 2 $(REPORT_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check .

# Benchmarks are not tests: see benchmarks/README.md for pinning (taskset) and the allocator (tcmalloc).
bench: $(STAMP)
	$(PY) -m benchmarks.layer_norm

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
