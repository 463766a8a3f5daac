# The two commands of the README: `make lab` (the example site in real LXC
# guests on this machine) and `make test` (lint and every test tier).
# Both install what they need first; run them as root on Debian 12.

VENV     ?= .venv
PYTHON   ?= python3
PY       := $(VENV)/bin/python
STAMP    := $(VENV)/.installed
DEBS     := nftables lxc debootstrap bridge-utils rsync iproute2 gnupg openssh-client nginx pebble openssl curl postgresql rabbitmq-server
DEBS     += prometheus prometheus-alertmanager prometheus-blackbox-exporter  # monitoring: promtool/amtool check and unit-test the rules and configs
DEBS += golang-go golang-github-gorilla-websocket-dev golang-github-lib-pq-dev golang-github-rabbitmq-amqp091-go-dev golang-github-prometheus-client-golang-dev  # chat: the example Go service built offline (GOPATH mode over /usr/share/gocode)
DEBS     += bind9  # mailcow: a real DNS server receiving the mail records by RFC 2136 with TSIG (tests)
DEBS += php8.2-cli  # nextcloud: the occ wrapper runs under real PHP in the render tier
# k3s: node and npm check ESO's resources against ESO's CRD schemas (tests/render/test_k3s_manifests.py);
# ci: gitlab-ci-local runs .gitlab-ci.yml in tests/ci. Node.js brings npm where it comes from
# NodeSource (these machines); Debian's own nodejs needs its npm package, added only then.
DEBS     += nodejs
# The pipeline runner of tests/ci, project-local (Node 20: its last release that runs there).
GITLAB_CI_LOCAL := .ci/node_modules/.bin/gitlab-ci-local
DEBS += restic rclone  # backup: the repository (rclone serve restic) and restic on the host for the backup tests and the drill
YAML     := pillar/site/*.sls pillar/platform/*.sls $(filter-out %_generated.sls,$(wildcard pillar/overlays/*.sls)) \
            tests/fixtures/sites/*/*/site.sls \
            sitectl/schemas/*.yaml salt/*/defaults.yaml cloud.profiles.d/*.conf Saltfile .yamllint .gitlab-ci.yml
SLS      := $(shell find salt reactor -name '*.sls' | sort)

.PHONY: setup debs lint test test-fast lab lab-down lab-status bench bench-noop clean

setup: debs $(STAMP) $(GITLAB_CI_LOCAL)

$(GITLAB_CI_LOCAL): $(STAMP)
	npm install --prefix .ci --no-save --no-package-lock --no-audit --no-fund gitlab-ci-local@4.72.0

# Checked on every run, apart from the venv's stamp: `make lab` installs only the lab's own packages.
debs:
	@missing=$$(for p in $(DEBS); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends $$missing; \
	fi
	@command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends npm

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# setuptools' note on every editable install (a box of text, not a problem) is silenced, nothing else.
	PYTHONWARNINGS='ignore:Editable installation' $(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check sitectl _pillar _clouds _runners _modules _states _renderers _utils tests benchmarks
	$(VENV)/bin/yamllint -s $(YAML)
	$(VENV)/bin/salt-lint $(SLS)

# Every tier: render, functional, lab. `make test-fast` skips the lab while iterating.
# Two workers: most of a lab test's time is spent waiting (on apt in a guest, on a
# daemon's start), so a second worker keeps the second core busy; tests that share a
# fixture stay on one worker (tests/conftest.py), scratch labs take a slot per worker.
# The slowest tests are listed at the end, for whoever makes the suite faster.
TEST_WORKERS ?= 2
PYTEST   := $(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder --durations=25 \
            --basetemp=$(CURDIR)/.pytest-tmp

test: lint
	$(PYTEST)

test-fast: lint
	$(PYTEST) -m 'not lab'

# The lab's own host packages, the venv, then the guest template and the Python packages at once,
# then `sitectl lab up` (sitectl/lab/bootstrap.py). Each phase prints a line when it starts and when
# it ends, with its time (also into a pipe or a CI log).
lab:
	$(PYTHON) -m sitectl.lab.bootstrap --venv $(VENV)

lab-down: $(STAMP)
	$(VENV)/bin/sitectl lab down

lab-status: $(STAMP)
	$(VENV)/bin/sitectl lab status

clean:
	rm -rf .salt .pytest-tmp

bench: setup
	$(PY) benchmarks/lab.py

# The no-op split per guest against the running lab (`make lab` first; shared: take the lock).
bench-noop: setup
	flock /tmp/sitectl-lab.lock $(PY) benchmarks/noop.py
