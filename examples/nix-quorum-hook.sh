#!/bin/sh
# Nix's post-build-hook on a builder (/etc/nix/nix-quorum-hook.sh, mode 0755). It never fails a
# build: whatever happens it exits 0, and a problem is told loudly in the build log with the fix.
# Settings: the key /etc/nix-quorum/builder.secret and the spool /var/lib/nix-quorum/spool are the
# defaults for root; NIX_QUORUM_* variables set here override them, e.g. for a chroot store:
# export NIX_QUORUM_STORE=/srv/builder-store
PATH="$PATH:/usr/local/bin"
fail() {
  echo "nix-quorum hook: ERROR: the outputs of ${DRV_PATH:-<DRV_PATH>} were NOT attested: $1" >&2
  echo "nix-quorum hook: the build itself succeeded. Once fixed, attest these outputs with:" >&2
  echo "nix-quorum hook:   nix-quorum submit --upload \$(nix-store -q --outputs ${DRV_PATH:-<DRV_PATH>})" >&2
}
if ! command -v nix-quorum >/dev/null 2>&1; then
  fail "nix-quorum is not on PATH ($PATH): install it as the README says (npm install -g --prefix /usr/local)"
  exit 0
fi
nix-quorum hook || fail "nix-quorum hook exited with status $? (is Node.js >= 20.15 on PATH? try: nix-quorum --version)"
exit 0
