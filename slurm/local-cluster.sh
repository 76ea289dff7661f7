#!/usr/bin/env bash
# Single-node SLURM cluster with accounting (slurmdbd + MariaDB), for tests and CI.
#
#   slurm/local-cluster.sh install   install the Debian packages if missing
#   slurm/local-cluster.sh start     install if needed, write configs, start the daemons,
#                                    wait until the node is idle and sacct works (no-op if up)
#   slurm/local-cluster.sh stop      cancel jobs, stop the daemons by their pid files
#   slurm/local-cluster.sh status    show what runs (exit 0 if the whole cluster is up, 3 if not)
#   slurm/local-cluster.sh env       print `export SLURM_CONF=...` for clients (sbatch, sacct, submitit)
#
# All state (configs, logs, pid files, spool, munge key, MariaDB datadir) lives under one
# directory: $BENCH_SLURM_DIR, default /tmp/bench-slurm. Delete it (after `stop`) to start
# from scratch. Only munged's socket is outside, at its default /run/munge/munge.socket.2.
# Needs root (slurm daemons run as root, munged as munge, mariadbd as mysql).
#
# Environment overrides:
#   BENCH_SLURM_DIR        state dir                          (/tmp/bench-slurm)
#   BENCH_SLURM_CLUSTER    ClusterName                        (bench)
#   BENCH_SLURM_CTLD_PORT  slurmctld port                     (6817)
#   BENCH_SLURM_SLURMD_PORT slurmd port                       (6818)
#   BENCH_SLURM_DBD_PORT   slurmdbd port                      (6819)
#   BENCH_SLURM_DB_PORT    MariaDB port on 127.0.0.1          (6820)
#   BENCH_SLURM_TIMEOUT    seconds to wait for readiness      (90)
#   BENCH_SLURM_LINK_ETC   1: point /etc/slurm/slurm.conf at the generated config if that
#                          path is free or already ours, so plain `sinfo` works; 0: don't (1)
set -euo pipefail

export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:${PATH:-}"

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CONF_DIR="$SCRIPT_DIR/conf"
STATE="$(realpath -m "${BENCH_SLURM_DIR:-/tmp/bench-slurm}")"
CLUSTER="${BENCH_SLURM_CLUSTER:-bench}"
CTLD_PORT="${BENCH_SLURM_CTLD_PORT:-6817}"
SLURMD_PORT="${BENCH_SLURM_SLURMD_PORT:-6818}"
DBD_PORT="${BENCH_SLURM_DBD_PORT:-6819}"
DB_PORT="${BENCH_SLURM_DB_PORT:-6820}"
DB_PASS="bench-slurm"   # local-only database bound to 127.0.0.1
TIMEOUT="${BENCH_SLURM_TIMEOUT:-90}"
LINK_ETC="${BENCH_SLURM_LINK_ETC:-1}"
ETC_CONF=/etc/slurm/slurm.conf
MARKER="$STATE/.bench-slurm-state"

PACKAGES=(slurm-wlm slurmdbd munge mariadb-server)
BINARIES=(slurmctld slurmd slurmdbd sinfo sbatch sacct sacctmgr scontrol munged mungekey munge mariadbd mariadb-install-db mariadb)

export SLURM_CONF="$STATE/etc/slurm.conf"

log() { printf '[local-cluster] %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
need_root() { [[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0 $*)"; }

# ---------------------------------------------------------------- pid files

# Daemon name -> pid file. The pid is only trusted if the process runs that program.
pidfile_of() {
  case "$1" in
    munged) echo "$STATE/munge/munged.pid" ;;
    mariadbd) echo "$STATE/run/mariadbd.pid" ;; # a readable copy of mysql/mysqld.pid (0660)
    slurmdbd | slurmctld | slurmd) echo "$STATE/run/$1.pid" ;;
    *) die "unknown daemon $1" ;;
  esac
}

# True if PID is a live process (a zombie waiting to be reaped counts as dead).
pid_alive() {
  local st
  # /proc rather than kill -0, which fails with EPERM for a non-root caller.
  st="$(awk '{ print $3 }' "/proc/$1/stat" 2>/dev/null || true)"
  [[ -n $st && $st != Z && $st != X ]]
}

# Prints the pid of a live daemon, or nothing (and removes a stale pid file).
daemon_pid() {
  local name="$1" pf pid exe
  pf="$(pidfile_of "$name")"
  [[ -f $pf ]] || return 0
  pid="$(tr -dc '0-9' <"$pf" 2>/dev/null || true)"
  if [[ -n $pid ]] && pid_alive "$pid"; then
    exe="$(readlink "/proc/$pid/exe" 2>/dev/null || true)"
    exe="${exe% (deleted)}"
    exe="${exe##*/}"
    # Debian installs slurm daemons as /usr/sbin/slurmctld-wlm etc. (alternatives).
    if [[ $exe == "$name" || $exe == "$name-wlm" ]] ||
      [[ -z $exe && "$(cat "/proc/$pid/comm" 2>/dev/null)" == "$name" ]]; then
      echo "$pid"
      return 0
    fi
  fi
  # Stale: the daemon crashed or the pid was reused by something else.
  rm -f "$pf" 2>/dev/null || true
}

is_up() { [[ -n "$(daemon_pid "$1")" ]]; }

stop_daemon() {
  local name="$1" pid i
  pid="$(daemon_pid "$name")"
  if [[ -z $pid ]]; then
    log "$name: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do # up to 30 s
    pid_alive "$pid" || break
    sleep 0.1
  done
  if pid_alive "$pid"; then
    log "$name (pid $pid) ignored SIGTERM for 30 s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    sleep 0.5
  fi
  rm -f "$(pidfile_of "$name")"
  log "$name: stopped (pid $pid)"
}

# wait_for DESCRIPTION SECONDS COMMAND...: poll COMMAND every 0.2 s.
wait_for() {
  local what="$1" secs="$2" deadline
  shift 2
  deadline=$(($(date +%s) + secs))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) >= deadline)); then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------- install

installed() {
  local b
  for b in "${BINARIES[@]}"; do command -v "$b" >/dev/null 2>&1 || return 1; done
}

cmd_install() {
  if installed; then
    log "packages already installed ($(slurmd -V 2>/dev/null || echo slurm))"
    return 0
  fi
  need_root install
  local t0 lists
  t0="$(now)"
  export DEBIAN_FRONTEND=noninteractive
  lists="$(find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' 2>/dev/null | head -n 1)"
  if [[ -z $lists ]]; then
    log "apt lists are empty: apt-get update"
    apt-get update -q >&2
  fi
  log "apt-get install ${PACKAGES[*]}"
  if ! apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2; then
    log "install failed: apt-get update and retry"
    apt-get update -q >&2
    apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2
  fi
  installed || die "packages installed but some binaries are missing: ${BINARIES[*]}"
  log "installed $(slurmd -V) in $(elapsed "$t0") s"
}

# ---------------------------------------------------------------- configs

node_name() { hostname -s 2>/dev/null || hostname; }

# NodeName line from `slurmd -C`, with our name/address and RealMemory lowered by 5 %
# (a node whose memory reads lower than configured is drained as "Low RealMemory").
node_line() {
  local node="$1"
  slurmd -C 2>/dev/null | awk -v node="$node" '
    /^NodeName=/ {
      out = "NodeName=" node " NodeAddr=127.0.0.1"
      for (i = 2; i <= NF; i++) {
        split($i, kv, "=")
        if (kv[1] == "RealMemory") {
          m = int(kv[2] * 0.95); if (m < 1) m = 1
          $i = "RealMemory=" m
        }
        out = out " " $i
      }
      print out " State=UNKNOWN"
      found = 1
    }
    END { if (!found) exit 1 }'
}

render() { # render TEMPLATE OUT MODE NODE NODE_LINE
  local tmpl="$1" out="$2" mode="$3" node="$4" nl="$5" tmp
  tmp="$out.tmp.$$"
  sed -e "s|@STATE@|$STATE|g" -e "s|@CLUSTER@|$CLUSTER|g" -e "s|@NODE@|$node|g" \
    -e "s|@CTLD_PORT@|$CTLD_PORT|g" -e "s|@SLURMD_PORT@|$SLURMD_PORT|g" \
    -e "s|@DBD_PORT@|$DBD_PORT|g" -e "s|@DB_PORT@|$DB_PORT|g" -e "s|@DB_PASS@|$DB_PASS|g" \
    -e "s|@NODE_LINE@|$nl|g" "$tmpl" >"$tmp"
  chmod "$mode" "$tmp"
  mv -f "$tmp" "$out"
}

write_configs() {
  local node nl
  node="$(node_name)"
  nl="$(node_line "$node")" || die "slurmd -C printed no NodeName line"
  mkdir -p "$STATE"/{etc,run,log,spool/ctld,spool/d,munge,mysql}
  chmod 755 "$STATE" "$STATE"/{etc,run,log,spool}
  touch "$MARKER"
  render "$CONF_DIR/slurm.conf.in" "$STATE/etc/slurm.conf" 644 "$node" "$nl"
  render "$CONF_DIR/slurmdbd.conf.in" "$STATE/etc/slurmdbd.conf" 600 "$node" "$nl"
  render "$CONF_DIR/my.cnf.in" "$STATE/etc/my.cnf" 644 "$node" "$nl"
  : >"$STATE/etc/plugstack.conf"
  chmod 644 "$STATE/etc/plugstack.conf"
  link_etc_conf
}

# Make plain `sinfo`/`sbatch` (no SLURM_CONF) find this cluster, unless the system
# already has a slurm.conf of its own.
link_etc_conf() {
  [[ $LINK_ETC == 1 ]] || return 0
  if [[ -L $ETC_CONF ]]; then
    local target
    target="$(readlink "$ETC_CONF")"
    [[ $target == "$SLURM_CONF" ]] && return 0
    if [[ ! -e $target || -f "$(dirname "$(dirname "$target")")/.bench-slurm-state" ]]; then
      ln -sfn "$SLURM_CONF" "$ETC_CONF"
      return 0
    fi
  elif [[ ! -e $ETC_CONF ]]; then
    mkdir -p "$(dirname "$ETC_CONF")"
    ln -s "$SLURM_CONF" "$ETC_CONF"
    return 0
  fi
  log "note: $ETC_CONF belongs to another setup; clients need SLURM_CONF=$SLURM_CONF"
}

unlink_etc_conf() {
  if [[ -L $ETC_CONF && "$(readlink "$ETC_CONF")" == "$SLURM_CONF" ]]; then
    rm -f "$ETC_CONF"
  fi
}

# ---------------------------------------------------------------- daemons

# munged listens on its default socket, /run/munge/munge.socket.2: Slurm 22.05 clients
# ignore AuthInfo=socket= on connections to slurmdbd. Key, seed, log and pid file live in
# the state dir. A munged that already answers there (e.g. a system one) is used as is.
MUNGE_SOCKET=/run/munge/munge.socket.2
munge_answers() { munge -n -S "$MUNGE_SOCKET" 2>/dev/null | unmunge -S "$MUNGE_SOCKET" >/dev/null 2>&1; }

start_munged() {
  local d="$STATE/munge"
  if is_up munged; then return 0; fi
  if munge_answers; then
    log "munged: using the one already listening on $MUNGE_SOCKET"
    return 0
  fi
  chown munge:munge "$d"
  chmod 755 "$d" # the key itself is 0400; the pid file is readable for `status`
  if [[ ! -s $d/munge.key ]]; then
    mungekey --create --keyfile="$d/munge.key" 2>/dev/null ||
      dd if=/dev/urandom of="$d/munge.key" bs=1 count=1024 status=none
  fi
  chown munge:munge "$d/munge.key"
  chmod 400 "$d/munge.key"
  mkdir -p /run/munge
  chown munge:munge /run/munge
  chmod 755 /run/munge # munged: the socket dir must be searchable by all
  # A socket left by a crashed munged: nothing answers on it (checked above).
  rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock"
  runuser -u munge -- munged --socket="$MUNGE_SOCKET" --key-file="$d/munge.key" \
    --pid-file="$d/munged.pid" --log-file="$d/munged.log" --seed-file="$d/munged.seed" \
    </dev/null 9>&- >>"$STATE/log/munged.out" 2>&1 ||
    die "munged failed to start; see $d/munged.log and $STATE/log/munged.out"
  wait_for "munged" 20 munge_answers || die "munged does not answer; see $d/munged.log"
}

# shellcheck disable=SC2120 # arguments come through wait_for
mysql_root() { mariadb --defaults-file="$STATE/etc/my.cnf" -u root "$@"; }

# mariadbd writes its pid file mode 0660; keep a copy that `status` can read as any user.
copy_mariadb_pid() {
  if [[ -r $STATE/mysql/mysqld.pid ]]; then
    tr -dc '0-9' <"$STATE/mysql/mysqld.pid" >"$STATE/run/mariadbd.pid"
  fi
}

start_mariadbd() {
  local d="$STATE/mysql"
  copy_mariadb_pid
  if is_up mariadbd; then return 0; fi
  mkdir -p "$d"
  chown mysql:mysql "$d"
  chmod 755 "$d" # the datadir inside is private to mysql
  touch "$d/mysqld.log" && chown mysql:mysql "$d/mysqld.log"
  # Debian's own default socket/pid dir; harmless, and some tools expect it.
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld
  if [[ ! -d $d/data/mysql ]]; then
    log "initialising MariaDB datadir $d/data"
    rm -rf "$d/data"
    mariadb-install-db --defaults-file="$STATE/etc/my.cnf" --user=mysql \
      --auth-root-authentication-method=socket --skip-test-db \
      >>"$STATE/log/mariadb-install.out" 2>&1 ||
      die "mariadb-install-db failed; see $STATE/log/mariadb-install.out"
  fi
  rm -f "$d/mysqld.sock"
  setsid mariadbd --defaults-file="$STATE/etc/my.cnf" </dev/null 9>&- >>"$STATE/log/mariadbd.out" 2>&1 &
  wait_for "mariadbd" 60 mysql_root -e 'SELECT 1' ||
    die "mariadbd does not answer; see $d/mysqld.log"
  copy_mariadb_pid
  # shellcheck disable=SC2119
  mysql_root <<SQL || die "could not create the slurm database user"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
SQL
}

sacct_works() { sacct -n -X -a -S now-1minutes -o jobid >/dev/null 2>&1; }
cluster_registered() { sacctmgr -n -P show cluster format=cluster 2>/dev/null | grep -qx "$CLUSTER"; }

start_slurmdbd() {
  if is_up slurmdbd; then return 0; fi
  slurmdbd </dev/null 9>&- >>"$STATE/log/slurmdbd.out" 2>&1 ||
    die "slurmdbd failed to start; see $STATE/log/slurmdbd.log"
  wait_for "slurmdbd" 60 sh -c "sacctmgr -n -P show cluster format=cluster" ||
    die "slurmdbd does not answer; see $STATE/log/slurmdbd.log"
}

start_slurmctld() {
  if is_up slurmctld; then return 0; fi
  slurmctld -f "$SLURM_CONF" </dev/null 9>&- >>"$STATE/log/slurmctld.out" 2>&1 ||
    die "slurmctld failed to start; see $STATE/log/slurmctld.log"
  wait_for "slurmctld" 60 scontrol ping ||
    die "slurmctld does not answer; see $STATE/log/slurmctld.log"
}

start_slurmd() {
  if is_up slurmd; then return 0; fi
  slurmd -f "$SLURM_CONF" -N "$(node_name)" </dev/null 9>&- >>"$STATE/log/slurmd.out" 2>&1 ||
    die "slurmd failed to start; see $STATE/log/slurmd.log"
}

node_state() { sinfo -h -n "$(node_name)" -o '%T' 2>/dev/null | head -n 1; }
node_ready() { [[ "$(node_state)" =~ ^(idle|mixed|allocated|completing)$ ]]; }

wait_node_ready() {
  local deadline=$(($(date +%s) + TIMEOUT)) resumed=0 st
  while :; do
    st="$(node_state)"
    [[ $st =~ ^(idle|mixed|allocated|completing)$ ]] && return 0
    # Left down/drained by a crash or an unclean stop: slurmd answers, so resume it.
    if ((resumed == 0)) && [[ $st =~ (down|drain) ]]; then
      sleep 1
      log "node is '$st'; resuming it"
      scontrol update nodename="$(node_name)" state=resume >/dev/null 2>&1 || true
      resumed=1
    fi
    if (($(date +%s) >= deadline)); then
      die "node not ready after ${TIMEOUT}s (state '${st:-?}'); see $STATE/log/slurmd.log"
    fi
    sleep 0.2
  done
}

all_up() {
  local d
  is_up munged || munge_answers || return 1
  for d in mariadbd slurmdbd slurmctld slurmd; do is_up "$d" || return 1; done
}

cmd_start() {
  need_root start
  cmd_install
  mkdir -p "$STATE"
  exec 9>"$STATE/.lock"
  flock -w "$TIMEOUT" 9 || die "another local-cluster.sh holds $STATE/.lock"
  if all_up && node_ready && sacct_works; then
    link_etc_conf
    log "already running (state dir $STATE)"
    return 0
  fi
  local t0
  t0="$(now)"
  write_configs
  start_munged
  start_mariadbd
  start_slurmdbd
  start_slurmctld
  start_slurmd
  wait_node_ready
  wait_for "cluster '$CLUSTER' registered in slurmdbd" "$TIMEOUT" cluster_registered ||
    die "slurmctld did not register the cluster; see $STATE/log/slurmctld.log"
  wait_for "sacct" "$TIMEOUT" sacct_works || die "sacct does not work; see $STATE/log/slurmdbd.log"
  log "cluster '$CLUSTER' up in $(elapsed "$t0") s: node $(node_name) $(node_state), partition debug"
  log "state dir $STATE; clients: export SLURM_CONF=$SLURM_CONF"
}

cmd_stop() {
  need_root stop
  [[ -d $STATE ]] || { log "nothing to stop ($STATE does not exist)"; return 0; }
  exec 9>"$STATE/.lock"
  flock -w "$TIMEOUT" 9 || die "another local-cluster.sh holds $STATE/.lock"
  local t0 ids i
  t0="$(now)"
  # Cancel what is queued or running, so no job step outlives slurmd.
  if is_up slurmctld && is_up slurmd; then
    ids="$(squeue -h -o '%A' 2>/dev/null | tr '\n' ' ')"
    if [[ -n ${ids// /} ]]; then
      log "cancelling jobs: $ids"
      # shellcheck disable=SC2086
      scancel $ids 2>/dev/null || true
      for ((i = 0; i < 100; i++)); do # up to 20 s
        [[ -z "$(squeue -h -o '%A' 2>/dev/null)" ]] && break
        sleep 0.2
      done
    fi
  fi
  stop_daemon slurmd
  stop_daemon slurmctld
  stop_daemon slurmdbd
  stop_daemon mariadbd
  stop_daemon munged
  unlink_etc_conf
  log "stopped in $(elapsed "$t0") s"
}

cmd_status() {
  local d pid rc=0
  echo "state dir: $STATE"
  echo "SLURM_CONF=$SLURM_CONF"
  for d in munged mariadbd slurmdbd slurmctld slurmd; do
    pid=""
    [[ -d $STATE ]] && pid="$(daemon_pid "$d" 2>/dev/null || true)"
    if [[ -n $pid ]]; then
      printf '  %-10s running (pid %s)\n' "$d" "$pid"
    elif [[ $d == munged ]] && munge_answers; then
      printf '  %-10s running (not ours: answers on %s)\n' "$d" "$MUNGE_SOCKET"
    else
      printf '  %-10s stopped\n' "$d"
      rc=3
    fi
  done
  if is_up slurmctld 2>/dev/null; then
    sinfo 2>&1 | sed 's/^/  /'
    if sacct_works; then echo "  sacct: ok"; else echo "  sacct: FAILING"; rc=3; fi
  fi
  return "$rc"
}

usage() {
  sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
  install) cmd_install ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  env) echo "export SLURM_CONF=$SLURM_CONF" ;;
  -h | --help | help) usage ;;
  *) usage >&2; exit 2 ;;
esac
