# The README's two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PYTEST_ARGS ?= -q -n 2 --dist loadfile
export TF_CPP_MIN_LOG_LEVEL ?= 2

FASHION_MNIST_SYSTEM_DIR := /usr/share/datasets/fashion-mnist

.PHONY: install test lint demo docs bench bench-quick clean fashion-mnist chromium

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

lint: $(STAMP)
	$(PY) -m ruff check .

test: lint chromium
	$(PY) -m pytest $(PYTEST_ARGS)

# The HTML report's test renders the page in Debian's chromium: installed here when missing
# and run as root; never fails the build (without it that test is skipped and says why).
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && [ "$$(id -u)" = 0 ] \
	    && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing chromium for the HTML report's test"; \
	  (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 \
	   || (apt-get update -q >/dev/null 2>&1 \
	       && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1)) \
	  || echo "chromium could not be installed: the HTML report's browser test will be skipped"; \
	fi; true

# The guides in docs/ and the API reference from the docstrings, into site/ (warnings fail).
docs: $(STAMP)
	$(PY) -m mkdocs build --strict

demo: $(STAMP)
	$(VENV)/bin/triplet demo --out demo-output

# The benchmarks read Fashion-MNIST from Debian's package when it is missing (as root);
# --reinstall: dpkg may list the package while its files are gone.
fashion-mnist:
	@if [ ! -f $(FASHION_MNIST_SYSTEM_DIR)/train-images-idx3-ubyte.gz ] && [ "$$(id -u)" = 0 ]; then \
	  apt-get install -y --reinstall dataset-fashion-mnist >/dev/null 2>&1 \
	  || (apt-get update -q >/dev/null 2>&1 && apt-get install -y --reinstall dataset-fashion-mnist >/dev/null 2>&1) \
	  || echo "Fashion-MNIST could not be installed: its benchmarks will be reported as unavailable"; \
	fi

bench: $(STAMP) fashion-mnist
	$(PY) -m benchmarks.run --full

bench-quick: $(STAMP) fashion-mnist
	$(PY) -m benchmarks.run --quick

clean:
	rm -rf $(VENV) demo-output site .pytest_cache .ruff_cache *.egg-info
