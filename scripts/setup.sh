#!/usr/bin/env bash
# Idempotent set-up of a fresh Debian machine: system packages, then the
# project's virtualenv.  Each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssh-server, sudo, python3-apt, systemd: the Ansible converge test's hosts.
# postfix: its smtp-source/smtp-sink, real sequential senders for the mail caps' tests.
# freeradius-utils: radclient, the BNG of the RADIUS accounting feed's tests.
# chromium: Debian's browser, driven by Playwright in the console's tests (no
# browser download: the tests launch /usr/bin/chromium by its path).
# fonts-ipafont-gothic: Japanese glyphs for the notice portal's screenshots.
APT_PACKAGES=(nftables libnftables1 iproute2 postgresql python3-venv curl
    openssh-server sudo python3-apt systemd openssl util-linux postfix
    freeradius-utils chromium fonts-ipafont-gothic)

missing=()
for package in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "ok installed" || missing+=("$package")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: need root to install ${missing[*]} (apt-get)" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -qq
    # Postfix asks how to configure itself; the tests only run its tools.
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null || PYTHON=python3
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv with $PYTHON"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [[ ! -e $stamp ]]; then
    echo "setup: installing edgectl and its test tools into .venv"
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e '.[test]'
    rm -f .venv/.installed-*
    touch "$stamp"
fi
