# Two entry points a newcomer needs: `make test` and `make demo`. Both set up .venv from scratch.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo bench lint sim explore clean sysdeps

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint sysdeps
	$(BIN)/python -m pytest

# Partition and loss tests drop loopback packets with iptables (Debian's package); as root,
# install it when missing. Without it those tests are skipped, and say so.
sysdeps:
	@command -v iptables >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
	  && { apt-get install -y -q iptables >/dev/null 2>&1 \
	       || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q iptables >/dev/null 2>&1; }; }; } \
	  || echo "iptables is not installed: the partition and loss tests will be skipped"

demo: $(STAMP)
	$(BIN)/cohort demo

bench: $(STAMP)
	$(BIN)/cohort bench sim

sim: $(STAMP)
	$(BIN)/cohort sim --scenarios 300 --members 5 --faults all

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

# Seeded-bug catalog (issue 6): hunt every mutant with up to 2000 random scenarios, print the table.
.PHONY: mutants
mutants: $(STAMP)
	$(BIN)/python tests/mutants/run.py --budget 2000

explore: $(STAMP)
	$(BIN)/python tests/explore/explorer.py 20000 --minimum-seconds 300

# Secure stack (issue 5): 5,000,000 fuzzed packets into a member and 1,250,000 into a joiner
# (make test runs 200,000 and 50,000); another corpus mutation order with COHORT_FUZZ_SEED=n.
.PHONY: fuzz
fuzz: $(STAMP)
	COHORT_FUZZ=$${COHORT_FUZZ:-5000000} $(BIN)/python -m pytest tests/security/test_fuzz.py -q -s -p no:cacheprovider --timeout 3600
