"""The sensor step functions: what each state of states.py does through the driver."""

from __future__ import annotations

from edgebed.nodetypes.base import DONE, Poll, Step, StepContext, poll_copy
from edgebed.nodetypes.sensor.driver import SensorDriver

DEFAULT_RADIO_CHANNEL = "26"


def _driver(ctx: StepContext) -> SensorDriver:
    return ctx.driver


def _power(on: bool) -> Step:
    async def exec_(ctx: StepContext) -> None:
        await _driver(ctx).set_power(ctx.node, on)

    async def post(ctx: StepContext) -> Poll:
        return Poll(done=await _driver(ctx).power_is_on(ctx.node) == on)

    return Step(exec=exec_, post=post)


async def flash_firmware(ctx: StepContext) -> None:
    channel = ctx.prop("radio_channel", DEFAULT_RADIO_CHANNEL)
    await _driver(ctx).start_flash(ctx.node, ctx.environment, channel)


async def firmware_flashed(ctx: StepContext) -> Poll:
    driver = _driver(ctx)
    status = await driver.flash_status(ctx.node, ctx.environment)
    channel = ctx.prop("radio_channel", DEFAULT_RADIO_CHANNEL)
    return await poll_copy(
        ctx, status, lambda: driver.start_flash(ctx.node, ctx.environment, channel)
    )


async def verify_firmware(ctx: StepContext) -> None:
    await _driver(ctx).verify_firmware(ctx.node, ctx.environment)


async def reset(ctx: StepContext) -> None:
    await _driver(ctx).reset(ctx.node)


async def alive(ctx: StepContext) -> Poll:
    driver = _driver(ctx)
    if await driver.is_alive(ctx.node):
        return DONE
    return Poll(done=False, retry_after=driver.seconds_until_alive(ctx.node))


async def erase_flash(ctx: StepContext) -> None:
    await _driver(ctx).erase_flash(ctx.node)


STEPS = {
    "power_off": _power(False),
    "power_on": _power(True),
    "flash_firmware": Step(exec=flash_firmware, post=firmware_flashed),
    "verify_firmware": Step(exec=verify_firmware),
    "reset": Step(exec=reset),
    "check_alive": Step(post=alive),
    "erase_flash": Step(exec=erase_flash),
}
