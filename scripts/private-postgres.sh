#!/usr/bin/env bash
# A private PostgreSQL cluster for the demo, listening only on a Unix socket in its own
# directory: it never clashes with a server already running on the machine.
#
#   scripts/private-postgres.sh start DIR   initdb (once) and start; prints the DSN of its
#                                           `postgres` database
#   scripts/private-postgres.sh stop DIR    stop it (the data stays for the next start)
#
# Uses the machine's server binaries (Debian: /usr/lib/postgresql/<version>/bin), installing
# Debian's `postgresql` package first when they are missing and we are root. PostgreSQL refuses
# to run as root, so as root the cluster runs as the `postgres` user and DIR is chowned to it.
# If `postgres` cannot reach DIR (a parent directory is closed to it, as /root usually is),
# the cluster lives in /tmp/workerpool-demo-<uid> instead, and start says so on stderr.
set -euo pipefail

usage() { echo "usage: $0 start|stop DIR" >&2; exit 2; }
[ $# = 2 ] || usage
action=$1
dir=$(realpath -m "$2")

as_server() {
    if [ "$(id -u)" = 0 ]; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

server_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    if [ -z "$bin" ] && command -v pg_config >/dev/null; then
        bin=$(pg_config --bindir)
    fi
    if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
        return 1
    fi
    echo "$bin"
}

# The directory the cluster really lives in: DIR, or the /tmp fallback when postgres cannot reach DIR.
cluster_dir() {
    if [ "$(id -u)" != 0 ]; then
        echo "$dir"
        return
    fi
    mkdir -p "$dir"
    chown postgres: "$dir"
    if runuser -u postgres -- test -x "$dir" -a -w "$dir"; then
        echo "$dir"
        return
    fi
    rmdir "$dir" 2>/dev/null || true
    local fallback=/tmp/workerpool-demo-$(id -u)
    echo "private-postgres: the postgres user cannot reach $dir (a parent directory is closed to it);" \
        "the cluster lives in $fallback instead" >&2
    mkdir -p "$fallback"
    chown postgres: "$fallback"
    echo "$fallback"
}

case $action in
start)
    if ! bin=$(server_bin); then
        [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null ||
            { echo "private-postgres: no PostgreSQL server binaries: install PostgreSQL (Debian: apt-get install postgresql)" >&2; exit 1; }
        echo "private-postgres: installing Debian's postgresql package for its server binaries" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null; }
        bin=$(server_bin)
    fi
    home=$(cluster_dir)
    if [ ! -f "$home/data/PG_VERSION" ]; then
        as_server "$bin/initdb" -D "$home/data" -U postgres --auth=trust -E UTF8 --no-sync >"$home/initdb.log"
    fi
    if ! as_server "$bin/pg_ctl" -D "$home/data" status >/dev/null; then
        # No TCP at all; the socket file in $home is the only way in.
        as_server "$bin/pg_ctl" -D "$home/data" -l "$home/server.log" -w -t 60 start \
            -o "-c listen_addresses='' -c unix_socket_directories='$home' -c fsync=off -c synchronous_commit=off" \
            >/dev/null
    fi
    echo "postgresql://postgres@/postgres?host=$home"
    ;;
stop)
    bin=$(server_bin) || exit 0
    home=$(cluster_dir 2>/dev/null)
    if as_server "$bin/pg_ctl" -D "$home/data" status >/dev/null 2>&1; then
        as_server "$bin/pg_ctl" -D "$home/data" -m fast -w -t 60 stop >/dev/null
    fi
    ;;
*) usage ;;
esac
