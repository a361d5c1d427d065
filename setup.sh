#!/usr/bin/env bash
# armstack one-command setup: takes a fresh x86_64 Debian/Ubuntu machine (Python 3.11 or
# 3.12) to a working stack, and is cheap to re-run (every step checks before it acts).
#
#   bash setup.sh                  # then: source .venv/armstack_env.sh
#
# The two ways of running armstack, chosen automatically:
#   - a system ROS 2 Jazzy is sourced (ROS_DISTRO=jazzy, AMENT_PREFIX_PATH from /opt/ros/jazzy):
#     the venv sees the system's site-packages and the ros-* wheels are not installed;
#   - otherwise (pip-only): the ROS 2 Jazzy wheels from PyPI provide rclpy, the message
#     packages and the build tools (ament_cmake, rosidl generators) for our interfaces.
# Either way ros2_ws is built with colcon against the venv's Python.
#
# Environment overrides: PYTHON (interpreter to build the venv from), ARMSTACK_VENV (venv path).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${ARMSTACK_VENV:-$REPO/.venv}"
WS="$REPO/ros2_ws"
ENV_FILE="$VENV/armstack_env.sh"
# Stamps live next to what they describe, so deleting the venv or install/ also drops them.
REQ_STAMP="$VENV/.armstack-requirements.sha256"
BUILD_STAMP="$WS/install/.armstack-build.sha256"

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- mode -----------------------------------------------------------------------------------
# A sourced system Jazzy brings its own rclpy and message packages, compiled for the system
# Python; installing the PyPI wheels on top would shadow them with a second copy.
SYSTEM_ROS=0
if [[ "${ROS_DISTRO:-}" == "jazzy" && -d /opt/ros/jazzy && "${AMENT_PREFIX_PATH:-}" == *"/opt/ros/jazzy"* ]]; then
  SYSTEM_ROS=1
fi

# --- Python interpreter ---------------------------------------------------------------------
# The Jazzy wheels exist for CPython 3.11 and 3.12 only; with a system ROS the interpreter
# must be the one its rclpy was compiled for (/usr/bin/python3).
python_ok() { "$1" -c 'import sys; sys.exit(sys.version_info[:2] not in ((3, 11), (3, 12)))' 2>/dev/null; }
pick_python() {
  local candidates=()
  if [[ -n "${PYTHON:-}" ]]; then candidates=("$PYTHON")
  elif (( SYSTEM_ROS )); then candidates=(/usr/bin/python3)
  else candidates=(python3 python3.12 python3.11)
  fi
  local c
  for c in "${candidates[@]}"; do
    if command -v "$c" >/dev/null 2>&1 && python_ok "$c"; then command -v "$c"; return; fi
  done
  die "need CPython 3.11 or 3.12 (tried: ${candidates[*]}); set PYTHON=/path/to/python3.x"
}
BASE_PY="$(pick_python)"
PY_VER="$("$BASE_PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
log "python: $BASE_PY ($PY_VER); mode: $( ((SYSTEM_ROS)) && echo 'system ROS 2 Jazzy' || echo 'pip-only (ROS 2 Jazzy wheels)')"

# --- system packages ------------------------------------------------------------------------
# Runtime: EGL + Mesa for MuJoCo's offscreen rendering without a GPU (MUJOCO_GL=egl), libusb for
# USB cameras/adapters, ffmpeg for LeRobot dataset video, iproute2 (ip netns) for network tests.
# Build: a C/C++ toolchain and CMake for the interface packages (rosidl generates C/C++ code),
# and the Python headers for their Python extension modules.
apt_wanted() {
  local pkgs=(libegl1 libegl-mesa0 libgl1-mesa-dri libusb-1.0-0 ffmpeg iproute2 g++ make cmake)
  # Headers come with pyenv/python.org builds; Debian's own interpreter needs its -dev package.
  if ! "$BASE_PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    pkgs+=("python${PY_VER}-dev")
  fi
  # Debian splits ensurepip (needed by `python -m venv`) into pythonX.Y-venv.
  if ! "$BASE_PY" -c 'import ensurepip' 2>/dev/null; then pkgs+=("python${PY_VER}-venv"); fi
  printf '%s\n' "${pkgs[@]}"
}
apt_missing() {
  local p
  for p in "$@"; do
    [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || echo "$p"
  done
}
install_system_packages() {
  if ! command -v dpkg-query >/dev/null 2>&1; then
    log "no dpkg: not a Debian system, skipping system packages (need: $(apt_wanted | tr '\n' ' '))"
    return
  fi
  local wanted missing
  mapfile -t wanted < <(apt_wanted)
  mapfile -t missing < <(apt_missing "${wanted[@]}")
  if (( ${#missing[@]} == 0 )); then log "system packages: all present"; return; fi
  if (( EUID != 0 )); then
    log "not root: skipping apt; install these yourself: ${missing[*]}"
    return
  fi
  log "apt-get install ${missing[*]}"
  # Update the package lists only when something must be installed: it is the slow part.
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
}
install_system_packages

# --- virtualenv -----------------------------------------------------------------------------
# A venv keeps the pinned stack away from the system Python. With a system ROS it must see the
# system site-packages (rclpy, message packages from /opt/ros/jazzy and apt's python3-*).
create_venv() {
  local want_ssp=false
  (( SYSTEM_ROS )) && want_ssp=true
  if [[ -x "$VENV/bin/python" ]]; then
    local have_ssp have_ver
    have_ssp="$(sed -n 's/^include-system-site-packages *= *//p' "$VENV/pyvenv.cfg" 2>/dev/null)"
    have_ver="$("$VENV/bin/python" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")' 2>/dev/null || true)"
    # A venv made for the other mode or another Python would mix incompatible binaries.
    if [[ "$have_ssp" == "$want_ssp" && "$have_ver" == "$PY_VER" ]]; then return; fi
    log "existing venv does not fit (system-site-packages=$have_ssp, python $have_ver): recreating"
    rm -rf "$VENV"
  fi
  log "creating venv $VENV"
  if [[ "$want_ssp" == true ]]; then
    "$BASE_PY" -m venv --system-site-packages "$VENV"
  else
    "$BASE_PY" -m venv "$VENV"
  fi
}
create_venv
VPY="$VENV/bin/python"

# --- pinned Python packages -----------------------------------------------------------------
# requirements.txt pins everything; re-installing is skipped while its hash (and the mode and
# Python) match the stamp from the last successful install, so a re-run costs no pip time.
# Training deps (torch) are for tools/ and the tests, not the runtime: a robot computer's image
# sets ARMSTACK_TRAINING=0 to leave them out.
WITH_TRAINING="${ARMSTACK_TRAINING:-1}"
install_requirements() {
  local req="$REPO/requirements.txt" train="$REPO/requirements-train.txt" stamp
  stamp="$( { cat "$req"; (( WITH_TRAINING )) && cat "$train"; echo "system_ros=$SYSTEM_ROS python=$PY_VER"; } | sha256sum | cut -d' ' -f1)"
  if [[ -f "$REQ_STAMP" && "$(cat "$REQ_STAMP")" == "$stamp" ]]; then
    log "python packages: up to date"
    return
  fi
  local effective="$VENV/.armstack-requirements.txt"
  if (( SYSTEM_ROS )); then
    # The ros-* wheels would duplicate the sourced system ROS.
    grep -vE '^[[:space:]]*ros-' "$req" > "$effective"
  else
    cp "$req" "$effective"
  fi
  log "pip install -r requirements.txt (first run: several minutes)"
  # -qq: errors only; pip's per-package notes and index warnings would bury the progress lines.
  "$VPY" -m pip install -qq --progress-bar off -r "$effective"
  if (( WITH_TRAINING )); then
    log "pip install -r requirements-train.txt (torch, CPU build)"
    # --no-deps: torch declares setuptools>=77, colcon needs the older pin of requirements.txt;
    # requirements-train.txt pins torch's own dependencies instead.
    "$VPY" -m pip install -qq --progress-bar off --no-deps -r "$train"
  fi
  echo "$stamp" > "$REQ_STAMP"
}
install_requirements

# --- CMake files of the wheels --------------------------------------------------------------
# The ROS wheels are built in a manylinux container, and the CMake target files they export
# (e.g. std_msgs' rosidl_generator_py target) name that container's Python include and
# site-packages dirs (/opt/python/cp311-cp311/...). CMake refuses imported targets whose include
# dirs do not exist, so building any interface package that depends on them fails. Point those
# paths at this venv's Python. Only the venv's own share/ and lib/cmake are touched (not
# site-packages, whose cmeel/pinocchio files are fine); once rewritten, nothing matches, so this
# is idempotent.
fix_wheel_cmake_paths() {
  (( SYSTEM_ROS )) && return
  local py_inc site
  py_inc="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
  site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  local dirs=("$VENV/share")
  [[ -d "$VENV/lib/cmake" ]] && dirs+=("$VENV/lib/cmake")
  local files
  mapfile -t files < <(grep -rlE --include='*.cmake' '/opt/python/cp3[0-9]+-cp3[0-9]+' "${dirs[@]}" 2>/dev/null || true)
  (( ${#files[@]} == 0 )) && return
  log "rewriting build-machine paths in ${#files[@]} wheel CMake files"
  sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${py_inc}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages#${site}#g" \
    "${files[@]}"
  if grep -lE '/opt/python/cp3' "${files[@]}" >/dev/null; then
    die "unknown /opt/python paths remain in: $(grep -lE '/opt/python/cp3' "${files[@]}" | tr '\n' ' ')"
  fi
}
fix_wheel_cmake_paths

# --- environment used by the build and written to the env file ------------------------------
# Libraries of the wheels live in the venv's lib/ and in site-packages/ros_*.libs; listing them
# here (as ros_wheels_bootstrapper would at every interpreter start) lets the env file mark the
# bootstrap done, which saves each Python process a re-exec.
wheel_lib_path() {
  local site
  site="$("$VPY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  local parts=("$VENV/lib") d
  for d in "$site"/ros_*.libs; do [[ -d "$d" ]] && parts+=("$d"); done
  local IFS=:
  echo "${parts[*]}"
}

build_env() {
  export PATH="$VENV/bin:$PATH"
  export VIRTUAL_ENV="$VENV"
  if (( ! SYSTEM_ROS )); then
    # The wheels install an ament prefix (share/ament_index, share/<pkg>/cmake) into the venv.
    export AMENT_PREFIX_PATH="$VENV"
    export CMAKE_PREFIX_PATH="$VENV"
    local libs
    libs="$(wheel_lib_path)"
    export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1
  fi
}

# --- colcon build of ros2_ws ----------------------------------------------------------------
# Packages in msgs_compat stand in for upstream ones that have no wheel. Where the real ones are
# importable from outside this workspace (a system ROS with ros-jazzy-vision-msgs etc.), build
# ours not: they would shadow the installed upstream packages.
compat_packages_to_skip() {
  "$VPY" -c '
import importlib.util, os, sys
ws = os.path.realpath(sys.argv[1]) + os.sep
sys.path = [p for p in sys.path if not os.path.realpath(p or os.curdir).startswith(ws)]
for name in ("vision_msgs", "tf2_msgs"):
    if importlib.util.find_spec(name) is not None:
        print(name)
' "$WS"
}

# Hash of everything that can change the build's result: the sources (names, sizes, mtimes;
# -L follows armstack_bringup's links to config/ and launch/, which it installs),
# the interpreter and installed requirements, and what is skipped. colcon is incremental, but
# even a no-op colcon run re-runs every package's build step (setup.py develop, make: ~1 s per
# package), so an unchanged hash skips it entirely. Python modules other than setup.py are left
# out: with --symlink-install the ament_python packages are used in place from src/, so editing
# or adding a module needs no build (package.xml, setup.py, setup.cfg, data files, .msg and new
# directories, e.g. a new Python package, do).
build_stamp() {
  {
    (cd "$WS/src" && find -L . \( -name __pycache__ -o -name '*.egg-info' -o -name .pytest_cache \) -prune \
      -o -type d -printf '%p/\n' \
      -o -type f \( ! -name '*.py' -o -name setup.py \) -printf '%p %s %T@\n' | LC_ALL=C sort)
    echo "python=$VPY skip=$*"
    cat "$REQ_STAMP" 2>/dev/null || true
  } | sha256sum | cut -d' ' -f1
}

build_workspace() {
  local skip
  mapfile -t skip < <(compat_packages_to_skip)
  local stamp
  stamp="$(build_stamp "${skip[@]}")"
  if [[ -f "$BUILD_STAMP" && -f "$WS/install/setup.bash" && "$(cat "$BUILD_STAMP")" == "$stamp" ]]; then
    log "ros2_ws: up to date"
    return
  fi
  local args=(build --symlink-install --base-paths src
    --cmake-args "-DPython3_EXECUTABLE=$VPY" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release)
  if (( ${#skip[@]} )); then
    log "using installed ${skip[*]}: not building ours"
    args+=(--packages-skip "${skip[@]}")
    # An earlier build of ours would still be sourced from install/ and shadow the real one.
    local p
    for p in "${skip[@]}"; do rm -rf "$WS/install/$p" "$WS/build/$p"; done
  fi
  log "colcon build in ros2_ws (first run: a few minutes)"
  (cd "$WS" && colcon "${args[@]}")
  echo "$stamp" > "$BUILD_STAMP"
}

# --- env file -------------------------------------------------------------------------------
# One file a shell sources to get the whole environment: the system ROS (if any), the venv, the
# wheels' ament prefix and libraries, the built workspace, and armstack's runtime settings.
write_env_file() {
  local tmp="$ENV_FILE.tmp"
  {
    echo "# Generated by setup.sh; re-run setup.sh instead of editing. Usage: source ${ENV_FILE}"
    echo "_armstack_u=\"\$-\"; set +u  # venv and colcon scripts read unset variables"
    if (( SYSTEM_ROS )); then
      echo "[[ \"\${ROS_DISTRO:-}\" == jazzy ]] || source /opt/ros/jazzy/setup.bash"
    fi
    echo "source '$VENV/bin/activate'"
    if (( ! SYSTEM_ROS )); then
      echo "case \":\${AMENT_PREFIX_PATH:-}:\" in *:'$VENV':*) ;; *) export AMENT_PREFIX_PATH='$VENV'\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH} ;; esac"
      echo "case \":\${CMAKE_PREFIX_PATH:-}:\" in *:'$VENV':*) ;; *) export CMAKE_PREFIX_PATH='$VENV'\${CMAKE_PREFIX_PATH:+:\$CMAKE_PREFIX_PATH} ;; esac"
      echo "case \":\${LD_LIBRARY_PATH:-}:\" in *:'$VENV/lib':*) ;; *) export LD_LIBRARY_PATH='$(wheel_lib_path)'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH} ;; esac"
      echo "# The library path above is what ros_wheels_bootstrapper would set by re-executing Python."
      echo "export _ROS_WHEELS_BOOTSTRAP_COMPLETE=1"
    fi
    echo "source '$WS/install/setup.bash'"
    echo "# Offscreen rendering without a GPU; the DDS implementation the wheels ship."
    echo "export MUJOCO_GL=egl"
    echo "export RMW_IMPLEMENTATION=rmw_fastrtps_cpp"
    echo "[[ \"\$_armstack_u\" == *u* ]] && set -u; unset _armstack_u"
  } > "$tmp"
  mv "$tmp" "$ENV_FILE"
}

build_env
build_workspace
write_env_file
log "done. Use it with: source ${ENV_FILE#"$PWD"/}"
