#!/usr/bin/env bash
# Entry point of the armstack images: the ROS 2 + armstack environment, a check of the servo
# adapter's latency timer where a servo port is given, then the command.
set -eo pipefail

# ROS first: the env file skips /opt/ros/jazzy when ROS_DISTRO is set, and the ros image sets
# it without sourcing anything. Then the venv and the built workspace.
# shellcheck source=/dev/null  # files of the image
source /opt/ros/jazzy/setup.bash
# shellcheck source=/dev/null
source /opt/armstack/.venv/armstack_env.sh

# ARMSTACK_SERVO_PORT (the driver's serial device) set: the FTDI latency timer must be 1 ms
# (docker/99-armstack-usb-latency.rules on the host). sysfs is read-only in an unprivileged
# container, so this can only warn; a privileged one sets it.
check_latency_timer() {
  local dev timer
  dev="$(basename "$(readlink -f "$ARMSTACK_SERVO_PORT")")"
  timer="/sys/bus/usb-serial/devices/$dev/latency_timer"
  [[ -r "$timer" ]] || return 0  # not an FTDI usb-serial device (or sysfs not visible)
  [[ "$(cat "$timer")" == 1 ]] && return 0
  if [[ -w "$timer" ]] && echo 1 > "$timer" 2>/dev/null; then
    echo "[armstack] set $timer to 1 ms"
  else
    echo "[armstack] warning: $timer is $(cat "$timer") ms, not 1: servo replies will be late;" \
      "install docker/99-armstack-usb-latency.rules on the host" >&2
  fi
}
if [[ -n "${ARMSTACK_SERVO_PORT:-}" ]]; then check_latency_timer; fi

exec "$@"
