# read-back.sh MAINTENANCE_HOSTNAME DEVICE SIZE: prints the sha256 of the first SIZE bytes of
# DEVICE, read past the page cache.
set -euo pipefail
require_maintenance "$1"
device=$2 size=$3
[ -b "$device" ] || die "$device is not a block device"
blockdev --flushbufs "$device" 2> /dev/null || true
dd if="$device" bs=4M iflag=count_bytes count="$size" status=none | sha256sum | cut -d ' ' -f 1
