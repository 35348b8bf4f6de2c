"""Network boot on/off as a Pi 4 sees it: <tftp_root>/<serial>/ holds the maintenance system's
boot files, or is absent."""

from __future__ import annotations

import os

import pytest

from edgebed.nodetypes.base import DriverError, NodeRef
from edgebed.nodetypes.interfaces import LOCAL, NETWORK
from edgebed.nodetypes.real.netboot import NetbootFolders

PI = NodeRef("rpi-001", {"ip": "10.0.0.11", "serial": "1A2B3C4D"})


@pytest.fixture
def tftp(tmp_path):
    root = tmp_path / "tftp"
    netboot = root / "netboot"
    netboot.mkdir(parents=True)
    (netboot / "start4.elf").write_text("firmware")
    return root, netboot


async def test_on_links_the_serial_folder_to_the_netboot_files_and_off_removes_it(tftp) -> None:
    root, netboot = tftp
    boot = NetbootFolders(str(root), str(netboot))
    await boot.set_boot_source(PI, NETWORK)
    folder = root / "1a2b3c4d"  # the serial as the Pi spells it in its TFTP requests
    # Relative, so that a TFTP server confined to its root follows it.
    assert os.readlink(folder) == "netboot"
    assert (folder / "start4.elf").read_text() == "firmware"
    await boot.set_boot_source(PI, NETWORK)  # again: nothing changes
    assert os.readlink(folder) == "netboot" and boot.network_boot(PI)
    await boot.set_boot_source(PI, LOCAL)
    assert not os.path.lexists(folder) and not boot.network_boot(PI)
    await boot.set_boot_source(PI, LOCAL)
    assert sorted(p.name for p in root.iterdir()) == ["netboot"]


async def test_a_netboot_dir_outside_the_root_is_linked_absolutely(tmp_path) -> None:
    root, netboot = tmp_path / "tftp", tmp_path / "elsewhere"
    root.mkdir()
    netboot.mkdir()
    await NetbootFolders(str(root), str(netboot)).set_boot_source(PI, NETWORK)
    assert os.readlink(root / "1a2b3c4d") == str(netboot)


async def test_a_stale_link_is_replaced_and_a_real_folder_is_reported_not_deleted(tftp) -> None:
    root, netboot = tftp
    boot = NetbootFolders(str(root), str(netboot))
    (root / "1a2b3c4d").symlink_to("/nowhere")
    await boot.set_boot_source(PI, NETWORK)
    assert os.readlink(root / "1a2b3c4d") == "netboot"
    other = NodeRef("rpi-002", {"serial": "00000002"})
    (root / "00000002").mkdir()
    (root / "00000002" / "start4.elf").write_text("someone's")
    with pytest.raises(DriverError, match="folder edgebed did not make"):
        await boot.set_boot_source(other, LOCAL)
    assert (root / "00000002" / "start4.elf").exists()


async def test_a_bad_serial_or_source_is_refused(tftp) -> None:
    root, netboot = tftp
    boot = NetbootFolders(str(root), str(netboot))
    with pytest.raises(DriverError, match="serial must be 8 hex digits"):
        await boot.set_boot_source(NodeRef("x", {"serial": "../../etc"}), NETWORK)
    with pytest.raises(ValueError, match="boot source"):
        await boot.set_boot_source(PI, "usb")
