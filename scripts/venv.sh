# Sourced by scripts/run and scripts/test: make .venv and install the package into it.
# Debian/Ubuntu's system pip refuses to install outside a venv, and their python3 needs
# the python3-venv package for `python3 -m venv`: installed here when run as root.
# Usage: ensure_venv EXTRAS   (EXTRAS: "" or "[test]")

apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >/dev/null
  else
    echo "missing: $* (install it, e.g. sudo apt-get install $*, and run again)" >&2
    exit 1
  fi
}

ensure_venv() {
  local py=${PYTHON:-python3}
  if ! command -v "$py" >/dev/null 2>&1; then
    apt_install python3 python3-venv
  fi
  if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "gptbot needs Python 3.11 or newer; $("$py" --version) found (set PYTHON=...)" >&2
    exit 1
  fi
  if [ ! -x .venv/bin/python ]; then
    if ! "$py" -m venv .venv >/dev/null 2>&1; then
      rm -rf .venv
      apt_install "python3-venv" "python$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')-venv"
      "$py" -m venv .venv
    fi
  fi
  # reinstall only when pyproject.toml changed since the last install
  local stamp=".venv/.installed$1"
  if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$1"
    touch "$stamp"
  fi
}
