# Sourced by scripts/test.sh and scripts/quickstart.sh: create .venv and install vlsm-batch into it.
# Idempotent: a second run only checks a stamp. Works from a fresh clone with nothing installed.
ensure_venv() {
  local py="${PYTHON:-python3}"
  local stamp=".venv/.vlsm-batch-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && .venv/bin/python -c "import vlsm_batch" 2>/dev/null; then
    return 0
  fi
  echo "== setting up .venv (first run: about 2 minutes; torch comes from the wheel on this machine's disk)" >&2
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" >&2 || true
  # pyproject pins torch<=2.14.1, which pip resolves to the pair that lies on disk (no multi-GB download).
  .venv/bin/python -m pip install -q -e '.[test]' 2>&1 | grep -v "^WARNING: Location" >&2 || true
  .venv/bin/python -c "import vlsm_batch, torch, transformers, open_clip, pytorch_lightning, polars" || {
    echo "install failed: see the pip output above" >&2; return 1; }
  # Byte-compile everything once: with PYTHONDONTWRITEBYTECODE=1 set, every process would otherwise
  # re-parse the whole ML stack (16-20 s instead of about 5 s per import).
  .venv/bin/python -m compileall -q -j 0 .venv/lib vlsm_batch >/dev/null 2>&1 || true
  touch "$stamp"
}
