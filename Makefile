# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The demo: Figure 6's right-hand panels (batch size 4), each norm for a few epochs: on real MNIST (fetched by
# scripts.get_data, 11 MB, checked against the published checksums) when it can be had, else on scikit-learn's 8x8
# digits, saying which. 2 min 54 s measured on 2 idle cores with MNIST (fetched), about 1 min with the digits.
DEMO_DIR ?= runs/demo
DEMO_EPOCHS ?= 2
DEMO_DIGITS_EPOCHS ?= 8

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
# On MNIST the test error is evaluated every 1,000 steps and the NLL drawn per log line (x: steps; those lines carry
# no epoch), so two epochs make curves.
demo: $(STAMP)
	$(PY) -m scripts.invariance_table
	if $(PY) -m scripts.get_data mnist; then \
	  echo "Demo on real MNIST (55k/5k/10k), $(DEMO_EPOCHS) epochs per norm."; \
	  variant=real; epochs=$(DEMO_EPOCHS); more=--config.eval_every_steps=1000; metrics="--metrics train/loss eval/test/error --x step"; \
	else \
	  echo "Real MNIST could not be had (above: why): the demo runs on scikit-learn's 8x8 digits instead."; \
	  variant=; epochs=$(DEMO_DIGITS_EPOCHS); more=; metrics=; \
	fi; \
	for norm in none bn ln; do \
	  $(PY) -m experiments.mnist --config configs/mnist.py:$$variant,norm=$$norm,batch_size=4 \
	    --config.num_epochs=$$epochs $$more --workdir $(DEMO_DIR)/$${variant:+$$variant,}norm=$$norm,batch_size=4 \
	    || exit 1; \
	done; \
	$(PY) -m scripts.plot $(DEMO_DIR)/$${variant:+$$variant,}norm=*,batch_size=4 --layout fig6 $$metrics \
	  --out $(DEMO_DIR)/fig6.png

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
