"""The real raspberry driver's SSH side against a real sshd on loopback (in a UTS namespace whose
host name is the maintenance system's), with loop-device cards and http.server: which system
answers, a copy job that outlives its SSH session, one job per image, a failed copy reported once
and then started again, and a password that only ever travels as a hash on stdin."""

from __future__ import annotations

import asyncio
import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from edgebed.nodetypes.base import DriverError, Environment, NodeRef
from edgebed.nodetypes.interfaces import INSTALLED, MAINTENANCE, HostConfig
from edgebed.nodetypes.real.card import CardImage
from edgebed.nodetypes.real.images import ImageCatalog
from edgebed.nodetypes.real.jobs import NodeJobs
from edgebed.nodetypes.real.ssh import (
    HostKeyRefused,
    HostKeys,
    Refused,
    SshPool,
    load_key,
    load_known_hosts,
    parse_public_keys,
)
from edgebed.nodetypes.real.system import PiSetup, PiSystem
from tests.agent.real.peers import build_image, free_port, http_server, loop_card, make_key, require, ssh_server

pytestmark = pytest.mark.slow

MAINTENANCE_NAME = "nfspi-test"
TOOLS = ("root", "sshd", "unshare", "losetup", "partx", "sfdisk", "mkfs.ext4", "curl", "zstd", "chpasswd")


class Recording(SshPool):
    """The driver's own pool, keeping every command line it sends (to look for secrets)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.lines: list[str] = []

    async def run(self, node, line, **kwargs):  # type: ignore[no-untyped-def]
        self.lines.append(line)
        return await super().run(node, line, **kwargs)


class Saved:
    def __init__(self) -> None:
        self.values: dict[str, str] = {}

    async def load(self, key: str) -> str | None:
        return self.values.get(key)

    async def save(self, key: str, value: str) -> None:
        self.values[key] = value


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    require(*TOOLS)
    folder = tmp_path_factory.mktemp("keys")
    return make_key(folder, "agent"), make_key(folder, "stranger")


@pytest.fixture(scope="module")
def maintenance(tmp_path_factory, keys):
    agent, _ = keys
    with ssh_server(tmp_path_factory.mktemp("sshd"), MAINTENANCE_NAME, agent.public) as server:
        yield server


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    require(*TOOLS)
    folder = tmp_path_factory.mktemp("images")
    raw = build_image(folder / "pi.img")
    subprocess.run(["zstd", "-q", "-T1", str(raw), "-o", f"{raw}.zst"], check=True)
    with http_server(folder) as url:
        yield folder, url


@pytest.fixture
def card(tmp_path):
    require(*TOOLS)
    with loop_card(tmp_path / "card.img", 64) as device:
        yield device


def host_keys(known: Path, saved: Saved | None = None) -> HostKeys:
    saved = saved or Saved()
    return HostKeys(load_known_hosts(str(known)), load_state=saved.load, save_state=saved.save)


def pool(keys, server, cls=SshPool, which: int = 0, known: Path | None = None,  # type: ignore[no-untyped-def]
         saved: Saved | None = None):
    """The driver's pool logging in with keys[which], trusting `known` (default: the server's
    own host key) as the maintenance system's."""
    return cls(load_key(str(keys[which].private)), host_keys(known or server.host_key, saved),
               port=server.port, connect_timeout=5)


def pi(card: str = "/dev/null", serial: str = "0000abcd") -> NodeRef:
    return NodeRef("rpi-t", {"ip": "127.0.0.1", "serial": serial, "sd_device": card})


async def test_which_system_answers(tmp_path, keys, maintenance) -> None:
    ssh = pool(keys, maintenance)
    try:
        assert await PiSystem(ssh, MAINTENANCE_NAME).running_system(pi()) == MAINTENANCE
        # The same server for a driver whose maintenance system has another name: a card system.
        assert await PiSystem(ssh, "nfspi").running_system(pi()) == INSTALLED
    finally:
        await ssh.close()
    # A server that does not take the agent's key is an error saying so; none at all is silence.
    stranger = pool(keys, maintenance, which=1)
    try:
        with pytest.raises(Refused, match="refused the agent's key"):
            await PiSystem(stranger, MAINTENANCE_NAME).running_system(pi())
    finally:
        await stranger.close()
    closed = SshPool(load_key(str(keys[0].private)), host_keys(maintenance.host_key), port=free_port(),
                     connect_timeout=2)
    try:
        assert await PiSystem(closed, MAINTENANCE_NAME).running_system(pi()) is None
    finally:
        await closed.close()


async def test_a_server_with_another_host_key_is_refused_before_any_login(tmp_path, keys, maintenance) -> None:
    """The maintenance system's key comes from the configuration; a server showing another
    (here: the maintenance sshd, for a driver that knows another key) is refused in the
    handshake, saying which keys were expected; the agent's key was not offered."""
    other = tmp_path / "other.pub"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "other")], check=True)
    other.write_text((tmp_path / "other.pub").read_text())
    expected = load_known_hosts(str(other))[0].get_fingerprint("sha256")
    log_before = maintenance.log.read_text()
    ssh = pool(keys, maintenance, known=other)
    try:
        with pytest.raises(HostKeyRefused, match="the host key is not the maintenance system's") as refused:
            await PiSystem(ssh, MAINTENANCE_NAME).running_system(pi())
    finally:
        await ssh.close()
    message = str(refused.value)
    assert expected in message and "no deployed key" in message
    await asyncio.sleep(0.2)  # sshd's log lines of that connection
    assert "Accepted" not in maintenance.log.read_text()[len(log_before):]
    # A card key pinned for the node is trusted as well (the card system the agent deployed).
    saved = Saved()
    pinned = pool(keys, maintenance, known=other, saved=saved)
    try:
        [card] = parse_public_keys(maintenance.host_key.read_text())
        await pinned.host_keys.pin(pi(), card)
        assert saved.values == {"hostkey.0000abcd": card.export_public_key("openssh").decode().strip()}
        assert await PiSystem(pinned, "nfspi").running_system(pi()) == INSTALLED
    finally:
        await pinned.close()


async def _until_done(image: CardImage, node: NodeRef, environment: Environment, within: float = 120):
    deadline = time.monotonic() + within
    statuses = []
    while True:
        status = await image.write_status(node, environment)
        statuses.append(status)
        if status.done:
            return statuses
        if not status.running:
            await image.start_write(node, environment, {})
        assert time.monotonic() < deadline, statuses[-5:]
        await asyncio.sleep(0.05)


async def test_a_copy_outlives_its_ssh_session_and_is_started_once(
    tmp_path, keys, maintenance, images, card
) -> None:
    folder, url = images
    saved = Saved()
    node, environment = pi(card), Environment("pi", image="pi.img.zst")

    def driver(ssh: SshPool) -> CardImage:
        catalog = ImageCatalog(str(folder), url, load_state=saved.load, save_state=saved.save)
        jobs = NodeJobs(ssh, str(tmp_path / "work"), MAINTENANCE_NAME)
        return CardImage(ssh, jobs, catalog, wipe_mode="quick", maintenance_hostname=MAINTENANCE_NAME)

    first = pool(keys, maintenance)
    await driver(first).start_write(node, environment, {})
    started = (tmp_path / "work" / "0000abcd" / "copy" / "started").read_text()
    pid = int((tmp_path / "work" / "0000abcd" / "copy" / "pid").read_text())
    # The session that started it goes (an agent killed, a network blip).
    await first.close()
    second = pool(keys, maintenance)
    try:
        image = driver(second)
        # Started again while it runs, or once it is over and verified: left alone.
        await image.start_write(node, environment, {})
        statuses = await _until_done(image, node, environment)
        await image.start_write(node, environment, {})
        assert (tmp_path / "work" / "0000abcd" / "copy" / "started").read_text() == started
        assert int((tmp_path / "work" / "0000abcd" / "copy" / "pid").read_text()) == pid
        assert [s.percent for s in statuses] == sorted(s.percent for s in statuses)
        size = (folder / "pi.img").stat().st_size
        with open(card, "rb") as device, (folder / "pi.img").open("rb") as source:
            assert hashlib.sha256(device.read(size)).digest() == hashlib.sha256(source.read()).digest()
        await image.verify(node, environment)
    finally:
        await second.close()


async def test_a_mismatch_is_reported_once_then_the_copy_starts_again(
    tmp_path, keys, maintenance, images, card
) -> None:
    """The image server's copy differs from image_dir's (bit rot on a mirror): the card never
    matches; each failed job is one DriverError, then a new job."""
    folder, url = images
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(folder / "pi.img", mirror / "pi.img")
    with (mirror / "pi.img").open("r+b") as handle:
        handle.seek(12 * 1024 * 1024)
        handle.write(b"bit rot" * 100)
    saved = Saved()
    ssh = pool(keys, maintenance)
    node, environment = pi(card, serial="0000beef"), Environment("pi", image="pi.img")
    with http_server(mirror) as mirror_url:
        catalog = ImageCatalog(str(folder), mirror_url, load_state=saved.load, save_state=saved.save)
        image = CardImage(ssh, NodeJobs(ssh, str(tmp_path / "work"), MAINTENANCE_NAME), catalog,
                          wipe_mode="quick", maintenance_hostname=MAINTENANCE_NAME)
        try:
            await image.start_write(node, environment, {})
            errors, events = [], []
            deadline = time.monotonic() + 120
            while len(errors) < 2:
                try:
                    status = await image.write_status(node, environment)
                except DriverError as error:
                    errors.append(str(error))
                    events.append("error")
                    continue
                assert not status.done
                if not status.running:
                    events.append("start")
                    await image.start_write(node, environment, {})
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        finally:
            await ssh.close()
    # Each failed job once: an error, then a new job, then its error.
    assert events == ["error", "start", "error"]
    assert all("copy failed: checksum mismatch: the card holds sha256" in error for error in errors)
    assert all("the image pi.img has" in error for error in errors)


async def test_configure_sends_the_password_as_a_hash_on_stdin_only(
    tmp_path, keys, maintenance, images, card
) -> None:
    folder, _ = images
    subprocess.run(["dd", f"if={folder / 'pi.img'}", f"of={card}", "bs=1M", "status=none"], check=True)
    password = "the user's own password 42"
    saved = Saved()
    ssh = pool(keys, maintenance, cls=Recording, saved=saved)
    setup = PiSetup(ssh, work_dir=str(tmp_path / "work"), maintenance_hostname=MAINTENANCE_NAME)
    node = pi(card)
    try:
        await setup.partition(node, "full")
        await setup.configure(node, host=HostConfig("exp-7", password, user="pi"))
        with pytest.raises(DriverError, match="is the maintenance system's"):
            await setup.configure(node, host=HostConfig(MAINTENANCE_NAME))
    finally:
        await ssh.close()
    assert not any(password in line for line in ssh.lines)
    assert not any("$6$" in line for line in ssh.lines)
    mount = tmp_path / "check"
    mount.mkdir()
    subprocess.run(["mount", "-t", "ext4", f"{card}p2", str(mount)], check=True)
    try:
        entry = next(line for line in (mount / "etc/shadow").read_text().splitlines() if line.startswith("pi:"))
        stored = entry.split(":")[1]
        assert (mount / "etc/hostname").read_text() == "exp-7\n"
        assert keys[0].public in (mount / "root/.ssh/authorized_keys").read_text()
        # The card's host key is new, the only one, and pinned for the node.
        assert sorted(p.name for p in (mount / "etc/ssh").glob("ssh_host_*")) == [
            "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]
        card_key = (mount / "etc/ssh/ssh_host_ed25519_key.pub").read_text().split()
        assert saved.values["hostkey.0000abcd"] == f"{card_key[0]} {card_key[1]}"
    finally:
        subprocess.run(["umount", str(mount)], check=True)
    salt = stored.split("$")[2]
    again = subprocess.run(["openssl", "passwd", "-6", "-salt", salt, "-stdin"], input=password.encode(),
                           capture_output=True, check=True).stdout.decode().strip()
    assert stored == again
