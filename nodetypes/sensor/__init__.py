"""Sensor boards on a gateway: powered and flashed through the gateway's USB hub and debug probes."""

from __future__ import annotations

from edgebed.nodetypes.base import Environment, NodeType, PropertySpec
from edgebed.nodetypes.sensor.states import PROCESSES, STATES

# IEEE 802.15.4 channels in the 2.4 GHz band.
RADIO_CHANNELS = tuple(str(channel) for channel in range(11, 27))


NODE_TYPE = NodeType(
    name="sensor",
    states=STATES,
    processes=PROCESSES,
    properties=(
        PropertySpec("radio_channel", values=RADIO_CHANNELS, label="Radio channel",
                     description="IEEE 802.15.4 channel written into the firmware (default 26)"),
    ),
    default_environments=(
        Environment(
            name="riot-2024.10-gnrc-networking",
            description="RIOT 2024.10, gnrc_networking example (6LoWPAN, RPL, UDP shell)",
            image="/srv/edgebed/firmware/riot-2024.10-gnrc_networking.elf",
            size_bytes=180_000,
            properties={"format": "elf"},
        ),
        Environment(
            name="contiki-ng-4.9-rpl-udp",
            description="Contiki-NG 4.9, rpl-udp example node",
            image="/srv/edgebed/firmware/contiki-ng-4.9-rpl-udp.hex",
            size_bytes=120_000,
            properties={"format": "ihex"},
        ),
    ),
    driver_note="board power and firmware flashing on the gateway",
)
