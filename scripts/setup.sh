#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian 12 machine: apt packages, .venv/ in the repo root, pinned
# Python dependencies (torch==2.13.0 first: a CPU build; an unpinned torch pulls a CUDA build) and
# this package in editable mode. Fast when already done: a stamp records what was installed.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(libusb-1.0-0 cmake g++ ignition-tools libsdformat-dev)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "[setup] apt-get install ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

stamp_of() { cat requirements.txt setup.py scripts/setup.sh | sha256sum | cut -d' ' -f1; }
STAMP=.venv/.setup-stamp
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$(stamp_of)" ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  echo "[setup] installing Python dependencies into .venv/"
  pip_install() { .venv/bin/pip install -q --disable-pip-version-check "$@" 2> >(grep -v "is ignored" >&2); }
  pip_install torch==2.13.0
  pip_install -r requirements.txt
  pip_install --no-deps -e .
  stamp_of > "$STAMP"
fi
# ROS 2 Kilted wheels and the project's messages (msg/), with their own stamp
bash scripts/build_msgs.sh
