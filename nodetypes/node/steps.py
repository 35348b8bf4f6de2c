"""The node (server) step functions: what each state of states.py does through the driver."""

from __future__ import annotations

from edgebed.nodetypes.base import Poll, Step, StepContext, poll_copy, ssh_answers
from edgebed.nodetypes.node.driver import DISK, PXE, ServerDriver


def _driver(ctx: StepContext) -> ServerDriver:
    return ctx.driver


def _boot_from(device: str):
    async def exec_(ctx: StepContext) -> None:
        await _driver(ctx).set_boot_device(ctx.node, device)

    return exec_


def _power(on: bool):
    async def exec_(ctx: StepContext) -> None:
        await _driver(ctx).set_power(ctx.node, on)

    async def post(ctx: StepContext) -> Poll:
        return Poll(done=await _driver(ctx).power_is_on(ctx.node) == on)

    return Step(exec=exec_, post=post)


async def write_image(ctx: StepContext) -> None:
    await _driver(ctx).start_image_write(ctx.node, ctx.environment)


async def image_written(ctx: StepContext) -> Poll:
    driver = _driver(ctx)
    status = await driver.image_write_status(ctx.node, ctx.environment)
    return await poll_copy(ctx, status, lambda: driver.start_image_write(ctx.node, ctx.environment))


async def partition(ctx: StepContext) -> None:
    await _driver(ctx).partition(ctx.node, ctx.prop("partition_size", "full"))


async def configure(ctx: StepContext) -> None:
    hostname = ctx.hostname()
    user = (ctx.environment.default_user if ctx.environment else "") or "root"
    await _driver(ctx).configure(
        ctx.node, hostname, ctx.prop("os_password"), user, ctx.prop("ssh_key")
    )


async def wipe_disk(ctx: StepContext) -> None:
    await _driver(ctx).wipe_disk(ctx.node)


STEPS = {
    "bootdev_pxe": Step(exec=_boot_from(PXE)),
    "bootdev_disk": Step(exec=_boot_from(DISK)),
    "power_off": _power(False),
    "power_on": _power(True),
    "wait_pxe_ssh": Step(post=ssh_answers(PXE)),
    "write_image": Step(exec=write_image, post=image_written),
    "partition": Step(exec=partition),
    "configure": Step(exec=configure),
    "ssh_check": Step(post=ssh_answers(DISK)),
    "wipe_disk": Step(exec=wipe_disk),
}
