# partition.sh MAINTENANCE_HOSTNAME DEVICE SIZE MOUNTPOINT
# Grows the card's root partition (its last one) and its ext4 file system: SIZE is "full" (up to
# the end of the card) or bytes. Never shrinks: a partition already that large is left as it is,
# so running it again changes nothing.
set -euo pipefail
require_maintenance "$1"
device=$2 want=$3 mnt=$4
for tool in partx sfdisk e2fsck resize2fs blockdev; do
  command -v "$tool" > /dev/null || die "$tool is not installed on the maintenance system"
done
[ -b "$device" ] || die "$device is not a block device"
release "$mnt"
refresh_partitions "$device"
read -r nr start sectors < <(last_partition "$device") || true
[ -n "${nr:-}" ] || die "$device has no partition table"
root=$(part_dev "$device" "$nr")
card=$(($(blockdev --getsize64 "$device") / 512))
if [ "$want" = full ]; then
  target=$((card - start))
else
  target=$((want / 512))
  [ $((start + target)) -le "$card" ] \
    || die "the card has room for $(((card - start) * 512)) bytes from the root partition's start, not $want"
fi
# Less than 1 MiB to gain is alignment slack, not room.
if [ $((target - sectors)) -ge 2048 ]; then
  if [ "$want" = full ]; then
    echo ', +' | sfdisk --no-reread --no-tell-kernel -q -N "$nr" "$device"
  else
    echo ", $target" | sfdisk --no-reread --no-tell-kernel -q -N "$nr" "$device"
  fi
  partx -u "$device"
fi
wait_block "$root" || die "$root did not appear"
# e2fsck -p: 1 and 2 mean errors it corrected; resize2fs wants a freshly checked file system.
code=0
e2fsck -f -p "$root" > /dev/null || code=$?
[ "$code" -le 2 ] || die "e2fsck found errors it could not correct on $root (exit $code)"
resize2fs "$root" > /dev/null 2>&1 || die "resize2fs $root failed"
