"""The SD card of a Pi, written, checked and wiped from its maintenance system (ImageInterface and
WipeProgress).

Write: a `copy` job (shell/copy.sh, see jobs.py) streams the image from image_url through its
decompressor onto the card (property `sd_device`, default /dev/mmcblk0), then reads back exactly
the raw image's size and records its sha256. The copy is done when that sha256 is the one the
agent computed for the image (images.py); anything else (a failed download, a short write, a
mismatch) is reported once as a DriverError, which the executor logs, and the next poll finds no
copy running, so the step starts a new one, until the state's timeouts say `lost`. A copy is
never `done` unverified.

Its job id names the image file, its raw size and sha256, and the device: a start finding the
same job running, or finished and verified, in the same boot leaves it alone (an agent killed
during the copy finds it again after a restart); another job is replaced.

Wipe: a `wipe` job (shell/wipe.sh), `quick` (partition table, signatures, first and last MiB,
read back) or `full` (the whole card zeroed first, with progress), same protocol.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from edgebed.nodetypes.base import CopyStatus, DriverError, Environment, NodeRef
from edgebed.nodetypes.real.images import ImageCatalog, ImageDigest, ImageFile
from edgebed.nodetypes.real.jobs import DEAD, JobStatus, NodeJobs
from edgebed.nodetypes.real.scripts import script
from edgebed.nodetypes.real.ssh import SshPool, bash

log = logging.getLogger(__name__)

DEFAULT_SD_DEVICE = "/dev/mmcblk0"
COPY = "copy"
WIPE = "wipe"
# Reading a whole card back (verify) may take minutes.
READ_BACK_SECONDS = 3600.0

NOT_RUNNING = CopyStatus(done=False, running=False, percent=0, eta=None)
DONE = CopyStatus(done=True, running=False, percent=100, eta=0.0)


def sd_device(node: NodeRef) -> str:
    device = node.properties.get("sd_device") or DEFAULT_SD_DEVICE
    if not device.startswith("/dev/"):
        raise DriverError(f"{node.name}: property sd_device must be a /dev path, got {device!r}")
    return device


def _progress(done: int, total: int, elapsed: float | None) -> CopyStatus:
    """A running job's status: percent of `total` bytes (at most 99 until it is over) and an
    estimate of the seconds left from the pace so far."""
    if total <= 0:
        return CopyStatus(done=False, running=True, percent=0, eta=None)
    fraction = min(1.0, done / total)
    eta = None
    if elapsed and done > 0:
        eta = elapsed * (total - done) / done
    return CopyStatus(done=False, running=True, percent=min(99, int(fraction * 100)), eta=eta)


# NodeRef -> the block device a node's image goes to ("/dev/mmcblk0"); DriverError when its
# property is not a device path.
DeviceOf = Callable[[NodeRef], str]


class CardImage:
    """ImageInterface and WipeProgress on a node's storage: a Pi's card (`device` = sd_device), or
    any other block device the maintenance system sees (a server's disk, servers.py)."""

    def __init__(self, ssh: SshPool, jobs: NodeJobs, catalog: ImageCatalog, *,
                 wipe_mode: str, maintenance_hostname: str, device: DeviceOf = sd_device) -> None:
        self._ssh = ssh
        self._device = device
        self._jobs = jobs
        self._catalog = catalog
        self._wipe_mode = wipe_mode
        self._maintenance = maintenance_hostname
        # (hardware id, job name) -> (job id, start time, pid) of the failed job last reported:
        # each failed job is one error, then the step starts a new job.
        self._reported: dict[tuple[str, str], tuple[str, int, int]] = {}

    # Failures.

    def _fail_once(self, node: NodeRef, name: str, status: JobStatus, problem: str) -> None:
        key = (node.hardware_id, name)
        instance = (status.job_id, status.started, status.pid)
        if self._reported.get(key) == instance:
            return
        self._reported[key] = instance
        log.warning("%s: %s job failed: %s", node.name, name, problem)
        raise DriverError(f"{node.name}: {name} failed: {problem}")

    # Write.

    async def _copy_job(
        self, node: NodeRef, environment: Environment
    ) -> tuple[str, ImageFile, ImageDigest, str]:
        """The copy job's id, the image, its raw digest and the device written."""
        image = self._catalog.locate(environment)
        digest = await self._catalog.digest(image)
        device = self._device(node)
        job_id = f"copy {image.relative} {digest.size} {digest.sha256} {device}"
        return job_id, image, digest, device

    @staticmethod
    def _verified(status: JobStatus, digest: ImageDigest) -> bool:
        return status.succeeded() and status.result == digest.sha256

    async def start_write(
        self, node: NodeRef, environment: Environment, options: Mapping[str, str]
    ) -> None:
        job_id, image, digest, device = await self._copy_job(node, environment)
        status = await self._jobs.status(node, COPY)
        if status.is_current(job_id) and (status.alive or self._verified(status, digest)):
            return
        # The card's system is about to go: so does the host key pinned for it (configure's
        # host part pins the new card's).
        await self._ssh.pin(node, None)
        await self._jobs.start(node, COPY, job_id, "copy", image.url, image.compression, device,
                               str(digest.size))
        log.info("%s: copying %s (%d bytes raw) onto %s", node.name, image.relative,
                 digest.size, device)

    async def write_status(self, node: NodeRef, environment: Environment) -> CopyStatus:
        job_id, image, digest, _ = await self._copy_job(node, environment)
        status = await self._jobs.status(node, COPY)
        if not status.is_current(job_id) or status.state == DEAD:
            return NOT_RUNNING
        if status.alive:
            done = status.progress.get("write", 0) + status.progress.get("verify", 0)
            return _progress(done, 2 * digest.size, status.elapsed)
        if self._verified(status, digest):
            return DONE
        if status.exit_code == 0:
            problem = (f"checksum mismatch: the card holds sha256 {status.result or '?'} over "
                       f"{digest.size} bytes, the image {image.relative} has {digest.sha256}")
        else:
            problem = status.error or f"the copy job exited {status.exit_code}"
        self._fail_once(node, COPY, status, problem)
        return NOT_RUNNING

    async def verify(self, node: NodeRef, environment: Environment) -> None:
        image = self._catalog.locate(environment)
        digest = await self._catalog.digest(image)
        result = await self._ssh.run(
            node, bash(script("read-back"), self._maintenance, self._device(node), str(digest.size)),
            timeout=READ_BACK_SECONDS, what="reading the card back",
        )
        found = result.stdout.strip()
        if found != digest.sha256:
            raise DriverError(
                f"{node.name}: checksum mismatch: the card holds sha256 {found} over "
                f"{digest.size} bytes, the image {image.relative} has {digest.sha256}"
            )

    # Wipe.

    def _wipe_job(self, node: NodeRef) -> tuple[str, str]:
        device = self._device(node)
        return f"wipe {self._wipe_mode} {device}", device

    async def wipe(self, node: NodeRef) -> None:
        job_id, device = self._wipe_job(node)
        status = await self._jobs.status(node, WIPE)
        if status.is_current(job_id) and (status.alive or status.succeeded()):
            return
        await self._ssh.pin(node, None)
        await self._jobs.start(node, WIPE, job_id, "wipe", self._wipe_mode, device)
        log.info("%s: wiping %s (%s)", node.name, device, self._wipe_mode)

    async def wipe_status(self, node: NodeRef) -> CopyStatus:
        job_id, _ = self._wipe_job(node)
        status = await self._jobs.status(node, WIPE)
        if not status.is_current(job_id) or status.state == DEAD:
            return NOT_RUNNING
        if status.alive:
            return _progress(status.progress.get("zero", 0), status.total or 0, status.elapsed)
        if status.succeeded():
            return DONE
        self._fail_once(node, WIPE, status, status.error or f"the wipe job exited {status.exit_code}")
        return NOT_RUNNING
