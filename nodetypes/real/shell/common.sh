# edgebed: functions shared by the scripts the real raspberry driver runs on a node (prepended to
# each of them by nodetypes/real/scripts.py). Every value comes in as a positional parameter,
# never spliced into the text.
# Not every script uses every function here:
# shellcheck disable=SC2034,SC2317
export LC_ALL=C
readonly MIB=1048576

# die MESSAGE: for scripts the agent waits for; the agent quotes the last line of stderr.
die() {
  printf '%s\n' "$1" >&2
  exit 1
}

# require_maintenance HOSTNAME: refuses to run anywhere but on the network-booted maintenance
# system, whose card is not in use (never on a deployed system, whose root is that card).
require_maintenance() {
  local here
  here=$(uname -n)
  [ "$here" = "$1" ] || die "this is $here, not the maintenance system $1: refusing to touch the card"
}

# part_dev DEVICE N: the device of partition N (/dev/mmcblk0p2, /dev/loop3p2, /dev/sda2).
part_dev() {
  case $1 in
    *[0-9]) printf '%sp%s\n' "$1" "$2" ;;
    *) printf '%s%s\n' "$1" "$2" ;;
  esac
}

# refresh_partitions DEVICE: makes the kernel's view of the card's partitions match its table
# (after a new image was written). partx, since loop devices may have no partition parser.
refresh_partitions() {
  partx -u "$1" 2>/dev/null || true
  partx -a "$1" 2>/dev/null || true
}

# wait_block PATH: waits up to 5 s for a partition's device node to appear.
wait_block() {
  local tries=50
  while [ ! -b "$1" ] && [ "$tries" -gt 0 ]; do
    sleep 0.1
    tries=$((tries - 1))
  done
  [ -b "$1" ]
}

# last_partition DEVICE: "NR START SECTORS" of the partition the table lists last (the root file
# system on Raspberry Pi OS and Ubuntu images).
last_partition() {
  partx -g -o NR,START,SECTORS "$1" 2>/dev/null | tail -n 1
}

# release MOUNTPOINT: unmounts it when something is mounted there (a step killed half-way).
release() {
  if mountpoint -q "$1" 2>/dev/null; then
    umount "$1"
  fi
}

# mount_root DEVICE MOUNTPOINT: mounts the card's root partition (the last one) read-write.
mount_root() {
  local nr root
  release "$2"
  refresh_partitions "$1"
  read -r nr _ < <(last_partition "$1") || true
  [ -n "${nr:-}" ] || die "$1 has no partition table"
  root=$(part_dev "$1" "$nr")
  wait_block "$root" || die "$root did not appear"
  mkdir -p "$2"
  mount -t ext4 "$root" "$2" || die "cannot mount $root (the root partition) as ext4"
}

# bytes_of FILE: the byte count of the last progress line `dd status=progress` wrote there.
bytes_of() {
  local count
  count=$(tail -c 400 "$1" 2>/dev/null | tr '\r' '\n' | grep -o '^[0-9][0-9]* bytes' | tail -n 1)
  printf '%s\n' "${count%% *}"
}
