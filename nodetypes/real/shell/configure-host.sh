# configure-host.sh MAINTENANCE_HOSTNAME DEVICE MOUNTPOINT HOSTNAME AGENT_KEY USER < PASSWORD_HASH
# On the card's root file system: the host name (/etc/hostname, 127.0.1.1 in /etc/hosts), the
# agent's public key in root's authorized_keys (the agent logs in to the deployed system), SSH
# enabled at boot, and, when stdin holds a crypt hash, that hash as USER's password (chpasswd -e
# in the card's root: the password itself never reaches the node). USER "" means the image's
# default user, the one with uid 1000.
# And the card's SSH host key: a new ed25519 key generated here (the image's own keys, the same
# on every card written from it, are removed, and so are first-boot services that would replace
# them), whose public line is this script's only output: the agent pins it for the node.
set -euo pipefail
require_maintenance "$1"
device=$2 mnt=$3 hostname=$4 agent_key=$5 user=$6
password_hash=$(cat)
mount_root "$device" "$mnt"
trap 'release "$mnt"' EXIT
etc=$mnt/etc
[ -f "$etc/passwd" ] || die "the card's root file system has no /etc/passwd"

printf '%s\n' "$hostname" > "$etc/hostname"
if [ -f "$etc/hosts" ] && grep -q '^127\.0\.1\.1[[:space:]]' "$etc/hosts"; then
  awk -v name="$hostname" '/^127\.0\.1\.1[ \t]/ { print "127.0.1.1\t" name; next } { print }' \
    "$etc/hosts" > "$etc/hosts.edgebed"
  cat "$etc/hosts.edgebed" > "$etc/hosts"
  rm -f "$etc/hosts.edgebed"
else
  printf '127.0.1.1\t%s\n' "$hostname" >> "$etc/hosts"
fi

install -d -m 700 -o 0 -g 0 "$mnt/root/.ssh"
keys=$mnt/root/.ssh/authorized_keys
touch "$keys"
grep -qxF -- "$agent_key" "$keys" || printf '%s\n' "$agent_key" >> "$keys"
chmod 600 "$keys"

wants=$etc/systemd/system/multi-user.target.wants
mkdir -p "$wants"
[ -e "$wants/ssh.service" ] || [ -L "$wants/ssh.service" ] || ln -s /lib/systemd/system/ssh.service "$wants/ssh.service"

command -v ssh-keygen >/dev/null || die "ssh-keygen is missing on the maintenance system (install openssh-client)"
install -d -m 755 "$etc/ssh"
rm -f "$etc"/ssh/ssh_host_*_key "$etc"/ssh/ssh_host_*_key.pub "$etc"/ssh/ssh_host_*_key-cert.pub
ssh-keygen -q -t ed25519 -N '' -C "root@$hostname" -f "$etc/ssh/ssh_host_ed25519_key" </dev/null \
  || die "ssh-keygen could not make the card's host key"
chmod 600 "$etc/ssh/ssh_host_ed25519_key"
# Raspberry Pi OS regenerates the host keys at its first boot; cloud-init (Ubuntu) deletes them.
rm -f "$wants/regenerate_ssh_host_keys.service"
if [ -d "$etc/cloud/cloud.cfg.d" ]; then
  printf 'ssh_deletekeys: false\nssh_genkeytypes: []\n' > "$etc/cloud/cloud.cfg.d/99-edgebed-host-keys.cfg"
fi

if [ -n "$password_hash" ]; then
  if [ -z "$user" ]; then
    user=$(awk -F: '$3 == 1000 { print $1; exit }' "$etc/passwd")
    [ -n "$user" ] || die "the card has no default user (uid 1000) to set the password of"
  fi
  awk -F: -v name="$user" '$1 == name { found = 1 } END { exit !found }' "$etc/passwd" \
    || die "user $user is not in the card's /etc/passwd"
  printf '%s:%s\n' "$user" "$password_hash" | chpasswd -e -R "$mnt" \
    || die "chpasswd could not set the password of $user"
fi
cat "$etc/ssh/ssh_host_ed25519_key.pub"
