#!/usr/bin/env bash
# Install workerpool on a VM (run by `make install`, as root):
#   $PREFIX/venv                        a virtualenv holding workerpool, supervisor and gunicorn
#   /etc/workerpool/supervisord.conf    the shipped supervisord.conf
#   /etc/workerpool/gunicorn.conf.py    the health app's gunicorn settings
#   /etc/workerpool/workerpool.env      the configuration, created once from the example, never overwritten
#   /etc/systemd/system/workerpool.service
#   /var/log/workerpool                 logs, owned by the service user
# and the system user `workerpool` (no login, no home).
#
# DESTDIR=/some/root stages the same files under that root for packaging or inspection: the
# venv's scripts name $PREFIX, not DESTDIR; no user is created, no file chowned, systemd untouched.
# PYTHON picks the interpreter for the venv (default /usr/bin/python3): it must live outside
# /home and /root, which the unit's ProtectHome= hides from the service.
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/opt/workerpool}
PYTHON=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
user=workerpool
etc=/etc/workerpool
logs=/var/log/workerpool
unitdir=/etc/systemd/system
root=${DESTDIR%/}

die() { echo "install: $*" >&2; exit 1; }

case $PREFIX in /*) ;; *) die "PREFIX must be an absolute path, not '$PREFIX'" ;; esac
[ -n "$root" ] || [ "$(id -u)" = 0 ] || die "run as root (or set DESTDIR to stage the files elsewhere)"
[ -f "$src/health_app/gunicorn.conf.py" ] || die "$src/health_app/gunicorn.conf.py is missing"

"$PYTHON" - <<'EOF' || die "PYTHON=$PYTHON cannot serve the unit: set PYTHON to a system Python 3.11+ with venv"
import ensurepip, os, sys, venv  # Debian ships the last two apart: apt-get install python3-venv
home = os.path.realpath(sys.base_prefix)
if sys.version_info < (3, 11):
    sys.exit(f"Python {sys.version.split()[0]} is older than 3.11")
if home.startswith(("/home/", "/root/")):
    sys.exit(f"{home} is under /home or /root, hidden from the service by ProtectHome=")
EOF

echo "==> virtualenv $root$PREFIX/venv"
venv=$root$PREFIX/venv
# A reinstall upgrades the package in the existing venv.
[ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
# Build from a copy: pip's in-tree build would write build/ into a checkout others are using.
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
tar -C "$src" --exclude=__pycache__ -cf - setup.cfg pyproject.toml workerpool health_app | tar -C "$stage" -xf -
[ ! -f "$src/README.md" ] || cp "$src/README.md" "$stage/"
# python -m pip: a staged venv's pip script names $PREFIX, where no python exists yet.
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$stage"
if [ -n "$root" ]; then
    # Scripts and pyvenv.cfg name the venv by its staged path; make them name $PREFIX.
    { grep -rlF --null "$root$PREFIX" "$venv/bin" "$venv/pyvenv.cfg" || true; } |
        xargs -0 -r sed -i "s|$root$PREFIX|$PREFIX|g"
fi

if [ -z "$root" ] && ! getent passwd "$user" >/dev/null; then
    echo "==> system user $user"
    useradd --system --user-group --no-create-home --home-dir "$PREFIX" --shell /usr/sbin/nologin "$user"
fi
owner() { [ -n "$root" ] || chown "$@"; }

echo "==> configuration $root$etc"
install -d -m 0750 "$root$etc"
owner "root:$user" "$root$etc"
install -m 0644 "$src/supervisord.conf" "$root$etc/supervisord.conf"
install -m 0644 "$src/health_app/gunicorn.conf.py" "$root$etc/gunicorn.conf.py"
sed "s|/opt/workerpool|$PREFIX|g" "$src/systemd/workerpool.env.example" >"$root$etc/workerpool.env.example"
chmod 0644 "$root$etc/workerpool.env.example"
if [ -e "$root$etc/workerpool.env" ]; then
    echo "    kept the existing $etc/workerpool.env (compare with workerpool.env.example)"
else
    # It holds the database password: readable by the service's group only.
    install -m 0640 "$root$etc/workerpool.env.example" "$root$etc/workerpool.env"
    owner "root:$user" "$root$etc/workerpool.env"
fi

echo "==> logs $root$logs"
install -d -m 0750 "$root$logs"
owner "$user:$user" "$root$logs"

echo "==> unit $root$unitdir/workerpool.service"
install -d "$root$unitdir"
sed "s|/opt/workerpool|$PREFIX|g" "$src/systemd/workerpool.service" >"$root$unitdir/workerpool.service"
chmod 0644 "$root$unitdir/workerpool.service"
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload
fi

cat <<EOF

workerpool is installed${root:+ under $root}.
Set WORKERPOOL_DSN and WORKERPOOL_TASKS in $etc/workerpool.env, then create or upgrade the tables:
    systemd-run --pipe --wait -p User=$user -p EnvironmentFile=$etc/workerpool.env $PREFIX/venv/bin/workerpool migrate
Enable and start the service, then check it:
    systemctl enable --now workerpool
    systemctl status workerpool
EOF
