#!/usr/bin/env bash
# The Debian packages of the FUSS stand-in's sound pool (surfbench/data/sound_pool.py): openttd-opensfx (71
# Freesound recordings) and minetest-data (108 Minetest Game clips). `make setup` runs this: where they are
# missing and this machine can install them (root, apt-get), it does; where it cannot, it says so and the
# stand-in is built from its smaller pool of the PyPI sources alone (its manifest records which pool made it).
# SOUND_PACKAGES=0 skips it.
set -uo pipefail
[ "${SOUND_PACKAGES:-1}" = 0 ] && exit 0
have() { [ -f /usr/share/games/openttd/baseset/opensfx/opensfx.cat ] && [ -d /usr/share/games/minetest/games/minetest_game ]; }
have && exit 0
pkgs="openttd-opensfx minetest-data"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
  log="${TMPDIR:-/tmp}/surfbench-sound-packages.log"
  echo "make setup: installing $pkgs (the FUSS stand-in's full sound pool; log: $log)"
  { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs ||
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $pkgs; }; } >"$log" 2>&1
fi
have || echo "make setup: $pkgs not installed (not root, no apt-get, or the install failed): Table 3's stand-in will" \
             "use its smaller PyPI-only sound pool (recorded in its manifest). To get the full pool:" \
             "apt-get install $pkgs" >&2
exit 0
