# Sourced by scripts/test.sh and scripts/quickstart.sh: create .venv and install vlsm-batch into it.
# Idempotent: a second run only checks a stamp. Works from a fresh clone with nothing installed.
# Every stage prints what it does with the seconds since setup began (on stderr), and a long stage says every
# 30 s that it is still running, so a first run is never silent for minutes.

_setup_t0=$SECONDS

_stage() {  # _stage MESSAGE: one progress line, "== setup [ 42 s] MESSAGE"
  printf '== setup [%3d s] %s\n' "$((SECONDS - _setup_t0))" "$*" >&2
}

_quiet_pip() {  # _quiet_pip ARGS...: pip install -q, without the mirror's "Location ... ignored" noise and
  # setuptools' advice about editable installs (PYTHONWARNINGS reaches pip's build subprocess)
  PYTHONWARNINGS=ignore .venv/bin/python -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location" >&2 || true
}

_with_heartbeat() {  # _with_heartbeat WHAT CMD...: run CMD, saying every 30 s that WHAT is still going on
  local what=$1 pid waited=0
  shift
  "$@" &
  pid=$!
  while kill -0 "$pid" 2>/dev/null; do
    sleep 1
    waited=$((waited + 1))
    if [ $((waited % 30)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
      _stage "... still $what"
    fi
  done
  wait "$pid"
}

ensure_venv() {
  local py="${PYTHON:-python3}"
  local stamp=".venv/.vlsm-batch-installed"
  if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && .venv/bin/python -c "import vlsm_batch" 2>/dev/null; then
    return 0
  fi
  _setup_t0=$SECONDS
  _stage "setting up .venv for vlsm-batch (first run only; torch comes from the wheels on this machine's disk)"
  if [ ! -x .venv/bin/python ]; then
    _stage "creating the virtual environment .venv with $("$py" --version 2>&1)"
    "$py" -m venv .venv || { echo "could not create .venv with $py (set PYTHON=python3.X)" >&2; return 1; }
  fi
  _stage "upgrading pip"
  _quiet_pip --upgrade pip
  # pyproject pins torch<=2.14.1, which pip resolves to the pair that lies on disk (no multi-GB download)
  local torch_req
  torch_req=$(sed -n 's/^ *"\(torch[<>=,.0-9]*\)".*/\1/p' pyproject.toml | head -n 1)
  _stage "installing ${torch_req:-torch} and torchvision from the wheels on disk"
  _with_heartbeat "installing torch" _quiet_pip "${torch_req:-torch}" torchvision
  _stage "installing vlsm-batch and its dependencies (Lightning, transformers, open_clip, polars, optuna, ...) and the test tools"
  _with_heartbeat "installing the dependencies" _quiet_pip -e '.[all,test]'
  _stage "checking that everything imports"
  .venv/bin/python -c "import vlsm_batch, torch, transformers, open_clip, pytorch_lightning, polars" || {
    echo "install failed: see the pip output above" >&2; return 1; }
  # Byte-compile everything once: with PYTHONDONTWRITEBYTECODE=1 set, every process would otherwise
  # re-parse the whole ML stack (16-20 s instead of about 5 s per import).
  _stage "byte-compiling the environment once (later imports take about 5 s instead of 16-20 s)"
  _with_heartbeat "byte-compiling" .venv/bin/python -m compileall -q -j 0 .venv/lib vlsm_batch >/dev/null 2>&1 || true
  touch "$stamp"
  _stage "done: .venv is ready ($((SECONDS - _setup_t0)) s in all)"
}
