# The two commands of the README: `make lab` (the example site in real LXC
# guests on this machine) and `make test` (lint and every test tier).
# Both install what they need first; run them as root on Debian 12.

VENV     ?= .venv
PYTHON   ?= python3
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
DEBS     := nftables lxc debootstrap bridge-utils rsync iproute2 gnupg openssh-client nginx pebble openssl curl postgresql rabbitmq-server
DEBS += restic rclone  # backup: the repository (rclone serve restic) and restic on the host for the backup tests and the drill
YAML     := pillar/site/*.sls pillar/platform/*.sls $(filter-out %_generated.sls,$(wildcard pillar/overlays/*.sls)) \
            tests/fixtures/sites/*/*/site.sls \
            sitectl/schemas/*.yaml salt/*/defaults.yaml cloud.profiles.d/*.conf Saltfile .yamllint
SLS      := $(shell find salt reactor -name '*.sls' | sort)

.PHONY: setup lint test test-fast lab lab-down lab-status bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $$missing; \
	fi
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check sitectl _pillar _clouds _runners _modules _states _utils tests benchmarks
	$(VENV)/bin/yamllint -s $(YAML)
	$(VENV)/bin/salt-lint $(SLS)

# Every tier: render, functional, lab. `make test-fast` skips the lab while iterating.
test: lint
	$(PY) -m pytest --basetemp=$(CURDIR)/.pytest-tmp

test-fast: lint
	$(PY) -m pytest -m 'not lab' --basetemp=$(CURDIR)/.pytest-tmp

lab: setup
	$(VENV)/bin/sitectl lab up

lab-down: setup
	$(VENV)/bin/sitectl lab down

lab-status: setup
	$(VENV)/bin/sitectl lab status

clean:
	rm -rf .salt .pytest-tmp

bench: setup
	$(PY) benchmarks/lab.py
