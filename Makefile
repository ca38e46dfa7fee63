# kiosk-agent: `make run` and `make test` do all the set-up on a fresh Debian.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Debian packages the tests use: the broker and its clients, FUSE for the
# power-cut harness, systemd-analyze and udevadm for the unit and rule checks,
# node to evaluate the polkit rule as polkitd's JavaScript engine would,
# chromium for the kiosk screen's browser tests (Playwright drives it by
# executable_path) with a Chinese font, postgresql for the back office's
# ledger tests; lintian, shellcheck and debootstrap check the Debian package,
# cage and xwayland run the kiosk screen's launcher headless (tests/packaging).

.PHONY: run run-backoffice test lint test-long bench bench-ledger bench-dashboard bench-ui screenshots screenshots-dashboard venv system-deps clean deb

run: $(STAMP) system-deps
	$(PY) -m agent.sim.devrun

# The back office on this machine until Ctrl-C: PostgreSQL (kept in .run/backoffice/pg), Mosquitto, the
# ledger, the dashboard (its address and the admin's login are printed) and three simulated kiosks.
run-backoffice: $(STAMP) system-deps
	$(PY) -m devtools.run_backoffice

# The gates first (seconds), then the suite. pytest's exit 5 (no test
# collected) fails the target like any other non-zero exit.
test: lint system-deps
	$(PY) -m pytest

# The layer contracts, ruff and mypy; their settings are in pyproject.toml.
lint: $(STAMP)
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check agent hal fleet provisioning firmware bench tests packaging devtools
	$(VENV)/bin/mypy

test-long: $(STAMP) system-deps
	KIOSK_LONG=1 $(PY) -m pytest -m long

bench: $(STAMP) system-deps
	$(PY) bench/footprint.py

# The back office's ledger: ingest rates against raw COPY and raw paho, latency, 1,000 kiosks (a few minutes).
bench-ledger: $(STAMP) system-deps
	$(PY) bench/ledger.py

# The fleet dashboard with 1,000 simulated kiosks and a day of history: /api/fleet server time, the fleet
# page's render in chromium, alarm at a kiosk to the row changing on the page; each against floors
# measured in the same run (a few minutes).
bench-dashboard: $(STAMP) system-deps
	$(PY) bench/dashboard.py

# The kiosk screen: click to next screen against a static page round trip, idle RSS added by the
# local API, door edge to alarm with a screen connected (about a minute).
bench-ui: $(STAMP) system-deps
	$(PY) bench/ui.py

# A PNG of every kiosk screen, zh and en, normal and elder mode, in build/screenshots/ (for people,
# never test expectations; docs/screenshots/ holds a few of them at half size for the README).
screenshots: $(STAMP) system-deps
	$(PY) tests/ui/screenshots.py build/screenshots

# A PNG of every dashboard page, zh and en, at 1366 x 768 and 1920 x 1080, in build/screenshots/dashboard/
# (the whole back office runs for real: PostgreSQL, Mosquitto, ledger, dashboard, agents, a light fleet).
screenshots-dashboard: $(STAMP) system-deps
	$(PY) tests/dashboard/screenshots.py build/screenshots/dashboard

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# Installs what is missing with apt-get when root; otherwise says what to install.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_sub >/dev/null 2>&1 || missing="$$missing mosquitto-clients"; \
	command -v fusermount3 >/dev/null 2>&1 || missing="$$missing fuse3"; \
	command -v systemd-analyze >/dev/null 2>&1 || missing="$$missing systemd"; \
	command -v udevadm >/dev/null 2>&1 || missing="$$missing udev"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v lintian >/dev/null 2>&1 || missing="$$missing lintian"; \
	command -v shellcheck >/dev/null 2>&1 || missing="$$missing shellcheck"; \
	command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing="$$missing debootstrap"; \
	[ -x /usr/bin/cage ] || missing="$$missing cage"; \
	[ -x /usr/bin/Xwayland ] || missing="$$missing xwayland"; \
	[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing="$$missing fonts-wqy-microhei"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing"; \
	    echo "install them with: sudo apt-get install$$missing"; \
	    exit 1; \
	  fi; \
	fi

# The Debian package: build/kiosk-agent_<version>_<arch>.deb (ARCH=arm64 for a
# Raspberry Pi from any machine; packaging/build_deb.py says how).
deb: $(STAMP)
	$(PY) packaging/build_deb.py --out build $(if $(ARCH),--arch $(ARCH))

clean:
	rm -rf .run build *.egg-info
