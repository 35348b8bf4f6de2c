"""The scripts the real raspberry driver runs on a Pi's maintenance system, run here with bash
against loop-device cards (this machine plays the maintenance system), images served by
http.server, and curl, zstd, xz, dd, sfdisk, e2fsprogs as a Pi has them."""

from __future__ import annotations

import hashlib
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from edgebed.nodetypes.real.jobs import FINISHED, RUNNING, JobStatus, parse_status
from edgebed.nodetypes.real.passwords import sha512_crypt
from edgebed.nodetypes.real.scripts import NAMES, script, source
from tests.agent.real.peers import MIB, build_image, http_server, loop_card, require

pytestmark = pytest.mark.slow

HERE = socket.gethostname()
TOOLS = ("root", "losetup", "partx", "sfdisk", "mkfs.ext4", "e2fsck", "resize2fs", "curl", "zstd",
         "xz", "wipefs", "chpasswd", "setsid")


def run(name: str, *args: str, input: str = "", check: bool = True) -> subprocess.CompletedProcess:
    """Runs shell/<name>.sh as the driver does (bash -c TEXT NAME ARGS...)."""
    done = subprocess.run(["bash", "-c", script(name), f"edgebed-{name}", *args], input=input,
                          capture_output=True, text=True, timeout=300, check=False)
    if check and done.returncode != 0:
        raise AssertionError(f"{name} exited {done.returncode}: {done.stderr}")
    return done


def start_job(folder: Path, job: str, job_id: str, *args: str) -> None:
    run("job-start", str(folder), job_id, HERE, *args, input=script(job))


def status(folder: Path) -> JobStatus:
    return parse_status(run("job-status", str(folder)).stdout)


def wait_job(folder: Path, timeout: float = 120) -> JobStatus:
    deadline = time.monotonic() + timeout
    while True:
        current = status(folder)
        if current.state != RUNNING:
            return current
        assert time.monotonic() < deadline, f"job in {folder} still running"
        time.sleep(0.1)


def sha256_of(path: str, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        left = size
        while left:
            chunk = handle.read(min(MIB, left))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
    return digest.hexdigest()


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """The test image raw, as .zst and as .xz, served over HTTP."""
    require(*TOOLS)
    folder = tmp_path_factory.mktemp("images")
    raw = build_image(folder / "pi.img")
    subprocess.run(["zstd", "-q", "-T1", str(raw), "-o", f"{raw}.zst"], check=True)
    subprocess.run(["xz", "-q", "-k", "-T1", "-0", str(raw)], check=True)
    with http_server(folder) as url:
        yield folder, url


@pytest.fixture
def card(tmp_path):
    require(*TOOLS)
    with loop_card(tmp_path / "card.img", 64) as device:
        yield device


def test_the_scripts_pass_shellcheck(tmp_path) -> None:
    require("shellcheck")
    for name in NAMES:
        path = tmp_path / f"{name}.sh"
        path.write_text(source(name))
        done = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, f"{name}:\n{done.stdout}"


@pytest.mark.parametrize("suffix,compression", [("", "raw"), (".zst", "zst"), (".xz", "xz")])
def test_a_copy_job_writes_the_image_and_reports_the_cards_checksum(
    tmp_path, images, card, suffix, compression
) -> None:
    folder, url = images
    raw = folder / "pi.img"
    size = raw.stat().st_size
    job = tmp_path / "work" / "copy"
    start_job(job, "copy", "copy pi.img", f"{url}/pi.img{suffix}", compression, card, str(size))
    done = wait_job(job)
    assert done.state == FINISHED and done.exit_code == 0, done.error
    assert done.job_id == "copy pi.img"
    assert done.result == sha256_of(str(raw), size) == sha256_of(card, size)
    assert done.progress == {"write": size, "verify": size}
    # The job's files: the id, its boot, the pid, the exit code, when it started.
    assert {"job.sh", "id", "boot", "pid", "rc", "started", "started_uptime", "result"} <= {
        p.name for p in job.iterdir()}
    # Timed from the boot (/proc/uptime), not the wall clock.
    assert done.elapsed is not None and 0 <= done.elapsed < 300


def test_a_failed_download_is_an_exit_code_and_a_line_saying_why(tmp_path, images, card) -> None:
    folder, url = images
    job = tmp_path / "copy"
    start_job(job, "copy", "copy x", f"{url}/absent.img.zst", "zst", card, str(MIB))
    done = wait_job(job)
    assert (done.state, done.exit_code) == (FINISHED, 4)
    assert "download of" in done.error and "absent.img.zst" in done.error and "404" in done.error


def test_a_card_too_small_is_refused_before_writing(tmp_path, images, card) -> None:
    folder, url = images
    job = tmp_path / "copy"
    start_job(job, "copy", "copy big", f"{url}/pi.img", "raw", card, str(128 * MIB))
    done = wait_job(job)
    assert done.exit_code == 3 and "holds 67108864 bytes, the image 134217728" in done.error


def test_a_new_job_stops_the_one_running_in_its_folder(tmp_path, card) -> None:
    """A job whose download never ends (a server that accepts and stays silent) is replaced."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/stuck.img"
        job = tmp_path / "copy"
        start_job(job, "copy", "copy stuck", url, "raw", card, str(MIB))
        time.sleep(0.3)
        first = status(job)
        assert first.state == RUNNING and first.job_id == "copy stuck"
        old_pid = int((job / "pid").read_text())
        start_job(job, "copy", "copy again", url, "raw", card, str(MIB))
        assert not Path(f"/proc/{old_pid}").exists() or b"copy" not in Path(f"/proc/{old_pid}/cmdline").read_bytes()
        second = status(job)
        assert second.state == RUNNING and second.job_id == "copy again"
        os.killpg(int((job / "pid").read_text()), 15)
        time.sleep(0.3)
        assert status(job).state == "dead"


def test_no_job_and_a_job_of_another_boot(tmp_path) -> None:
    assert status(tmp_path / "nothing").state == "none"
    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "id").write_text("copy x\n")
    (folder / "boot").write_text("00000000-0000-0000-0000-000000000000\n")
    (folder / "rc").write_text("0\n")
    assert status(folder).state == "stale"


def test_the_scripts_refuse_to_run_anywhere_but_on_the_maintenance_system(tmp_path, card) -> None:
    done = run("partition", "nfspi-elsewhere", card, "full", str(tmp_path / "m"), check=False)
    assert done.returncode == 1
    assert f"this is {HERE}, not the maintenance system nfspi-elsewhere" in done.stderr
    done = run("job-start", str(tmp_path / "j"), "wipe", "nfspi-elsewhere", "quick", card,
               input=script("wipe"), check=False)
    assert done.returncode == 1 and not (tmp_path / "j").exists()


def _write_image(images, card: str) -> int:
    folder, _ = images
    raw = folder / "pi.img"
    subprocess.run(["dd", f"if={raw}", f"of={card}", "bs=1M", "conv=fsync", "status=none"], check=True)
    return raw.stat().st_size


def _table(card: str) -> list[list[int]]:
    out = subprocess.run(["partx", "-g", "-o", "NR,START,SECTORS", card], capture_output=True,
                         text=True, check=False).stdout
    return [[int(word) for word in line.split()] for line in out.splitlines()]


@pytest.mark.parametrize("mode", ["quick", "full"])
def test_a_wipe_leaves_no_table_no_signature_and_zeroes_at_both_ends(tmp_path, images, card, mode) -> None:
    _write_image(images, card)
    with open(card, "r+b") as handle:  # something at the end of the card, as a GPT's backup
        handle.seek(64 * MIB - 512)
        handle.write(b"EFI PART" * 64)
    assert len(_table(card)) == 2
    job = tmp_path / "wipe"
    start_job(job, "wipe", f"wipe {mode}", mode, card)
    done = wait_job(job)
    assert (done.state, done.exit_code) == (FINISHED, 0), done.error
    assert _table(card) == []
    assert subprocess.run(["wipefs", "--no-act", "--noheadings", card], capture_output=True,
                          text=True).stdout == ""
    with open(card, "rb") as handle:
        head = handle.read(MIB)
        handle.seek(8 * MIB)  # where p2's ext4 superblock was
        root = handle.read(MIB)
        handle.seek(63 * MIB)
        tail = handle.read(MIB)
        handle.seek(0)
        everything = handle.read()
    assert head == root == tail == bytes(MIB)
    if mode == "full":
        assert everything == bytes(64 * MIB) and done.progress == {"zero": 64 * MIB}
        assert done.total == 64 * MIB
    else:
        # Quick leaves the rest: the image's files are still in the middle of the card.
        assert everything != bytes(64 * MIB)


def test_partition_grows_the_root_partition_and_file_system_once(tmp_path, images, card) -> None:
    _write_image(images, card)
    mount = str(tmp_path / "root")
    run("partition", HERE, card, str(40 * MIB), mount)
    (_, _, _), (nr, start, sectors) = _table(card)
    assert (nr, start, sectors * 512) == (2, 16384, 40 * MIB)
    run("partition", HERE, card, "full", mount)
    (_, _, _), (_, start, sectors) = _table(card)
    assert start + sectors == 64 * MIB // 512
    # The file system grew with it.
    info = subprocess.run(["dumpe2fs", "-h", f"{card}p2"], capture_output=True, text=True).stdout
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    blocks, size = int(fields["Block count"]), int(fields["Block size"])
    assert blocks * size == sectors * 512
    # Again, or smaller: nothing changes; too large: refused, saying how much room there is.
    run("partition", HERE, card, "full", mount)
    run("partition", HERE, card, str(16 * MIB), mount)
    assert _table(card)[1][2] == sectors
    done = run("partition", HERE, card, str(64 * MIB), mount, check=False)
    assert done.returncode == 1 and "the card has room for 58720256 bytes" in done.stderr


def test_configure_sets_host_name_password_keys_and_ssh(tmp_path, images, card) -> None:
    _write_image(images, card)
    mount = tmp_path / "root"
    agent_key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAgentKeyAgentKeyAgentKeyAgentKeyAgentKey agent"
    password_hash = sha512_crypt("a good password")
    # The image's own host key (every card written from it would share it) and Raspberry Pi
    # OS's first-boot regeneration of host keys.
    mount.mkdir()
    subprocess.run(["partx", "-u", card], capture_output=True, check=False)
    subprocess.run(["partx", "-a", card], capture_output=True, check=False)
    subprocess.run(["mount", "-t", "ext4", f"{card}p2", str(mount)], check=True)
    try:
        (mount / "etc/ssh").mkdir(parents=True, exist_ok=True)
        (mount / "etc/ssh/ssh_host_rsa_key").write_text("the image's key\n")
        (mount / "etc/ssh/ssh_host_rsa_key.pub").write_text("ssh-rsa AAAA image\n")
        wants = mount / "etc/systemd/system/multi-user.target.wants"
        wants.mkdir(parents=True, exist_ok=True)
        (wants / "regenerate_ssh_host_keys.service").symlink_to("/lib/systemd/system/regenerate_ssh_host_keys.service")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    first = run("configure-host", HERE, card, str(mount), "exp-pi-7", agent_key, "", input=password_hash).stdout
    second = run("configure-host", HERE, card, str(mount), "exp-pi-7", agent_key, "", input=password_hash).stdout
    # Its output is the card's new host key, one line, new at every run.
    assert first.startswith("ssh-ed25519 ") and first.count("\n") == 1 and first != second
    user_keys = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIUserKeyOne user@a\n"
                 "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQUserKeyTwo user@b")
    run("configure-login", HERE, card, str(mount), "pi", input=user_keys)
    assert not os.path.ismount(mount)
    # Read the card as the Pi will: mounted, then left as it was.
    subprocess.run(["mount", "-t", "ext4", f"{card}p2", str(mount)], check=True)
    try:
        etc = mount / "etc"
        assert (etc / "hostname").read_text() == "exp-pi-7\n"
        assert "127.0.1.1\texp-pi-7\n" in (etc / "hosts").read_text()
        assert "raspberrypi" not in (etc / "hosts").read_text()
        shadow = {line.split(":")[0]: line.split(":")[1] for line in (etc / "shadow").read_text().splitlines()}
        assert shadow["pi"] == password_hash and shadow["root"] == "*"
        assert (mount / "root/.ssh/authorized_keys").read_text() == agent_key + "\n"
        keys = mount / "home/pi/.ssh/authorized_keys"
        assert keys.read_text() == user_keys + "\n"
        assert (keys.stat().st_uid, keys.stat().st_gid, keys.stat().st_mode & 0o777) == (1000, 1000, 0o600)
        unit = etc / "systemd/system/multi-user.target.wants/ssh.service"
        assert os.readlink(unit) == "/lib/systemd/system/ssh.service"
        assert sorted(p.name for p in (etc / "ssh").glob("ssh_host_*")) == [
            "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
        assert (etc / "ssh/ssh_host_ed25519_key.pub").read_text() == second
        assert (etc / "ssh/ssh_host_ed25519_key").stat().st_mode & 0o777 == 0o600
        assert not os.path.lexists(etc / "systemd/system/multi-user.target.wants/regenerate_ssh_host_keys.service")
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    done = run("configure-login", HERE, card, str(mount), "nobody-here", input="", check=False)
    assert done.returncode == 1 and "user nobody-here is not in the card's /etc/passwd" in done.stderr
    assert not os.path.ismount(mount)
