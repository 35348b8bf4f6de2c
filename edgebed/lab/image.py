"""A small Raspberry-Pi-like card image for the lab, and the maintenance system's boot folder.

The image is laid out as Raspberry Pi OS lays out its own, only smaller (64 MiB):

    MBR, disk id 0x6564676c
    p1  4 MiB .. 20 MiB   type 0x0c, FAT16 "bootfs": start4.elf, kernel8.img, config.txt, ...
    p2  20 MiB .. end     type 0x83, ext4 "rootfs": /etc/{hostname,passwd,shadow,group},
                          /home/pi, /root, the `sshd` privilege-separation user, and the marker
                          /etc/edgebed-image ("edgebed-lab-test <version>")

As on Raspberry Pi OS, SSH is off until enabled: an empty `ssh` file in the boot partition (the
lab's firmware then enables it on the root file system and deletes the file, as the real first
boot does) or the symlink /etc/systemd/system/multi-user.target.wants/ssh.service.
User `pi` has the password `raspberry` and no keys; root has no password.

The FAT partition is built with mkfs.fat and mtools because this kernel cannot mount vfat; the
ext4 one with `mkfs.ext4 -d`, so nothing is mounted while building.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from edgebed.lab.proc import LabError, run_sync

IMAGE_NAME = "lab-test"
IMAGE_VERSION = 1
MARKER = "etc/edgebed-image"
DEFAULT_USER = "pi"
DEFAULT_PASSWORD = "raspberry"
CARD_HOSTNAME = "raspberrypi"
MIB = 1024 * 1024
_SIZE_MIB = 64
_BOOT_START_MIB, _BOOT_MIB = 4, 16
_ROOT_START_MIB = _BOOT_START_MIB + _BOOT_MIB

# Stand-ins for the Pi 4 firmware files: what matters to the lab is that they are there.
BOOT_FILES = ("start4.elf", "fixup4.dat", "kernel8.img", "bcm2711-rpi-4-b.dtb", "config.txt",
              "cmdline.txt")
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1"}


@dataclass(frozen=True)
class ImageFile:
    """One file of the image server: `file` in image_dir, its size in bytes and sha256 (hex)."""

    file: str
    size: int
    sha256: str
    compression: str  # "" (raw), "zst" or "xz"


@dataclass(frozen=True)
class TestImage:
    """The test image in its three forms; `sha256`/`size` are those of the raw card image, which
    is what a card holds after a copy (compare the first `size` bytes of the card)."""

    name: str
    version: int
    size: int
    sha256: str
    files: tuple[ImageFile, ...]
    default_user: str = DEFAULT_USER
    default_password: str = DEFAULT_PASSWORD
    hostname: str = CARD_HOSTNAME
    marker: str = f"/{MARKER}"

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> TestImage:
        files = tuple(ImageFile(**item) for item in data.pop("files"))
        return cls(files=files, **data)


def sha256_file(path: Path, limit: int | None = None) -> str:
    """sha256 (hex) of `path`, or of its first `limit` bytes."""
    digest = hashlib.sha256()
    left = limit
    with path.open("rb") as handle:
        while left is None or left > 0:
            chunk = handle.read(MIB if left is None else min(MIB, left))
            if not chunk:
                break
            digest.update(chunk)
            if left is not None:
                left -= len(chunk)
    return digest.hexdigest()


def _boot_file_text(name: str, title: str) -> bytes:
    if name == "config.txt":
        return b"[pi4]\narm_64bit=1\nenable_uart=1\n"
    if name == "cmdline.txt":
        return b"console=serial0,115200 console=tty1 root=PARTUUID=6564676c-02 rootfstype=ext4 rootwait\n"
    # Binary blobs on a real card; here a line that says whose stand-in they are.
    return f"edgebed lab stand-in for {name} ({title})\n".encode()


def write_boot_folder(folder: Path, title: str) -> None:
    """Fills `folder` with the Pi 4 boot file stand-ins (the maintenance system's netboot dir)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in BOOT_FILES:
        (folder / name).write_bytes(_boot_file_text(name, title))


def _root_tree(root: Path) -> None:
    """The root file system's contents, owned as on the real system (we run as root)."""
    etc = root / "etc"
    for sub in ("etc/ssh", "etc/systemd/system/multi-user.target.wants", "home/pi/.ssh", "root",
                "tmp", "boot/firmware", "var/log", "run/sshd"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    pw_hash = run_sync("openssl", "passwd", "-6", "-salt", secrets.token_hex(8), DEFAULT_PASSWORD).strip()
    (etc / "hostname").write_text(f"{CARD_HOSTNAME}\n")
    (etc / "hosts").write_text(f"127.0.0.1\tlocalhost\n127.0.1.1\t{CARD_HOSTNAME}\n")
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/bash\n"
        "daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
        # sshd refuses to start without its privilege-separation user.
        "sshd:x:100:65534::/run/sshd:/usr/sbin/nologin\n"
        f"{DEFAULT_USER}:x:1000:1000:,,,:/home/{DEFAULT_USER}:/bin/bash\n")
    (etc / "shadow").write_text(
        "root:*:19700:0:99999:7:::\n"
        "daemon:*:19700:0:99999:7:::\n"
        "nobody:*:19700:0:99999:7:::\n"
        "sshd:*:19700:0:99999:7:::\n"
        f"{DEFAULT_USER}:{pw_hash}:19700:0:99999:7:::\n")
    (etc / "group").write_text(
        "root:x:0:\ndaemon:x:1:\nsudo:x:27:pi\nnogroup:x:65534:\n"
        f"{DEFAULT_USER}:x:1000:\n")
    (etc / "os-release").write_text(
        'PRETTY_NAME="edgebed lab test image (a Raspberry Pi OS stand-in)"\nID=edgebed-lab\n')
    (root / MARKER).write_text(f"{IMAGE_NAME} {IMAGE_VERSION}\n")
    (root / "home/pi/.bashrc").write_text("PS1='\\u@\\h:\\w\\$ '\n")
    (etc / "shadow").chmod(0o640)
    (root / "root").chmod(0o700)
    (root / "tmp").chmod(0o1777)
    (root / "home/pi/.ssh").chmod(0o700)
    for path in (root / "home/pi", root / "home/pi/.ssh", root / "home/pi/.bashrc"):
        os.chown(path, 1000, 1000)


def build_raw(target: Path) -> None:
    """Writes the raw 64 MiB card image to `target`. Raises LabError when a tool fails."""
    with tempfile.TemporaryDirectory(prefix="ebl-image-", dir=target.parent) as tmp:
        work = Path(tmp)
        boot = work / "boot.fat"
        run_sync("mkfs.fat", "-F", "16", "-n", "BOOTFS", "-C", str(boot), str(_BOOT_MIB * 1024))
        stand_ins = work / "bootfiles"
        write_boot_folder(stand_ins, "card image")
        env = dict(os.environ, **MTOOLS_ENV)
        subprocess.run(["mcopy", "-i", str(boot), *[str(stand_ins / n) for n in BOOT_FILES], "::/"],
                       check=True, capture_output=True, env=env)
        tree = work / "rootfs"
        _root_tree(tree)
        rootfs = work / "root.ext4"
        root_mib = _SIZE_MIB - _ROOT_START_MIB
        run_sync("mkfs.ext4", "-q", "-F", "-L", "rootfs", "-d", str(tree), str(rootfs), f"{root_mib}M")
        raw = work / "card.img"
        with raw.open("wb") as handle:
            handle.truncate(_SIZE_MIB * MIB)
        sectors = MIB // 512
        table = (
            "label: dos\nlabel-id: 0x6564676c\nunit: sectors\n"
            f"start={_BOOT_START_MIB * sectors}, size={_BOOT_MIB * sectors}, type=c\n"
            f"start={_ROOT_START_MIB * sectors}, type=83\n")
        subprocess.run(["sfdisk", "--no-reread", "--no-tell-kernel", "-q", str(raw)],
                       input=table.encode(), check=True, capture_output=True)
        for part, start in ((boot, _BOOT_START_MIB), (rootfs, _ROOT_START_MIB)):
            run_sync("dd", f"if={part}", f"of={raw}", "bs=1M", f"seek={start}", "conv=notrunc,sparse",
                     "status=none")
        raw.replace(target)


def build_test_image(image_dir: Path) -> TestImage:
    """Builds (or reuses, when the manifest says the same version) the test image in raw, .zst and
    .xz forms in `image_dir`, with a SHA256SUMS file; returns its description."""
    image_dir.mkdir(parents=True, exist_ok=True)
    manifest = image_dir / f"{IMAGE_NAME}.json"
    if manifest.exists():
        try:
            known = TestImage.from_json(json.loads(manifest.read_text()))
            if known.version == IMAGE_VERSION and all((image_dir / f.file).exists() for f in known.files):
                return known
        except (ValueError, TypeError, KeyError):
            pass  # a manifest from another version of the lab: build anew
    for tool in ("mkfs.fat", "mcopy", "mkfs.ext4", "sfdisk", "zstd", "xz", "openssl"):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} is missing: run scripts/ci-lab-deps")
    raw = image_dir / f"{IMAGE_NAME}.img"
    build_raw(raw)
    run_sync("zstd", "-q", "-f", "-T1", "-3", str(raw), "-o", f"{raw}.zst")
    run_sync("xz", "-q", "-f", "-k", "-T1", "-3", str(raw))
    files = tuple(
        ImageFile(file=path.name, size=path.stat().st_size, sha256=sha256_file(path), compression=comp)
        for path, comp in ((raw, ""), (Path(f"{raw}.zst"), "zst"), (Path(f"{raw}.xz"), "xz")))
    image = TestImage(name=IMAGE_NAME, version=IMAGE_VERSION, size=files[0].size,
                      sha256=files[0].sha256, files=files)
    (image_dir / "SHA256SUMS").write_text("".join(f"{f.sha256}  {f.file}\n" for f in files))
    manifest.write_text(json.dumps(image.to_json(), indent=2) + "\n")
    return image
