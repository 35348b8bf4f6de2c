"""Human labels for what the pages show: reservation statuses, action states, agent statuses and
node or action properties. The database and the JSON API keep the seed's identifiers
(`in_progress`, `os_password`, `memory_gb`); only the pages translate them, here, in one place.
An identifier without an entry gets a readable fallback (underscores to spaces, known
abbreviations in capitals, a unit suffix in brackets), so a new node type's names still read well.
"""

from __future__ import annotations

from functools import lru_cache

STATUS = {
    "configuring": "Needs configuration",
    "ready": "Ready",
    "in_progress": "In progress",
    # Not stored: what the manage page says of a row once the reservation has ended.
    "released": "Released",
}

AGENT_STATUS = {"connected": "Connected", "disconnected": "Disconnected"}

STATE = {
    "deployed": "Deployed",
    "rebooted": "Rebooted",
    "destroyed": "Wiped",
    "lost": "Lost (no answer)",
    "netboot_on": "Network boot on",
    "netboot_off": "Network boot off",
    "poe_off": "Power off",
    "poe_on": "Power on",
    "copy_image": "Copying the image",
    "wipe_card": "Wiping the card",
    "bootdev_pxe": "Boot from network",
    "bootdev_disk": "Boot from disk",
    "power_off": "Power off",
    "power_on": "Power on",
    "write_image": "Writing the image",
    "wipe_disk": "Wiping the disk",
    "flash_firmware": "Flashing the firmware",
    "verify_firmware": "Verifying the firmware",
    "check_alive": "Checking it answers",
    "erase_flash": "Erasing the flash",
    "partition": "Partitioning",
    "reset": "Resetting",
    "ssh_check": "Checking SSH",
    "configure": "Configuring the system",
}

PROCESS = {"deploy": "Deploy", "reboot": "Reboot", "destroy": "Wipe"}

PROPERTY = {
    "os_password": "OS password",
    "ssh_key": "SSH keys",
    "memory_gb": "Memory (GB)",
    "cpus": "CPUs",
    "ip": "IP address",
    "bmc_ip": "BMC address",
    "serial": "Serial number",
    "switch": "PoE switch",
    "switch_port": "Switch port",
    "model": "Model",
    "environment": "Environment",
    "partition_size": "Partition size",
    "hostname": "Host name",
    "radio_channel": "Radio channel",
    "type": "Type",
    "agent": "Agent",
    "name": "Name",
}

# Words written in capitals, and unit suffixes shown in brackets, by the fallback.
_CAPITALS = {"ip", "os", "ssh", "cpu", "cpus", "bmc", "usb", "gpio", "mac", "poe", "id", "url", "dns"}
_UNITS = {"gb": "GB", "mb": "MB", "kb": "KB", "mhz": "MHz", "ghz": "GHz", "hz": "Hz", "s": "s",
          "ms": "ms", "w": "W", "v": "V", "c": "°C"}


@lru_cache(maxsize=1024)
def readable(identifier: str) -> str:
    """'memory_gb' -> 'Memory (GB)', 'usb_ports' -> 'USB ports', 'in_progress' -> 'In progress'."""
    words = [w for w in identifier.replace("-", "_").split("_") if w]
    if not words:
        return identifier
    unit = ""
    if len(words) > 1 and words[-1].lower() in _UNITS:
        unit = f" ({_UNITS[words.pop().lower()]})"
    shown = [w.upper() if w.lower() in _CAPITALS else w.lower() for w in words]
    first = shown[0]
    shown[0] = first if first.isupper() else first[:1].upper() + first[1:]
    return " ".join(shown) + unit


def status(value: str) -> str:
    return STATUS.get(value) or readable(value)


def state(value: str) -> str:
    return STATE.get(value) or readable(value)


def process(value: str) -> str:
    return PROCESS.get(value) or readable(value)


def prop(value: str) -> str:
    return PROPERTY.get(value) or readable(value)


def agent_status(value: str) -> str:
    return AGENT_STATUS.get(value) or readable(value)
