# Two commands do everything on a fresh machine (Debian, Python 3.11):
#   make run    set up, build the synthetic release if absent, run the whole pipeline
#   make test   set up and run the tests
#   make faults the fault suite: kills, damaged inputs, a full disk, safety; ends with a table
# Built-in controls, each in its own directory runs/<control>/ (docs/evaluation.md, "Controls"):
#   make null-test          fakes drawn like the real galaxies: must be indistinguishable
#   make positive-control   fakes clearly wrong: must be found
#   make null-calibration   the null test over SEEDS seeds: false "distinguishable" and "no difference" rates
# make sensitivity: the run, and what it could have found (the sensitivity grid, config sensitivity:), quoted in its verdict
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= 2
STAMP := $(VENV)/.installed

CONTROLS := null-test positive-control

SEEDS ?= 40

.PHONY: setup run test faults lint dryrun report clean null-calibration sensitivity $(CONTROLS)

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt setup.py src/realfake/cutouts/_stamps.c
	@start=$$(date +%s); set -e; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade pip; \
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[cpu,dev,slurm]'; \
	$(BIN)/python -c 'import realfake.cutouts._stamps' 2>/dev/null || echo "note: the C stamp kernels were not built" \
		"(no C compiler or Python headers?): cutouts are cut with numpy, the same stamps, more slowly"; \
	touch $(STAMP); \
	echo "install wall time: $$(( $$(date +%s) - start )) s"

run: $(STAMP)
	@start=$$(date +%s); \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) && \
	echo "pipeline wall time: $$(( $$(date +%s) - start )) s" && \
	$(BIN)/realfake verdict results/evaluation/metrics.json

# the default config with the control's preset on top; fails unless the control comes out as it must
$(CONTROLS): $(STAMP)
	@start=$$(date +%s); mkdir -p runs/$@; \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) --directory runs/$@ \
		--configfile config/config.yaml config/presets/$@.yaml && \
	echo "$@ wall time: $$(( $$(date +%s) - start )) s" && \
	$(BIN)/realfake verdict runs/$@/results/evaluation/metrics.json --control $@

# the null test over SEEDS independent synthetic releases at the tests' scale: how often the verdict says
# "distinguishable" (at most alpha) and "no difference detected" with its bound (docs/evaluation.md, "Null
# calibration"); about 3 minutes a seed on 2 cores, 2 hours for the 40
null-calibration: $(STAMP)
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python benchmarks/null_calibration.py --seeds $(SEEDS) --cores $(CORES)

# the pipeline with the sensitivity grid on its own data (results/sensitivity/), the grid quoted in the verdict
sensitivity: $(STAMP)
	@start=$$(date +%s); \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/snakemake --cores $(CORES) \
		--configfile config/config.yaml config/presets/sensitivity.yaml && \
	echo "sensitivity wall time: $$(( $$(date +%s) - start )) s" && \
	echo "table and figure: $(CURDIR)/results/sensitivity/sensitivity.csv, sensitivity.png" && \
	$(BIN)/python -c "import pandas as pd; \
		print(pd.read_csv('results/sensitivity/sensitivity.csv').drop(columns=['source', 'what']).to_string(index=False))" && \
	$(BIN)/realfake verdict results/evaluation/metrics.json

# The SLURM path (tests/test_slurm.py) runs alongside the rest: most of its 5 minutes are waits on the executor
# plugin's status polls, which back off by 10 s whenever no job has finished; its report follows the others'.
test: $(STAMP)
	@mkdir -p .test-logs; \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest tests/test_slurm.py -p no:cacheprovider \
		--basetemp=$$(mktemp -d /tmp/realfake-slurm-tests.XXXXXX) > .test-logs/slurm.txt 2>&1 & slurm=$$!; \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest --ignore=tests/test_slurm.py; rc=$$?; \
	wait $$slurm; rc_slurm=$$?; echo "--- tests/test_slurm.py (run alongside) ---"; cat .test-logs/slurm.txt; \
	test $$rc = 0 && test $$rc_slurm = 0

# every stage killed (SIGKILL) and rerun, damaged releases and bad configs, a full disk, safety checks;
# the table at the end counts the cases and the outputs lost or corrupted (must be 0)
faults: $(STAMP)
	@start=$$(date +%s); \
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/python -m pytest tests/faults -m faults -p no:cacheprovider; rc=$$?; \
	echo "fault suite wall time: $$(( $$(date +%s) - start )) s"; exit $$rc

lint: $(STAMP)
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .

dryrun: $(STAMP)
	$(BIN)/snakemake -n

report: $(STAMP)
	$(BIN)/snakemake --report report.html
	@echo "report: $(CURDIR)/report.html"

clean:
	rm -rf results logs .snakemake runs/*/results runs/*/logs
