# Everything a fresh clone needs: `make serve` to run a primary, `make test` to prove it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
TEST_STAMP := $(VENV)/.installed-test
NODE_DEPS := tests/node/node_modules/.installed
# checkov pins packaging and boto3 versions that clash with ours: it gets a venv of its own.
CHECKOV := .cache/checkov/bin/checkov
DATA ?= ./data/denokv.sqlite
ADDR ?= 0.0.0.0:4512

.PHONY: install serve check lint test test-fast proto bench clean browser

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

# The test tools (Deno CLI, moto, Helm SDK, ...) only for `make test`.
$(TEST_STAMP): $(STAMP)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(CHECKOV):
	$(PYTHON) -m venv .cache/checkov
	.cache/checkov/bin/pip install -q 'checkov==3.3.30'

$(NODE_DEPS): tests/node/package.json
	cd tests/node && npm install --no-audit --no-fund --loglevel=error
	touch $@

serve: install
	@mkdir -p $(dir $(DATA))
	@if [ -z "$$DENO_KV_ACCESS_TOKEN" ]; then \
		export DENO_KV_ACCESS_TOKEN=$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(24))'); \
		echo "Generated an access token. To reuse it:  export DENO_KV_ACCESS_TOKEN=$$DENO_KV_ACCESS_TOKEN"; \
	fi; \
	echo "Deno:  DENO_KV_ACCESS_TOKEN=$$DENO_KV_ACCESS_TOKEN deno run --unstable-kv app.ts   # Deno.openKv(\"http://localhost:$(lastword $(subst :, ,$(ADDR)))\")"; \
	exec $(VENV)/bin/denokv --sqlite-path $(DATA) serve --addr $(ADDR)

# The console's browser tests drive Debian's Chromium through its chromedriver
# (a browser download of Playwright's own cannot run here). CI runs as root.
browser:
	@if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver; \
	fi

# Lint, format and types: what the pre-commit hooks run too (.pre-commit-config.yaml).
check: $(TEST_STAMP)
	$(VENV)/bin/ruff check --no-cache .
	$(VENV)/bin/ruff format --no-cache --check .
	$(VENV)/bin/mypy

lint: check

# Everything: the Deno CLI, Node.js with @deno/kv and s3rver, moto, the chart tools, Chromium.
test: check $(NODE_DEPS) $(CHECKOV) browser
	$(PY) -m pytest -q

# The quick loop: no Deno, Node, S3 server, chart tools or browser, no test over ~3 s.
FAST := not deno and not node and not s3 and not chart and not browser and not slow
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q -m "$(FAST)"

# Regenerate the protobuf modules after editing denokv/proto/*.proto.
proto:
	$(PY) -m pip install -q 'grpcio-tools>=1.85,<2'
	$(PY) -m grpc_tools.protoc -I. --python_out=. --pyi_out=. denokv/proto/datapath.proto denokv/proto/backup.proto

bench: install
	$(PY) -m bench.bank

clean:
	rm -rf $(VENV) tests/node/node_modules .cache .pytest_cache
