# Sourced by scripts/test and scripts/demo: installs or starts what they need when it is
# missing. Defines `say`, `need_redis_server` and `need_docker [required]`.

say() { printf '\n== %s\n' "$*"; }

sudo_cmd=""
[[ $(id -u) -ne 0 ]] && sudo_cmd="sudo"

# redis-server and redis-cli (Debian's package).
need_redis_server() {
  if ! command -v redis-server >/dev/null 2>&1 || ! command -v redis-cli >/dev/null 2>&1; then
    say "installing redis-server (Debian package)"
    $sudo_cmd apt-get install -y redis-server >/dev/null 2>&1 ||
      { $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y redis-server >/dev/null; }
  fi
}

# OpenSSH's server, for the tests and the sandbox that reach a host over SSH (each starts
# its own sshd on a loopback port; the system's sshd is not used).
need_sshd() {
  if [[ ! -x /usr/sbin/sshd ]] && ! command -v sshd >/dev/null 2>&1; then
    say "installing openssh-server (Debian package)"
    $sudo_cmd apt-get install -y openssh-server >/dev/null 2>&1 ||
      { $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y openssh-server >/dev/null; }
  fi
}

# man (man-db, with groff), for the test that renders the manual pages.
need_man() {
  if ! command -v man >/dev/null 2>&1 || ! command -v groff >/dev/null 2>&1; then
    say "installing man-db (Debian package)"
    $sudo_cmd apt-get install -y man-db groff-base >/dev/null 2>&1 ||
      { $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y man-db groff-base >/dev/null; }
  fi
}

# Debian's Chromium, for the live page's tests in a real (headless) browser.
need_chromium() {
  if ! command -v chromium >/dev/null 2>&1; then
    say "installing chromium (Debian package)"
    $sudo_cmd apt-get install -y chromium >/dev/null 2>&1 ||
      { $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y chromium >/dev/null; }
  fi
}

# Python packages some tests run against: the BullMQ library itself (its own view of
# queue counts is compared with redis.queues). Pinned, from PyPI.
need_python_packages() {
  if ! python3 -c 'import bullmq' >/dev/null 2>&1; then
    say "installing the Python package bullmq (PyPI)"
    python3 -m pip install --quiet --disable-pip-version-check 'bullmq==3.4.4' >/dev/null 2>&1 ||
      python3 -m pip install --quiet --disable-pip-version-check --break-system-packages 'bullmq==3.4.4'
  fi
}

# A Docker Engine (images are built locally; nothing is pulled). With `required`, or
# REDIS_MOVE_REQUIRE_DOCKER=1, its absence is an error; otherwise a loud warning.
need_docker() {
  docker info >/dev/null 2>&1 && return 0
  if command -v dockerd >/dev/null 2>&1 && [[ $(id -u) -eq 0 ]]; then
    say "starting dockerd"
    (dockerd >/tmp/redis-move-dockerd.log 2>&1 &)
    for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  fi
  docker info >/dev/null 2>&1 && return 0
  if [[ "${1:-}" == "required" || "${REDIS_MOVE_REQUIRE_DOCKER:-}" == "1" ]]; then
    echo "$(basename "$0"): no Docker Engine (install docker.io and start dockerd)" >&2
    exit 2
  fi
  echo "$(basename "$0"): WARNING: no Docker Engine: the Docker tests will be SKIPPED" >&2
}

# Debian's redis-py and hiredis for /usr/bin/python3 (the Python baselines of the
# benchmarks are written as a Python user would, with those).
need_python_redis() {
  if ! /usr/bin/python3 -c 'import redis, hiredis' >/dev/null 2>&1; then
    say "installing python3-redis and python3-hiredis (Debian packages)"
    $sudo_cmd apt-get install -y python3-redis python3-hiredis >/dev/null 2>&1 ||
      { $sudo_cmd apt-get update >/dev/null && $sudo_cmd apt-get install -y python3-redis python3-hiredis >/dev/null; }
  fi
}
