# fewlabel: `make demo` and `make test` set everything up from a fresh clone, then run.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.fewlabel-installed
PYTEST_ARGS ?=
# optional dependency groups of pyproject.toml to install (the deploy image installs only "deploy"). Not
# "deploy" here: the MONAI Deploy SDK would make every `import monai` import Holoscan; `python -m
# fewlabel.deploy` builds an environment of its own for it on first use (fewlabel.deploy.env)
EXTRAS ?= test,sweep,export

.PHONY: setup demo test test-fast lint bench clean map-context label-server

setup: $(STAMP)

# torch and torchvision first (pinned; pip takes them from local disk where they lie there), then
# sam2 from its source distribution without building its CUDA extension, then this package.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -q torch==2.14.1 torchvision==0.29.1
	SAM2_BUILD_CUDA=0 $(BIN)/python -m pip install -q --no-build-isolation sam2==1.1.0
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

demo: setup
	$(BIN)/fewlabel demo

test: setup lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

# style (ruff, settings in pyproject.toml) and the generated docs sections being current
lint: setup
	$(BIN)/ruff check .
	$(BIN)/fewlabel code-map --check

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run.py

# a local MONAI Label server with every bundle (MONAI Label gets its own environment on first use;
# README "Annotating with MONAI Label"): make label-server STUDIES=/data/frames PORT=8000 [BUNDLES=a,b]
# [CORS_ORIGINS=http://localhost:3000] (a viewer page allowed to use the server)
STUDIES ?= studies
PORT    ?= 8000
CORS_ORIGINS ?=
label-server: setup
	$(BIN)/fewlabel label-server --studies $(STUDIES) --port $(PORT) $(if $(BUNDLES),--bundles $(BUNDLES)) \
		$(if $(CORS_ORIGINS),--cors_origins $(CORS_ORIGINS))

# the MONAI Application Package folder with this package copied beside its __main__.py (deploy/README.md)
map-context:
	rm -rf deploy/map/fewlabel
	cp -r common/fewlabel deploy/map/fewlabel
	find deploy/map/fewlabel -name __pycache__ -prune -exec rm -rf {} +

clean:
	rm -rf $(VENV) outputs benchmarks/results
