# wipe.sh MODE DEVICE (a job, see job-start.sh)
# quick: the partition table and file-system signatures go: the first MiB of the card, of each
# partition its table named, and the last MiB (a GPT's backup) are zeroed, then wipefs removes
# any signature left. full: the whole card is zeroed first, with progress (zero.progress).
# Either way the zeroed MiBs are read back past the page cache, and no signature nor partition
# table may remain. Exit codes: 0 done, 2 bad arguments, 4 zeroing, 9 verification, 127 tool.
set -uo pipefail
mode=$1 device=$2

finish() {
  printf '%s\n' "$1" > rc.tmp
  mv rc.tmp rc
  exit "$1"
}

fail() {
  printf '%s\n' "$2" > error
  finish "$1"
}

for tool in dd wipefs partx blockdev cmp; do
  command -v "$tool" > /dev/null || fail 127 "$tool is not installed on the maintenance system"
done
case $mode in quick | full) ;; *) fail 2 "unknown wipe mode '$mode'" ;; esac
[ -b "$device" ] || fail 2 "$device is not a block device"
size=$(blockdev --getsize64 "$device") || fail 2 "cannot read the size of $device"
[ "$size" -ge $((2 * MIB)) ] || fail 2 "$device is only $size bytes"

# Where the table says partitions start (bytes), before the table goes.
offsets=(0 $((size - MIB)))
while read -r start; do
  if [ -n "$start" ] && [ $((start * 512 + MIB)) -le "$size" ]; then
    offsets+=($((start * 512)))
  fi
done < <(partx -g -o START "$device" 2> /dev/null)

# zero_mib OFFSET
zero_mib() {
  dd if=/dev/zero of="$device" bs=1M count=1 seek="$1" oflag=seek_bytes,direct conv=fsync,notrunc status=none
}

if [ "$mode" = full ]; then
  printf '%s\n' "$size" > total
  dd if=/dev/zero of="$device" bs=4M iflag=count_bytes count="$size" oflag=direct conv=fsync \
    status=progress 2> zero.progress || fail 4 "zeroing $device failed: $(tr '\r' '\n' < zero.progress | grep -v '^[0-9]' | tail -n 1)"
fi
for offset in "${offsets[@]}"; do
  zero_mib "$offset" || fail 4 "zeroing 1 MiB of $device at byte $offset failed"
done
wipefs -a -q "$device" || fail 4 "wipefs $device failed"
# The kernel forgets the partitions the card no longer has.
partx -d "$device" 2> /dev/null || true

blockdev --flushbufs "$device" 2> /dev/null || true
for offset in "${offsets[@]}"; do
  dd if="$device" bs=1M count=1 skip="$offset" iflag=skip_bytes,direct status=none \
    | cmp -s -n "$MIB" - /dev/zero || fail 9 "$device is not zero at byte $offset after the wipe"
done
left=$(wipefs --no-act --noheadings "$device" 2> /dev/null)
[ -z "$left" ] || fail 9 "signatures remain on $device: $left"
if partx -g "$device" > /dev/null 2>&1; then
  fail 9 "$device still holds a partition table"
fi
finish 0
