#!/bin/sh
# Set up flowtap on Debian 12 (bookworm) or a derivative: system packages, a virtualenv in .venv and an
# editable install whose compiled engine (dpi/_reader*.so, dpi/_flowtable*.so) lands inside the checkout.
#
#   sh setup.sh          build and install flowtap into .venv
#   sh setup.sh --test   also tshark, tcpdump, iproute2 and the test extras (pytest, scapy, ...)
#   sh setup.sh --live   also live capture: BCC, kernel headers, bcc in the venv (probe/bpf_setup.sh; --test too)
#
# Safe to run again: apt is skipped when every package is installed, the venv is kept, and later runs only
# recompile what changed. Environment:
#   FLOWTAP_DEBUG=1        build the extensions with bounds checks, C asserts and -O0 -g (see setup.py)
#   FLOWTAP_PYTHON=PATH    interpreter for the venv (default /usr/bin/python3, Debian's)
#   FLOWTAP_SKIP_APT=1     do not touch system packages (non-Debian systems: install the equivalents yourself)
#   FLOWTAP_REINSTALL=1    run the pip steps even when nothing they depend on changed
# POSIX sh on purpose: a minimal Debian has dash and no bash.
set -eu

cd "$(dirname "$0")"

t_start=$(date +%s)
say() { printf 'setup: [%3ss] %s\n' "$(($(date +%s) - t_start))" "$*" >&2; }
die() { printf 'setup: ERROR: %s\n' "$*" >&2; exit 1; }

step="starting"
# shellcheck disable=SC2317  # called by the EXIT trap
on_exit() {
    rc=$?
    if [ "$rc" -ne 0 ]; then
        printf 'setup: FAILED (exit %s) while %s\n' "$rc" "$step" >&2
    fi
}
trap on_exit EXIT

step="parsing arguments"
with_test=0
with_live=0
for arg in "$@"; do
    case "$arg" in
        --test) with_test=1 ;;
        --live) with_live=1 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$arg' (usage: sh setup.sh [--test] [--live])" ;;
    esac
done

if [ ! -f pyproject.toml ] || [ ! -f setup.py ]; then
    die "run me from a flowtap checkout (no pyproject.toml/setup.py in $(pwd))"
fi

# Build: interpreter, venv module, headers and a C compiler for the Cython extensions; CA certificates so
# pip can reach the package index over HTTPS.
pkgs="python3 python3-venv python3-dev gcc libc6-dev ca-certificates"
# Tests: tshark is the independent reference the tests compare with; tcpdump and iproute2 (ip netns, veth)
# serve the capture tests; strace shows the output is fsync'ed before its rename (tests/test_output_durable.py).
[ "$with_test" -eq 1 ] && pkgs="$pkgs tshark tcpdump iproute2 strace"

# --- system packages ---------------------------------------------------------------------------------------
step="checking system packages"
if [ "${FLOWTAP_SKIP_APT:-0}" != "0" ]; then
    say "FLOWTAP_SKIP_APT set: not checking system packages ($pkgs)"
else
    if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
        die "apt-get/dpkg-query not found: this script targets Debian 12. Install the equivalents of: $pkgs; then rerun with FLOWTAP_SKIP_APT=1"
    fi
    missing=""
    for p in $pkgs; do
        status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
        [ "$status" = "install ok installed" ] || missing="$missing $p"
    done
    if [ -z "$missing" ]; then
        say "system packages present: $pkgs"
    else
        sudo=""
        if [ "$(id -u)" -ne 0 ]; then
            command -v sudo >/dev/null 2>&1 || die "missing packages:$missing; run as root or install sudo"
            sudo="sudo"
        fi
        step="running apt-get update"
        say "missing:$missing; running apt-get update"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q update >&2 ||
            die "apt-get update failed (is a Debian mirror reachable?)"
        case " $missing " in
            *" tshark "*)
                # wireshark-common asks whether non-root users may capture; answer no, without a prompt
                echo "wireshark-common wireshark-common/install-setuid boolean false" |
                    $sudo debconf-set-selections ;;
        esac
        step="installing system packages:$missing"
        say "apt-get install$missing"
        # shellcheck disable=SC2086  # word splitting of the package list is intended
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends $missing >&2 ||
            die "apt-get install failed for:$missing"
    fi
fi

# --- virtualenv --------------------------------------------------------------------------------------------
python="${FLOWTAP_PYTHON:-/usr/bin/python3}"
step="creating .venv with $python"
[ -x "$python" ] || die "$python not found (install python3, or set FLOWTAP_PYTHON)"
if [ -x .venv/bin/python ] && .venv/bin/python -c 'import sys' >/dev/null 2>&1; then
    say "using existing .venv ($(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'))"
else
    # a .venv copied from another machine has dangling interpreter links: rebuild it
    say "creating .venv with $python ($("$python" -c 'import sys; print(sys.version.split()[0])'))"
    "$python" -m venv --clear .venv || die "python3 -m venv failed (is python3-venv installed?)"
fi
pip() { .venv/bin/python -m pip --disable-pip-version-check --no-input "$@"; }

# --- Python packages ---------------------------------------------------------------------------------------
# --no-build-isolation builds against the Cython/numpy installed here, so the first step installs them; the
# editable install compiles ext/ into dpi/ in place, next to the Python sources. pip rebuilds every extension
# from scratch on each run, so once the dependencies are in, later runs only recompile what changed
# (setup.py build_ext --inplace compares timestamps); a change to pyproject.toml, setup.py, FLOWTAP_DEBUG or
# the interpreter, or FLOWTAP_REINSTALL=1, goes through pip again.
target="."
[ "$with_test" -eq 1 ] && target=".[test]"
case "${FLOWTAP_DEBUG:-}" in
    ""|0) mode="release" ;;
    *) mode="debug (FLOWTAP_DEBUG=$FLOWTAP_DEBUG: bounds checks, asserts, -O0 -g)" ;;
esac
stamp_file=.venv/.flowtap-setup-stamp
stamp=$({ cat pyproject.toml setup.py; echo "debug=${FLOWTAP_DEBUG:-} python=$python"; } | sha256sum | cut -d' ' -f1)
up_to_date=0
if [ -z "${FLOWTAP_REINSTALL:-}" ] && [ -f "$stamp_file" ] && [ "$(sed -n 1p "$stamp_file")" = "$stamp" ]; then
    # the stamp's second line says whether the test extras went in too
    if [ "$with_test" -eq 0 ] || [ "$(sed -n 2p "$stamp_file")" = "test" ]; then
        up_to_date=1
    fi
fi
if [ "$up_to_date" -eq 1 ]; then
    # pip's build leaves no build/ tree for build_ext to compare with, so look at the modules themselves first
    # shellcheck disable=SC2012  # module names are ours and plain
    oldest_module=$(ls -tr dpi/*.so 2>/dev/null | head -n 1 || true)
    if [ -n "$oldest_module" ] && [ -z "$(find ext setup.py -type f -newer "$oldest_module" | head -n 1)" ]; then
        say "dependencies and compiled modules up to date ($mode build)"
    else
        step="rebuilding changed extensions (setup.py build_ext --inplace)"
        say "dependencies up to date; rebuilding changed extensions ($mode build)"
        PYTHONWARNINGS=ignore .venv/bin/python setup.py -q build_ext --inplace >&2
    fi
else
    rm -f "$stamp_file"
    # Cython bakes the directives (bounds checks or not) into the C it generates and regenerates only when
    # the .pyx is newer, so a switch between debug and release would keep the old C: drop what it generated.
    for pyx in ext/*.pyx; do
        [ -f "$pyx" ] && rm -f "${pyx%.pyx}.c"
    done
    step="installing build requirements (setuptools wheel Cython numpy)"
    say "pip install build requirements"
    pip install -q setuptools wheel "Cython>=3" numpy >&2
    step="building and installing flowtap (pip install -e '$target')"
    say "pip install --no-build-isolation -e '$target' ($mode build)"
    pip install -q --no-build-isolation -e "$target" >&2
    if [ "$with_test" -eq 1 ]; then
        printf '%s\ntest\n' "$stamp" >"$stamp_file"
    else
        printf '%s\n' "$stamp" >"$stamp_file"
    fi
fi

step="checking the build"
.venv/bin/python -c 'import dpi._reader, dpi._flowtable' ||
    die "the compiled modules do not import (see the build output above)"
say "done: dpi._reader and dpi._flowtable import from $(pwd)/dpi"
if [ -x .venv/bin/flowtap ]; then
    say "try: .venv/bin/flowtap replay samples/sample.pcap -o sample-flows.arrow"
fi
# live capture (issue 6): BCC, kernel headers, the venv's link to bcc; see probe/bpf_setup.sh
if [ "$with_test" -eq 1 ] || [ "$with_live" -eq 1 ]; then step="setting up live capture (probe/bpf_setup.sh)"; sh probe/bpf_setup.sh .venv; fi
[ "$with_test" -eq 1 ] && say "run the tests: .venv/bin/python -m pytest tests"
exit 0
