"""The raspberry step functions: what each state of states.py does through the driver."""

from __future__ import annotations

from edgebed.nodetypes.base import Poll, Step, StepContext, poll_copy, ssh_answers
from edgebed.nodetypes.raspberry.driver import NETBOOT, SDCARD, RaspberryDriver


def _driver(ctx: StepContext) -> RaspberryDriver:
    return ctx.driver


async def netboot_on(ctx: StepContext) -> None:
    await _driver(ctx).set_network_boot(ctx.node, True)


async def netboot_off(ctx: StepContext) -> None:
    await _driver(ctx).set_network_boot(ctx.node, False)


async def poe_off(ctx: StepContext) -> None:
    await _driver(ctx).set_poe(ctx.node, False)


async def poe_is_off(ctx: StepContext) -> Poll:
    return Poll(done=not await _driver(ctx).poe_is_on(ctx.node))


async def poe_on(ctx: StepContext) -> None:
    await _driver(ctx).set_poe(ctx.node, True)


async def poe_is_on(ctx: StepContext) -> Poll:
    return Poll(done=await _driver(ctx).poe_is_on(ctx.node))


async def copy_image(ctx: StepContext) -> None:
    await _driver(ctx).start_image_copy(ctx.node, ctx.environment)


async def image_copied(ctx: StepContext) -> Poll:
    driver = _driver(ctx)
    status = await driver.image_copy_status(ctx.node, ctx.environment)
    return await poll_copy(ctx, status, lambda: driver.start_image_copy(ctx.node, ctx.environment))


async def partition(ctx: StepContext) -> None:
    await _driver(ctx).partition(ctx.node, ctx.prop("partition_size", "full"))


async def configure_system(ctx: StepContext) -> None:
    hostname = ctx.hostname()
    await _driver(ctx).configure_system(ctx.node, hostname, ctx.prop("os_password"))


async def configure_user(ctx: StepContext) -> None:
    user = ctx.environment.default_user if ctx.environment else "pi"
    await _driver(ctx).configure_user(ctx.node, user or "pi", ctx.prop("ssh_key"))


async def wipe_card(ctx: StepContext) -> None:
    await _driver(ctx).wipe_card(ctx.node)


STEPS = {
    "netboot_on": Step(exec=netboot_on),
    "netboot_off": Step(exec=netboot_off),
    "poe_off": Step(exec=poe_off, post=poe_is_off),
    "poe_on": Step(exec=poe_on, post=poe_is_on),
    "wait_netboot_ssh": Step(post=ssh_answers(NETBOOT)),
    "copy_image": Step(exec=copy_image, post=image_copied),
    "partition": Step(exec=partition),
    "configure_system": Step(exec=configure_system),
    "configure_user": Step(exec=configure_user),
    "ssh_check": Step(post=ssh_answers(SDCARD)),
    "wipe_card": Step(exec=wipe_card),
}
