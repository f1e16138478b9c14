# The two commands a new user needs:  make demo  and  make test  (see README.md).
SHELL := /bin/bash
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.synced

.PHONY: setup demo test sandbox up lock lint clean cluster containers

# Two locks: requirements.txt is the runtime (what the image and every Airflow role install);
# requirements-dev.txt adds the sandbox, tests and linters. .venv holds the dev lock.
setup: $(STAMP) packer-check terraform-check chromium-check builder-check docker-install

# Create the virtualenv with uv and install exactly the dev lock.
$(STAMP): requirements-dev.txt requirements.txt
	@command -v uv >/dev/null 2>&1 || $(PY) -m pip install --quiet uv
	@test -x $(VPY) || uv venv --quiet --python 3.11 $(VENV) || $(PY) -m uv venv --quiet --python 3.11 $(VENV)
	uv pip sync --quiet --python $(VPY) --compile-bytecode requirements-dev.txt || $(PY) -m uv pip sync --quiet --python $(VPY) --compile-bytecode requirements-dev.txt
	@touch $(STAMP)

# Packer is Debian's package (1.6.6 runs our HCL2 templates); install it when missing.
packer-check:
	@command -v packer >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing packer (Debian package)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq packer) >/dev/null; \
	  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq packer) >/dev/null; \
	  fi; }
	@command -v packer >/dev/null 2>&1 || { echo "ERROR: packer not found. Install it (Debian/Ubuntu: 'apt-get install packer'; elsewhere: a packer binary >= 1.6 on PATH) and re-run."; exit 1; }
.PHONY: packer-check

# `make cluster` (and bench/org_retention.py) run real PostgreSQL and Redis servers as processes:
# install Debian's packages when their binaries are missing (services are not started by the
# package; the cluster starts its own on free ports).
PG_CTL := $(firstword $(wildcard /usr/lib/postgresql/*/bin/pg_ctl) $(shell command -v pg_ctl 2>/dev/null))
cluster-servers-check:
	@missing=""; command -v redis-server >/dev/null 2>&1 || missing=" redis-server"; \
	test -n "$(PG_CTL)" || missing="$$missing postgresql"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (Debian packages)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (Debian packages, sudo)"; \
	    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null; \
	  else \
	    echo "ERROR: make cluster needs$$missing. Install them as root (Debian/Ubuntu: 'apt-get install$$missing') and re-run."; exit 1; \
	  fi; fi
	@command -v redis-server >/dev/null 2>&1 || { echo "ERROR: redis-server not found after install; install Redis >= 6 and re-run."; exit 1; }
	@ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || command -v pg_ctl >/dev/null 2>&1 || { echo "ERROR: PostgreSQL server binaries (pg_ctl, initdb) not found; install PostgreSQL >= 13 and re-run."; exit 1; }
.PHONY: cluster-servers-check

# The sandbox's Packer builders (sandbox/builders) are Debian's OpenSSH server with sudo, in a
# mount+PID namespace per builder instance: install the packages when missing (no service is
# started: each builder runs its own sshd on a loopback address). Without them (or without
# root) the sandbox bakes the no-communicator source and says so; the suite's provisioned-bake
# tests then fail and say why.
builder-check:
	@missing=""; test -x /usr/sbin/sshd || missing=" openssh-server"; command -v sudo >/dev/null 2>&1 || missing="$$missing sudo"; \
	if [ -n "$$missing" ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing$$missing (Debian packages, for the sandbox's SSH builders)"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing) >/dev/null 2>&1 \
	    || echo "WARNING: could not install$$missing: the sandbox will bake without a builder (no Chef run)"; \
	elif [ -n "$$missing" ]; then \
	  echo "WARNING: the sandbox's SSH builders need$$missing and root: bakes in the sandbox skip Chef (apt-get install$$missing)"; \
	fi
.PHONY: builder-check

# The container test (tests/deploy/test_compose.py, part of `make test`) builds the shipped
# Dockerfile and runs the shipped docker-compose.yaml in a real engine: Debian's docker.io
# (dockerd), docker-compose (v1) and debootstrap (the base image: no registry needed). `setup`
# installs them where missing (as root, or with sudo); `make test` stops if they are still missing.
# No engine is started here: the test starts its own under .cache/docker/ and stops it, or uses
# the one DOCKER_HOST names (never one a user already runs on /var/run/docker.sock).
docker-install:
	@missing=""; command -v dockerd >/dev/null 2>&1 || missing=" docker.io"; \
	command -v docker-compose >/dev/null 2>&1 || missing="$$missing docker-compose"; \
	command -v debootstrap >/dev/null 2>&1 || test -x /usr/sbin/debootstrap || missing="$$missing debootstrap"; \
	if [ -n "$$missing" ] && [ -z "$$DOCKER_HOST" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (Debian packages, for the container test)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || echo "WARNING: could not install$$missing: make test's container test will stop and say so"; \
	  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	    echo "installing$$missing (Debian packages, for the container test; sudo)"; \
	    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) >/dev/null \
	      || echo "WARNING: could not install$$missing: make test's container test will stop and say so"; \
	  else echo "WARNING: the container test needs$$missing (apt-get install$$missing, as root)"; \
	  fi; fi
.PHONY: docker-install
docker-check: docker-install
	@command -v docker-compose >/dev/null 2>&1 && { { command -v dockerd >/dev/null 2>&1 && { command -v debootstrap >/dev/null 2>&1 || test -x /usr/sbin/debootstrap; }; } || test -n "$$DOCKER_HOST"; } || { echo "ERROR: the container test needs a Docker engine, docker-compose and debootstrap: install them as root ('apt-get install docker.io docker-compose debootstrap') or set DOCKER_HOST to a running engine, and re-run."; exit 1; }
.PHONY: docker-check

# Debian's chromium: the UI tests (tests/ui) drive it headless with Playwright; no browser download.
CHROMIUM ?= /usr/bin/chromium
chromium-check:
	@test -x $(CHROMIUM) || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium (Debian package, for the UI tests)"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null; \
	  elif command -v sudo >/dev/null && command -v apt-get >/dev/null; then \
	    echo "installing chromium (Debian package, for the UI tests; sudo)"; \
	    (sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium) >/dev/null; \
	  fi; }
	@test -x $(CHROMIUM) || { echo "ERROR: $(CHROMIUM) not found. Install Debian's chromium as root ('apt-get install chromium'; the UI tests drive it headless) and re-run, or set CHROMIUM=/path/to/chromium."; exit 1; }
.PHONY: chromium-check

# Terraform >= 1.10 (S3-native state locking) on PATH, and the AWS provider: from a local
# filesystem mirror where one exists ([ami_release] terraform_plugin_dir, or found in the usual
# places), else `terraform init` downloads it from the registry.
terraform-check:
	@command -v terraform >/dev/null 2>&1 || { echo "ERROR: terraform not found. Install Terraform >= 1.10 (https://developer.hashicorp.com/terraform/install: a single binary on PATH) and re-run."; exit 1; }
	@TF_CLI_CONFIG_FILE=/dev/null terraform version -json | $(PY) -c 'import json,sys; v=json.load(sys.stdin)["terraform_version"]; t=tuple(int(x) for x in v.split(".")[:2]); sys.exit(0 if t >= (1,10) else "ERROR: Terraform "+v+" is too old: install 1.10 or newer (S3 state locking)")'
	@{ test -n "$$AIRFLOW__AMI_RELEASE__TERRAFORM_PLUGIN_DIR" || for d in /opt/tf-plugins $$HOME/.terraform.d/plugins $$HOME/.local/share/terraform/plugins /usr/local/share/terraform/plugins /usr/share/terraform/plugins; do test -d $$d/registry.terraform.io/hashicorp/aws && exit 0; done; curl -sfI --max-time 5 https://registry.terraform.io/.well-known/terraform.json >/dev/null; } || { echo "ERROR: no Terraform AWS provider: no local mirror (set AIRFLOW__AMI_RELEASE__TERRAFORM_PLUGIN_DIR to one, e.g. made by 'terraform providers mirror <dir>') and registry.terraform.io is not reachable."; exit 1; }
.PHONY: terraform-check

# Static checks: ruff (lint + format) over the tree, mypy (strict on plugins/amirelease).
lint: setup
	$(VPY) -m ruff check plugins dags sandbox tests bench deploy
	$(VPY) -m ruff format --check plugins dags sandbox tests bench deploy
	$(VPY) -m mypy

# The suite on 3 workers (most tests wait on servers and sandboxes more than they compute; the
# tests that share a demo-web fleet run in two groups, each on one worker), then the IAM check.
# The container test (tests/deploy/test_compose.py) runs beside them in a pytest process of its
# own: a sandbox's AWS state, faults and builders are per process (moto's backends are global), so
# it must not share a worker with tests that use the worker's sandbox. Its output goes to
# .artifacts/containers.log; the end of it is printed, all of it when it failed.
PYTEST_WORKERS ?= 3
test: setup lint docker-check
	@mkdir -p .artifacts; rm -f .artifacts/aws-calls-*.json .artifacts/aws-roles-*.json .artifacts/collected-*.json .artifacts/fleet-builds-*.txt .artifacts/aws-oddities-*.json .artifacts/compose-timings.json .artifacts/containers.log
	@$(VPY) -m pytest -n 0 -m containers tests/deploy/test_compose.py > .artifacts/containers.log 2>&1 & cpid=$$!; \
	$(VPY) -m pytest -n $(PYTEST_WORKERS) --dist loadgroup --ignore=tests/test_zz_iam_policy.py -m "not containers"; rc=$$?; \
	wait $$cpid; rc3=$$?; \
	echo "== the container test (a process of its own; its whole output: .artifacts/containers.log)"; \
	if [ $$rc3 -eq 0 ]; then tail -n 2 .artifacts/containers.log; else tail -n 200 .artifacts/containers.log; fi; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no tests"; exit 1; fi; \
	$(VPY) -m pytest tests/test_zz_iam_policy.py; rc2=$$?; \
	cat .artifacts/fleet-builds-*.txt 2>/dev/null | sed 's/^/demo-web fleet built for /'; \
	ls .artifacts/aws-oddities-*.json 2>/dev/null | sed 's/^/the sandbox saw a lost answer or a moto failure: /'; \
	test -f .artifacts/compose-timings.json && echo "the container test's steps, in seconds: $$(tr -d '\n' < .artifacts/compose-timings.json)"; \
	if [ $$rc -ne 0 ]; then exit $$rc; fi; if [ $$rc3 -ne 0 ]; then echo "ERROR: the container test failed (above)"; exit $$rc3; fi; exit $$rc2

# The container test alone (it is also part of `make test`): the shipped Dockerfile built and
# docker-compose.yaml brought up in a real Docker engine (docs/containers.md).
containers: setup docker-check
	$(VPY) -m pytest -n 0 -m containers tests/deploy/test_compose.py

demo: setup
	$(VPY) -m sandbox demo

sandbox: setup
	$(VPY) -m sandbox up

up: setup
	$(VPY) -m sandbox airflow

lock:
	uv pip compile --quiet --python-version 3.11 requirements.in -o requirements.txt
	uv pip compile --quiet --python-version 3.11 requirements-dev.in -c requirements.txt -o requirements-dev.txt

# The multi-machine shape as processes on this machine (Postgres, Redis, OpenBao with TLS,
# the sandbox AWS account, every Airflow role from docker-compose.yaml); Ctrl-C stops it.
cluster: setup cluster-servers-check
	$(VPY) -m sandbox cluster

clean:
	rm -rf .sandbox .airflow .airflow-test .cluster

# The release ledger of an app, against a running sandbox (make sandbox in another terminal).
history: setup
	@test -f .sandbox/env.sh || { echo "start the sandbox first: make sandbox"; exit 1; }
	@. .sandbox/env.sh && PYTHONPATH=plugins $(VPY) -m amirelease.cli history $(APP)
.PHONY: history

# Lift the forensic hold on a release's AMI(s), recorded in the ledger with the reason:
#   make release-hold APP=demo-web RELEASE=<release id> REASON="INC-123 closed, forensics done"
# Against the sandbox when it runs (.sandbox/env.sh, or SANDBOX_ENV=<file>); otherwise against
# the AWS account of the Airflow connection aws_default and [ami_release] ledger_bucket from
# this shell's environment (AIRFLOW_CONN_AWS_DEFAULT, AIRFLOW__AMI_RELEASE__LEDGER_BUCKET).
SANDBOX_ENV ?= .sandbox/env.sh
release-hold: export HOLD_APP := $(value APP)
release-hold: export HOLD_RELEASE := $(value RELEASE)
release-hold: export HOLD_REASON := $(value REASON)
release-hold: $(STAMP)
	@if [ -z "$$HOLD_APP" ] || [ -z "$$HOLD_RELEASE" ] || [ -z "$$HOLD_REASON" ]; then \
	  echo 'usage: make release-hold APP=demo-web RELEASE=<release id> REASON="INC-123 closed, forensics done"'; \
	  echo '       (release ids: make history APP=demo-web, or the Releases page in Airflow)'; exit 2; fi
	@if [ -f "$(SANDBOX_ENV)" ]; then . "$(SANDBOX_ENV)"; echo "(against the sandbox: $(SANDBOX_ENV))"; \
	  else echo "(no sandbox running: using aws_default and ledger_bucket from this shell's environment)"; fi; \
	  PYTHONPATH=plugins $(VPY) -m amirelease.cli release-hold "$$HOLD_APP" "$$HOLD_RELEASE" --reason "$$HOLD_REASON"
.PHONY: release-hold

# Undo a deregistration: the image and its snapshots back from the Recycle Bin, its mark
# removed, a forensic hold added (who and why), recorded (docs/retention.md, "The Recycle Bin"):
#   make restore-ami AMI=ami-0abc... REASON="INC-4711: web-a still launches it" [REGION=us-east-1]
# Against the sandbox when it runs (.sandbox/env.sh), otherwise aws_default from this shell.
restore-ami: export RESTORE_AMI := $(value AMI)
restore-ami: export RESTORE_REASON := $(value REASON)
restore-ami: export RESTORE_REGION := $(value REGION)
restore-ami: $(STAMP)
	@if [ -z "$$RESTORE_AMI" ] || [ -z "$$RESTORE_REASON" ]; then \
	  echo 'usage: make restore-ami AMI=ami-0abc... REASON="INC-4711: web-a still launches it" [REGION=us-east-1]'; exit 2; fi
	@if [ -f "$(SANDBOX_ENV)" ]; then . "$(SANDBOX_ENV)"; echo "(against the sandbox: $(SANDBOX_ENV))"; \
	  else echo "(no sandbox running: using aws_default and ledger_bucket from this shell's environment)"; fi; \
	  PYTHONPATH=plugins $(VPY) -m amirelease.cli restore-ami "$$RESTORE_AMI" --reason "$$RESTORE_REASON" \
	    $${RESTORE_REGION:+--region "$$RESTORE_REGION"}
.PHONY: restore-ami

# Do Recycle Bin rules keep what retention deregisters? CREATE=1 creates the missing ones
# (never done silently: retention deregisters nothing until they exist, or `recycle_bin: off`).
recycle-bin-rules: $(STAMP)
	@if [ -f "$(SANDBOX_ENV)" ]; then . "$(SANDBOX_ENV)"; echo "(against the sandbox: $(SANDBOX_ENV))"; fi; \
	  PYTHONPATH=plugins $(VPY) -m amirelease.cli recycle-bin-rules $(if $(CREATE),--create,)
.PHONY: recycle-bin-rules
