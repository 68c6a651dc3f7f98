#!/usr/bin/env bash
# Everything loopline needs on Debian or Ubuntu, installed only when missing, so a second run
# takes seconds: system packages (Redis, Java and Maven for the local Kafka, Chromium for the
# browser tests), Python 3.11+ with the package in .venv, and the Kafka broker's jars.
# Run as root, or as a user who may sudo.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '==> %s\n' "$*" >&2; }

# A Python that can create a virtual environment, newest first.
find_python() {
  local candidate
  for candidate in python3.13 python3.12 python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
      "$candidate" -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

missing_packages() {
  command -v redis-server >/dev/null 2>&1 || echo redis-server
  command -v java >/dev/null 2>&1 || echo "$java_package"
  command -v mvn >/dev/null 2>&1 || echo maven
  command -v chromium >/dev/null 2>&1 || echo chromium
  command -v chromedriver >/dev/null 2>&1 || echo chromium-driver
  find_python >/dev/null || echo python3 python3-venv
}

install_packages() {
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if ! command -v sudo >/dev/null 2>&1; then
      say "Missing: $*. Install them as root: apt-get install -y $*"
      exit 1
    fi
    sudo=(sudo)
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    say "Missing: $*. This is not a Debian-like system: install the equivalents by hand."
    exit 1
  fi
  say "Installing $* (apt-get)"
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# Debian 12 has OpenJDK 17; newer releases only a newer default JRE, which Kafka 3.9 runs on too.
java_package=openjdk-17-jre-headless
if ! command -v java >/dev/null 2>&1 && command -v apt-cache >/dev/null 2>&1 &&
  ! apt-cache show "$java_package" >/dev/null 2>&1; then
  java_package=default-jre-headless
fi

read -r -a missing <<<"$(missing_packages | tr '\n' ' ')"
if [ "${#missing[@]}" -gt 0 ]; then
  install_packages "${missing[@]}"
fi

python=$(find_python) || {
  say "loopline needs Python 3.11 or newer with venv (Debian: apt-get install -y python3 python3-venv)."
  exit 1
}

if [ ! -x .venv/bin/python ]; then
  say "Creating .venv with $python"
  "$python" -m venv .venv
fi

# Reinstall only when the package's dependencies changed since the last setup.
stamp=.venv/.loopline-setup
wanted=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
  say "Installing loopline and its dependencies into .venv"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --progress-bar off -e '.[dev]'
  echo "$wanted" >"$stamp"
fi

.venv/bin/loopline infra fetch
say "Setup done."
