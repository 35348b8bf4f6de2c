"""Step functions shared by the node types, written once against the capability interfaces.

Each function here returns a `Step` (its `exec`, its `post`, the interfaces they use); a type's
states.py binds it to a state name and timeouts: raspberry's `poe_off` and node's `power_off` are
both `power(False)`. Steps are idempotent: the executor runs one again after a hard reboot or an
agent restart.

A step reaches an interface through the accessors below, which raise DriverError when the driver
lacks it; the agent refuses such a driver at start-up (NodeType.needs), so they only fire for a
driver assembled by hand.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from edgebed.nodetypes.base import DONE, DriverError, Poll, Step, StepContext
from edgebed.nodetypes.interfaces import (
    BOOT,
    BOOT_SOURCES,
    IMAGE,
    POWER,
    SETUP,
    SYSTEM,
    BootInterface,
    HostConfig,
    ImageInterface,
    LoginConfig,
    PowerInterface,
    SetupInterface,
    SystemInterface,
    WipeProgress,
)

# Options written with an image (ImageInterface.start_write), from the action's properties.
ImageOptions = Callable[[StepContext], Mapping[str, str]]


def _missing(ctx: StepContext, interface: str) -> DriverError:
    return DriverError(f"{ctx.node.name}: the driver has no {interface} interface")


def _power(ctx: StepContext) -> PowerInterface:
    return ctx.driver.power


def _boot(ctx: StepContext) -> BootInterface:
    if ctx.driver.boot is None:
        raise _missing(ctx, BOOT)
    return ctx.driver.boot


def _image(ctx: StepContext) -> ImageInterface:
    if ctx.driver.image is None:
        raise _missing(ctx, IMAGE)
    return ctx.driver.image


def _system(ctx: StepContext) -> SystemInterface:
    if ctx.driver.system is None:
        raise _missing(ctx, SYSTEM)
    return ctx.driver.system


def _setup(ctx: StepContext) -> SetupInterface:
    if ctx.driver.setup is None:
        raise _missing(ctx, SETUP)
    return ctx.driver.setup


# Power.


def power(on: bool) -> Step:
    """Switches the node on (off), then polls until it reports power on (off)."""

    async def switch(ctx: StepContext) -> None:
        await _power(ctx).set_power(ctx.node, on)

    async def switched(ctx: StepContext) -> Poll:
        return Poll(done=await _power(ctx).is_powered(ctx.node) == on)

    return Step(exec=switch, post=switched, needs=frozenset({POWER}))


async def _hard_reboot(ctx: StepContext) -> None:
    await _power(ctx).hard_reboot(ctx.node)


# A power cycle as a state of its own (a sensor's reset into the flashed firmware).
HARD_REBOOT = Step(exec=_hard_reboot, needs=frozenset({POWER}))


# Boot.


def boot_from(source: str) -> Step:
    """Sets the boot source (interfaces.NETWORK or LOCAL) for the next boots."""
    if source not in BOOT_SOURCES:
        raise ValueError(f"boot source must be one of {', '.join(BOOT_SOURCES)}, got {source!r}")

    async def set_source(ctx: StepContext) -> None:
        await _boot(ctx).set_boot_source(ctx.node, source)

    return Step(exec=set_source, needs=frozenset({BOOT}))


# System.


def wait_for_system(system: str) -> Step:
    """Polls until `system` (interfaces.MAINTENANCE or INSTALLED) answers, as often as the
    driver's boot-time hint says."""

    async def answers(ctx: StepContext) -> Poll:
        driver = _system(ctx)
        if await driver.running_system(ctx.node) == system:
            return DONE
        return Poll(done=False, retry_after=driver.seconds_until_up(ctx.node))

    return Step(post=answers, needs=frozenset({SYSTEM}))


# Image.


def no_options(ctx: StepContext) -> Mapping[str, str]:
    return {}


def write_image(options: ImageOptions = no_options) -> Step:
    """Starts writing the action's environment, then polls its progress (0..100); a write that
    died (its session went with a reboot or an agent restart) is started again. `options` picks
    the settings written with the image."""

    async def start(ctx: StepContext) -> None:
        await _image(ctx).start_write(ctx.node, ctx.require_environment(), options(ctx))

    async def written(ctx: StepContext) -> Poll:
        driver, environment = _image(ctx), ctx.require_environment()
        status = await driver.write_status(ctx.node, environment)
        if status.done:
            return DONE
        if not status.running:
            await driver.start_write(ctx.node, environment, options(ctx))
            return Poll(done=False, progress=0)
        return Poll(done=False, progress=status.percent, retry_after=status.eta)

    return Step(exec=start, post=written, needs=frozenset({IMAGE}))


async def _verify(ctx: StepContext) -> None:
    await _image(ctx).verify(ctx.node, ctx.require_environment())


async def _wipe(ctx: StepContext) -> None:
    await _image(ctx).wipe(ctx.node)


async def _wiped(ctx: StepContext) -> Poll:
    """A wipe that runs on its own (WipeProgress) is polled like a write: progress, and started
    again when it died; any other wipe was over when `wipe` returned."""
    driver = _image(ctx)
    if not isinstance(driver, WipeProgress):
        return DONE
    status = await driver.wipe_status(ctx.node)
    if status.done:
        return DONE
    if not status.running:
        await driver.wipe(ctx.node)
        return Poll(done=False, progress=0)
    return Poll(done=False, progress=status.percent, retry_after=status.eta)


VERIFY_IMAGE = Step(exec=_verify, needs=frozenset({IMAGE}))
WIPE = Step(exec=_wipe, post=_wiped, needs=frozenset({IMAGE}))


# Setup of the written system.


async def _partition(ctx: StepContext) -> None:
    await _setup(ctx).partition(ctx.node, ctx.prop("partition_size", "full"))


PARTITION = Step(exec=_partition, needs=frozenset({SETUP}))


def configure(*, host: bool, login: bool, fallback_user: str = "root") -> Step:
    """Configures the host part (host name, password) and/or the login part (the environment's
    default user, else `fallback_user`, with the action's ssh_key) in one driver call."""
    if not host and not login:
        raise ValueError("configure: nothing to configure")

    async def configure_(ctx: StepContext) -> None:
        host_config = login_config = None
        default_user = ctx.environment.default_user if ctx.environment else ""
        if host:
            host_config = HostConfig(ctx.hostname(), ctx.prop("os_password"), user=default_user)
        if login:
            login_config = LoginConfig(default_user or fallback_user, ctx.prop("ssh_key"))
        await _setup(ctx).configure(ctx.node, host=host_config, login=login_config)

    return Step(exec=configure_, needs=frozenset({SETUP}))
