# copy.sh URL COMPRESSION DEVICE SIZE (a job, see job-start.sh)
# Streams the image at URL (COMPRESSION: zst, xz, gz or raw), decompressing on the fly, onto
# DEVICE; then reads exactly SIZE bytes (the raw image's size) back from the card, past the page
# cache, and writes their sha256 to `result`. The agent compares it with the image's. Progress:
# write.progress, then verify.progress. Exit codes: 0 done, 2 bad arguments, 3 card too small,
# 4 download, 5 decompression, 6 write, 7 short write, 8 read back, 127 missing tool.
set -uo pipefail
url=$1 compression=$2 device=$3 size=$4

finish() {
  printf '%s\n' "$1" > rc.tmp
  mv rc.tmp rc
  exit "$1"
}

fail() {
  printf '%s\n' "$2" > error
  finish "$1"
}

case $compression in
  zst) decompress=(zstd -dc) ;;
  xz) decompress=(xz -dc) ;;
  gz) decompress=(gzip -dc) ;;
  raw) decompress=(cat) ;;
  *) fail 2 "unknown compression '$compression'" ;;
esac
for tool in curl dd sha256sum blockdev "${decompress[0]}"; do
  command -v "$tool" > /dev/null || fail 127 "$tool is not installed on the maintenance system"
done
[ -b "$device" ] || fail 2 "$device is not a block device"
card=$(blockdev --getsize64 "$device") || fail 2 "cannot read the size of $device"
[ "$card" -ge "$size" ] || fail 3 "the card $device holds $card bytes, the image $size"

# Direct writes keep the progress honest (no page cache filling up first); they need whole
# sectors, which every card image has.
direct=()
if [ $((size % 512)) -eq 0 ]; then
  direct=(oflag=direct)
fi
# No --retry: a retried transfer would write its start again into the same stream. A stalled
# download (under 1 KiB/s for a minute) fails, and the agent starts the job again.
curl -fsS --connect-timeout 20 --speed-limit 1024 --speed-time 60 -- "$url" 2> download.err \
  | "${decompress[@]}" 2> decompress.err \
  | dd of="$device" bs=4M iflag=fullblock "${direct[@]}" conv=fsync status=progress 2> write.progress
codes=("${PIPESTATUS[@]}")
[ "${codes[0]}" -eq 0 ] || fail 4 "download of $url failed (curl exit ${codes[0]}): $(tail -n 1 download.err)"
[ "${codes[1]}" -eq 0 ] || fail 5 "${decompress[0]} failed: $(tail -n 1 decompress.err)"
[ "${codes[2]}" -eq 0 ] || fail 6 "writing $device failed: $(tr '\r' '\n' < write.progress | grep -v '^[0-9]' | tail -n 1)"
written=$(bytes_of write.progress)
[ "${written:-0}" -eq "$size" ] || fail 7 "wrote ${written:-0} bytes to $device, the image has $size"

# Read the card, not what the kernel kept of the write.
blockdev --flushbufs "$device" 2> /dev/null || true
dd if="$device" bs=4M iflag=count_bytes count="$size" status=progress 2> verify.progress \
  | sha256sum > sha256.tmp
codes=("${PIPESTATUS[@]}")
[ "${codes[0]}" -eq 0 ] || fail 8 "reading $device back failed: $(tr '\r' '\n' < verify.progress | grep -v '^[0-9]' | tail -n 1)"
cut -d ' ' -f 1 sha256.tmp > result
finish 0
