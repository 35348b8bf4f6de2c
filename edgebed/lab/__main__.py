"""`python -m edgebed.lab up|down|status|agent-config [--dir DIR]` (root, Linux).

up            brings a lab up, prints its parts and timings, and keeps it up until SIGINT/SIGTERM,
              then takes it down. The line `ready: <dir>/lab.json` says it is usable.
down          takes the lab in DIR down, also what a killed `up` left behind.
status        each Pi's and server's power and system, the switch and image server addresses.
agent-config  a TOML agent configuration (driver = "real") for the lab, and each Pi's node
              properties (`--servers`: a node agent's, for the servers; `--json`: the whole
              description as JSON instead).

Bad input or a missing prerequisite: one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from pathlib import Path

from edgebed.lab.description import LabDescription
from edgebed.lab.lab import Lab, clean, status
from edgebed.lab.proc import LabError
from edgebed.stopsignals import stop_on_signals

DEFAULT_DIR = Path("var/lab")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m edgebed.lab", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    up = commands.add_parser("up", help="bring a lab up and keep it up until SIGINT/SIGTERM")
    down = commands.add_parser("down", help="take the lab down, also after a killed up")
    show = commands.add_parser("status", help="power and system of each Pi")
    config = commands.add_parser("agent-config", help="agent TOML and node properties for the lab")
    for sub in (up, down, show, config):
        sub.add_argument("--dir", type=Path, default=DEFAULT_DIR, help=f"lab directory ({DEFAULT_DIR})")
    up.add_argument("--pis", type=int, default=2, help="number of Pis (2)")
    up.add_argument("--community", default="private", help="the switch's SNMP community (private)")
    up.add_argument("--boot-delay", type=float, default=1.0, help="seconds from power on to boot (1)")
    up.add_argument("--card-mib", type=int, default=256, help="size of a new card in MiB (256)")
    up.add_argument("--retry-seconds", type=float, default=5.0,
                    help="a Pi with nothing to boot tries again after this many seconds (5)")
    up.add_argument("--ipmi-servers", type=int, default=0, help="servers behind an ipmi_sim BMC each (0)")
    up.add_argument("--redfish-servers", type=int, default=0,
                    help="servers behind the Redfish emulator (0)")
    up.add_argument("--redfish-delay", type=int, nargs=2, default=(1, 2), metavar=("LEAST", "MOST"),
                    help="whole seconds the Redfish emulator takes to apply a power change (1 2)")
    up.add_argument("--slot", type=int, default=None,
                    help="0..99: addresses 10.213.SLOT.0/24 and names ebl<SLOT>- (the lowest free one)")
    config.add_argument("--json", action="store_true", help="print the lab description as JSON")
    config.add_argument("--servers", action="store_true",
                        help="a node agent's configuration for the lab's servers (else the Pis')")
    return parser


async def _up(args: argparse.Namespace) -> int:
    lab = Lab(args.dir, pis=args.pis, community=args.community, boot_delay=args.boot_delay,
              card_mib=args.card_mib, slot=args.slot, retry_seconds=args.retry_seconds,
              server_bmcs=["ipmi"] * args.ipmi_servers + ["redfish"] * args.redfish_servers,
              redfish_delay=tuple(args.redfish_delay))
    stop = asyncio.Event()
    stop_on_signals(stop)
    description = await lab.up()
    try:
        if description.switch is not None:
            print(f"switch: snmp v2c {description.switch.address} community {description.switch.community}"
                  f" oid {description.switch.poe_oid}.<port> (1 on, 2 off)")
        print(f"image server: {description.image_url} (from {description.image_dir})")
        print(f"tftp root: {description.tftp_root} (network boot: {description.tftp_root}/<serial>/"
              f" holding the files of {description.netboot_dir})")
        print(f"agent key: {description.ssh_key}")
        for pi in description.pis:
            print(f"{pi.name}: ip {pi.ip} serial {pi.serial} port {pi.switch_port} card {pi.sd_device}"
                  f" netns {pi.netns}")
        for server in description.servers:
            print(f"{server.name}: ip {server.ip} mac {server.mac} {server.bmc_protocol} BMC "
                  f"{server.bmc_address}{' system ' + server.bmc_system if server.bmc_system else ''}"
                  f" (user {description.bmc_user}, password in {description.bmc_password_file})"
                  f" disk {server.disk_device} netns {server.netns}")
        print("timings: " + ", ".join(f"{k} {v:.2f} s" for k, v in lab.timings.items()))
        print(f"ready: {Path(description.directory) / 'lab.json'}", flush=True)
        await stop.wait()
    finally:
        await lab.down()
    print("down", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    try:
        if args.command == "up":
            return asyncio.run(_up(args))
        if args.command == "down":
            for line in clean(args.dir):
                print(line)
            print(f"down: {args.dir.resolve()}")
            return 0
        if args.command == "status":
            print("\n".join(status(args.dir)))
            return 0
        try:
            description = LabDescription.load(args.dir.resolve())
        except FileNotFoundError:
            print(f"python -m edgebed.lab: no lab in {args.dir} (run up first)", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(description.to_json(), indent=2))
        elif args.servers:
            if not description.servers:
                print(f"python -m edgebed.lab: the lab in {args.dir} has no servers", file=sys.stderr)
                return 2
            print(description.server_agent_config(), end="")
        else:
            print(description.agent_config(), end="")
        return 0
    except LabError as error:
        print(f"python -m edgebed.lab: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
