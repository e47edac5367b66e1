# tagfleet developer entry points. The README's commands: `make test` and `make demo`.
#
#   make setup        Debian packages (Java, Maven, PostgreSQL) when missing, .venv, pip install -e '.[dev]'
#   make stack-up     start the local stack: Kafka 4 (KRaft), moto S3, PostgreSQL (infra/stack.sh up)
#   make stack-down   stop it
#   make lint         ruff over the Python trees
#   make typecheck    mypy over consumers and models (not yet part of `make test`)
#   make test         setup + stack-up + lint + pytest (extra pytest flags: PYTEST_ARGS="-k kafka")
#   make demo         setup + stack-up + `tagfleet demo` with the stack's environment

VENV ?= .venv
PYTHON := $(VENV)/bin/python
RUFF := $(VENV)/bin/ruff
LINT_PATHS := consumers models tests benchmarks
PYTEST_ARGS ?=

.PHONY: setup stack-up stack-down stack-status lint typecheck test demo

setup:
	infra/setup.sh

stack-up:
	infra/stack.sh up

stack-down:
	infra/stack.sh down

stack-status:
	infra/stack.sh status

lint:
	$(RUFF) check $(LINT_PATHS)

typecheck:
	$(VENV)/bin/mypy consumers models

# Sequential on purpose (also under -j): the stack must be up before pytest starts.
# pytest's exit code 5 ("no tests collected") is a failure here, never a silent pass.
test:
	$(MAKE) --no-print-directory setup
	$(MAKE) --no-print-directory stack-up
	$(MAKE) --no-print-directory lint
	@rc=0; $(PYTHON) -m pytest $(PYTEST_ARGS) || rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing" >&2; fi; \
	exit $$rc

demo:
	$(MAKE) --no-print-directory setup
	$(MAKE) --no-print-directory stack-up
	eval "$$(infra/stack.sh env)" && $(VENV)/bin/tagfleet demo
