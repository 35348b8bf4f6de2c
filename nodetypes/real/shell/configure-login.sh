# configure-login.sh MAINTENANCE_HOSTNAME DEVICE MOUNTPOINT USER < KEYS
# On the card's root file system: USER's ~/.ssh/authorized_keys becomes KEYS (OpenSSH public
# keys, one a line; none: left as it is), owned by USER; SSH enabled at boot.
set -euo pipefail
require_maintenance "$1"
device=$2 mnt=$3 user=$4
keys=$(cat)
mount_root "$device" "$mnt"
trap 'release "$mnt"' EXIT
etc=$mnt/etc
entry=$(awk -F: -v name="$user" '$1 == name { print $3 ":" $4 ":" $6; exit }' "$etc/passwd")
[ -n "$entry" ] || die "user $user is not in the card's /etc/passwd"
IFS=: read -r uid gid home <<< "$entry"
case $home in
  /*) ;;
  *) die "user $user has no absolute home folder in the card's /etc/passwd" ;;
esac
if [ -n "$keys" ]; then
  install -d -m 700 -o "$uid" -g "$gid" "$mnt$home" "$mnt$home/.ssh"
  printf '%s\n' "$keys" > "$mnt$home/.ssh/authorized_keys"
  chown "$uid:$gid" "$mnt$home/.ssh/authorized_keys"
  chmod 600 "$mnt$home/.ssh/authorized_keys"
fi
wants=$etc/systemd/system/multi-user.target.wants
mkdir -p "$wants"
[ -e "$wants/ssh.service" ] || [ -L "$wants/ssh.service" ] || ln -s /lib/systemd/system/ssh.service "$wants/ssh.service"
