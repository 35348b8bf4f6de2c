# job-status.sh DIR: the state of the job in DIR as key=value lines:
#   uptime=SECONDS_SINCE_BOOT  state=none|stale|running|finished|dead  id=  started=
#   started_uptime=  pid=  rc=  result=  error=
#   total=BYTES (the job's whole work, when it wrote a `total` file)
#   progress.STAGE=BYTES (one per STAGE.progress file)
# stale: the job ran in an earlier boot (its card may have changed since); dead: it stopped
# without an exit code (killed).
set -uo pipefail
dir=$1
# Durations come from the time since boot, never from the wall clock, which may step.
printf 'uptime=%s\n' "$(cut -d ' ' -f 1 /proc/uptime)"
if ! cd -- "$dir" 2>/dev/null || [ ! -s id ]; then
  echo state=none
  exit 0
fi
if [ "$(cat boot 2>/dev/null)" != "$(cat /proc/sys/kernel/random/boot_id)" ]; then
  echo state=stale
  exit 0
fi
printf 'id=%s\n' "$(head -n 1 id)"
printf 'started=%s\n' "$(cat started 2>/dev/null)"
printf 'started_uptime=%s\n' "$(cat started_uptime 2>/dev/null)"
pid=$(cat pid 2>/dev/null || true)
printf 'pid=%s\n' "$pid"
if [ -s rc ]; then
  echo state=finished
  printf 'rc=%s\n' "$(head -n 1 rc)"
elif [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && grep -qaF -- "$dir/job.sh" "/proc/$pid/cmdline" 2>/dev/null; then
  echo state=running
else
  echo state=dead
fi
if [ -s result ]; then
  printf 'result=%s\n' "$(head -n 1 result)"
fi
if [ -s total ]; then
  printf 'total=%s\n' "$(head -n 1 total)"
fi
if [ -s error ]; then
  printf 'error=%s\n' "$(head -c 600 error | tr '\n\r' '  ')"
fi
for file in ./*.progress; do
  [ -e "$file" ] || continue
  stage=${file#./}
  printf 'progress.%s=%s\n' "${stage%.progress}" "$(bytes_of "$file")"
done
exit 0
