#!/usr/bin/env bash
# Reverse scripts/install.sh (run by `make uninstall`, as root): stop and disable the service,
# remove the unit, the virtualenv and the shipped configuration files.
#
# Kept, because they are the operator's: /etc/workerpool/workerpool.env (settings and the
# database password), the logs in /var/log/workerpool, and the `workerpool` user that owns them.
# PURGE=1 removes those too. DESTDIR and PREFIX as for install.sh.
set -euo pipefail

DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/workerpool}
PURGE=${PURGE:-0}
user=workerpool
etc=/etc/workerpool
root=${DESTDIR%/}
unit=$root/etc/systemd/system/workerpool.service

case $PREFIX in /*) ;; *) echo "uninstall: PREFIX must be an absolute path" >&2; exit 1 ;; esac
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    [ ! -e "$unit" ] || systemctl disable --now workerpool
    rm -f "$unit"
    systemctl daemon-reload
else
    rm -f "$unit"
fi

rm -rf "$root$PREFIX/venv"
rmdir "$root$PREFIX" 2>/dev/null || true
rm -f "$root$etc/supervisord.conf" "$root$etc/gunicorn.conf.py" "$root$etc/workerpool.env.example"

if [ "$PURGE" = 1 ]; then
    rm -rf "$root$etc" "$root/var/log/workerpool"
    if [ -z "$root" ] && getent passwd "$user" >/dev/null; then
        userdel "$user"
    fi
    echo "workerpool removed, with its configuration, logs and user."
else
    rmdir "$root$etc" 2>/dev/null || true
    echo "workerpool removed. Kept: $etc/workerpool.env, /var/log/workerpool and the user $user (PURGE=1 removes them)."
fi
