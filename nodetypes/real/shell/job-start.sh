# job-start.sh DIR JOB_ID MAINTENANCE_HOSTNAME [ARGS...] < job script
# Starts a job detached from the SSH session (its own session, so no hangup reaches it) in DIR,
# stopping any job still running there first. DIR then holds: job.sh (the script, from stdin),
# id (JOB_ID), boot (the boot it ran in), started (epoch s: a stamp, which tells two runs apart),
# started_uptime (seconds since boot, from /proc/uptime: what the job's elapsed time is measured
# from, since a Pi without a clock battery steps its wall clock when NTP first answers), pid; the
# job writes rc (its exit code, once over), error (why it failed), result, total (bytes of work,
# when known) and *.progress (dd's progress lines).
set -euo pipefail
dir=$1 id=$2
require_maintenance "$3"
shift 3
mkdir -p -- "$dir"
cd -- "$dir"
if [ -s pid ]; then
  old=$(cat pid)
  if kill -0 "$old" 2>/dev/null && grep -qaF -- "$dir/job.sh" "/proc/$old/cmdline" 2>/dev/null; then
    kill -TERM -- "-$old" 2>/dev/null || true
    for _ in $(seq 50); do
      kill -0 "$old" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$old" 2>/dev/null || true
  fi
fi
rm -f -- id pid rc rc.tmp error result total boot started started_uptime log job.sh ./*.progress ./*.err ./*.tmp
cat > job.sh
cat /proc/sys/kernel/random/boot_id > boot
date +%s > started
cut -d ' ' -f 1 /proc/uptime > started_uptime
printf '%s\n' "$id" > id
setsid bash "$dir/job.sh" "$@" < /dev/null > log 2>&1 &
printf '%s\n' "$!" > pid
