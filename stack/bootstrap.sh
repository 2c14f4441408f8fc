#!/usr/bin/env bash
# Install what `make up` and `make test` need on Debian 12, then build .venv.
# Idempotent and silent when nothing is missing: apt-get runs only for a missing package, pip
# only when requirements*.txt changed (a hash in .venv/.requirements.sha256 remembers).
#   bash stack/bootstrap.sh           install what is missing
#   bash stack/bootstrap.sh --check   list what is missing and exit 1 if anything is; no change
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=.venv
STAMP=$VENV/.requirements.sha256
missing=()

installed() {  # installed PKG...: true when any of the packages is installed
    local pkg
    for pkg in "$@"; do
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
            return 0
        fi
    done
    return 1
}

need() {  # need PKG [ALTERNATIVE...]: install PKG unless it or an alternative is installed
    installed "$@" || missing+=("$1")
}

need postgresql postgresql-17 postgresql-16 postgresql-15
need memcached
need nginx-light nginx nginx-core nginx-full nginx-extras
need libev-dev          # bjoern compiles against it
need gcc
need libc6-dev
# The interpreter the venv is made from: Debian's needs python3-venv, and its headers for bjoern.
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then
    missing+=(python3-venv)
fi
if ! "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    missing+=(python3-dev)
fi

if [[ ${1:-} == --check ]]; then
    if ((${#missing[@]})); then
        echo "missing: ${missing[*]}"
        exit 1
    fi
    exit 0
fi

if ((${#missing[@]})); then
    if [[ $(id -u) != 0 ]]; then
        echo "bootstrap: missing Debian packages: ${missing[*]}" >&2
        echo "bootstrap: run as root, or: sudo apt-get install ${missing[*]}" >&2
        exit 1
    fi
    echo "bootstrap: installing ${missing[*]}"
    # Keep the packages' own daemons (a PostgreSQL cluster on 5432, Memcached on 11211, Nginx
    # on 80) from starting: the stack runs its own, and they would only take memory and ports.
    policy=/usr/sbin/policy-rc.d
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod 755 "$policy"
        trap 'rm -f "$policy"' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x $VENV/bin/python ]] || ! "$VENV/bin/python" -c '' 2>/dev/null; then
    echo "bootstrap: creating $VENV"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
fi
want=$( (cat requirements.txt requirements-dev.txt; "$VENV/bin/python" --version) | sha256sum)
if [[ ! -f $STAMP || $(cat "$STAMP") != "$want" ]]; then
    echo "bootstrap: installing requirements-dev.txt into $VENV"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements-dev.txt
    echo "$want" >"$STAMP"
fi
