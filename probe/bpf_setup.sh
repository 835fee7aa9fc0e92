#!/bin/sh
# Set up live capture (flowtap capture / doctor): BCC, kernel headers as BCC looks for them, and the venv link
# to Debian's bcc Python package. Called by setup.sh with --live or --test; safe to run again (every step
# checks first and does nothing when already done).
#
#   sh probe/bpf_setup.sh [VENV]        VENV defaults to .venv (relative to the checkout)
#
# Steps:
#   1. apt: python3-bpfcc (BCC 0.26 on Debian 12, with libbpfcc and its clang/LLVM), linux-headers-ARCH (the
#      meta-package pulls the matching -common package), iproute2 and ethtool (veth tests), tcpdump and
#      tcpreplay (parity test and live benchmark).
#   2. /lib/modules/$(uname -r)/build and .../source: BCC compiles against these. A running kernel with no
#      headers package of its own (custom or cloud kernels) gets links to the newest installed Debian
#      linux-headers-*-ARCH / -common directories: the networking programs need only the stable UAPI headers
#      (linux/bpf.h, linux/pkt_cls.h, ...), which any recent kernel's headers provide. Existing links or
#      directories are never replaced.
#   3. VENV/lib/pythonX.Y/site-packages/flowtap-bcc.pth: one line that puts a directory holding only a link to
#      Debian's /usr/lib/python3/dist-packages/bcc on the venv's path (not the whole of dist-packages, whose
#      numpy/pyarrow builds would shadow the venv's).
# Environment: FLOWTAP_SKIP_APT=1 skips step 1. POSIX sh: a minimal Debian has dash and no bash.
set -eu

cd "$(dirname "$0")/.."
venv="${1:-.venv}"

say() { printf 'bpf_setup: %s\n' "$*" >&2; }
die() { printf 'bpf_setup: ERROR: %s\n' "$*" >&2; exit 1; }

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and no sudo: run as root"
    sudo="sudo"
fi

# --- 1. packages ---------------------------------------------------------------------------------------------
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
pkgs="python3-bpfcc linux-headers-$arch iproute2 ethtool tcpdump tcpreplay"
if [ "${FLOWTAP_SKIP_APT:-0}" != "0" ]; then
    say "FLOWTAP_SKIP_APT set: not checking $pkgs"
else
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: install BCC (python3 bindings) and kernel headers yourself, then rerun with FLOWTAP_SKIP_APT=1"
    missing=""
    for p in $pkgs; do
        [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || missing="$missing $p"
    done
    if [ -n "$missing" ]; then
        say "apt-get install$missing"
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q update >&2 || die "apt-get update failed"
        # shellcheck disable=SC2086  # the list is meant to split
        $sudo env DEBIAN_FRONTEND=noninteractive apt-get -q install -y --no-install-recommends $missing >&2 ||
            die "apt-get install failed for:$missing"
    else
        say "packages present: $pkgs"
    fi
fi

# --- 2. kernel headers where BCC looks ------------------------------------------------------------------------
kver=$(uname -r)
mod="/lib/modules/$kver"
newest() { # newest directory matching the pattern, by version sort; empty when none
    # shellcheck disable=SC2086
    ls -d $1 2>/dev/null | sort -V | tail -n 1
}
if [ -e "$mod/build/include/uapi/linux/bpf.h" ] || [ -e "$mod/build/include/linux/bpf.h" ] ||
   [ -e "$mod/source/include/uapi/linux/bpf.h" ]; then
    say "kernel headers for $kver found in $mod"
else
    hdr_arch=$(newest "/usr/src/linux-headers-*-$arch")
    [ -n "$hdr_arch" ] || die "no /usr/src/linux-headers-*-$arch: install linux-headers-$arch"
    hdr_common=$(newest "/usr/src/linux-headers-*-common")
    [ -n "$hdr_common" ] || die "no /usr/src/linux-headers-*-common: install linux-headers-$arch"
    $sudo mkdir -p "$mod"
    for pair in "build:$hdr_arch" "source:$hdr_common"; do
        name=${pair%%:*}
        target=${pair#*:}
        if [ -e "$mod/$name" ] || [ -L "$mod/$name" ]; then
            say "$mod/$name exists (left alone)"
        else
            $sudo ln -s "$target" "$mod/$name"
            say "linked $mod/$name -> $target (no headers package for $kver; UAPI headers suffice)"
        fi
    done
fi

# --- 3. bcc in the venv ------------------------------------------------------------------------------------
bcc_src=/usr/lib/python3/dist-packages/bcc
[ -d "$bcc_src" ] || die "$bcc_src missing (python3-bpfcc not installed?)"
if [ ! -x "$venv/bin/python" ]; then
    say "no venv at $venv: skipping the bcc link (run setup.sh first)"
    exit 0
fi
site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
shim="$(cd "$venv" && pwd)/bcc-dist"
mkdir -p "$shim"
[ -L "$shim/bcc" ] || ln -s "$bcc_src" "$shim/bcc"
printf '%s\n' "$shim" >"$site/flowtap-bcc.pth"
"$venv/bin/python" -c 'import bcc; print("bpf_setup: bcc", getattr(bcc, "__version__", "?"), "from", bcc.__file__)' >&2 ||
    die "bcc does not import in $venv"
exit 0
