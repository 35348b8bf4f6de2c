"""The real raspberry driver's image copy in the hardware lab (docs/lab.md) against the plain
`curl | zstd -d | dd` a person would run on the same Pi and image (issue #8's figure); medians
over repeated runs, with the load average.

    sudo .venv/bin/python -m scripts.bench.lab_copy [--repeat 3] [--mib 128]

Starts a lab of one Pi of its own (`python -m edgebed.lab up`, in a temporary folder; root, as
the lab needs) and a real agent process with driver = "real". The image is the lab's test image
followed by `--mib` MiB of incompressible bytes, compressed with zstd. Each run: the agent
deploys it (its copy_image state: download, decompression, direct write, read back, sha256),
then the same image is written by hand over SSH on the maintenance system and read back with
sha256sum. The first deploy, which computes the image's digest once, is not measured.
Prints figures; asserts only that the deploys end `deployed`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import asyncssh

import tests.conftest  # noqa: F401  (first: tests.conftest and tests.labs import each other)
from edgebed.nodetypes.real.ssh import load_key
from scripts.bench.common import load
from tests.agent.real.lab import AgentConfig, Watch
from tests.labs import lab_process

MIB = 1024 * 1024
NODE = "bench-pi"



def copy_seconds(agent) -> float:  # type: ignore[no-untyped-def]
    """Seconds the node's last deploy spent in copy_image, from the stopped agent's log."""
    rows = [row for row in agent.transitions() if row.node_name == NODE and row.process == "deploy"]
    last = [row for row in rows if row.action_id == rows[-1].action_id]
    entered = next(row.at for row in last if row.event == "enter" and row.state == "copy_image")
    return min(row.at for row in last if row.event == "enter" and row.at > entered) - entered


async def by_hand(lab, pi, image: Path) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(seconds of curl | zstd -d | dd, seconds of reading it back through sha256sum) on the Pi's
    maintenance system, network-booted by turning its PoE port on."""
    subprocess.run(["snmpset", "-v2c", "-c", lab.switch.community, lab.switch.address,
                    f"{lab.switch.poe_oid}.{pi.switch_port}", "i", "1"], check=True, capture_output=True)
    key = load_key(lab.ssh_key)
    deadline = time.monotonic() + 60
    while True:
        try:
            connection = await asyncssh.connect(pi.ip, username="root", client_keys=[key], known_hosts=None,
                                                agent_path=None, config=None, connect_timeout=2)
            break
        except (OSError, asyncssh.Error):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
    async with connection:
        url = f"{lab.image_url.rstrip('/')}/{image.name}.zst"
        pipeline = (f"set -o pipefail; curl -fsS {shlex.quote(url)} | zstd -dc | "
                    f"dd of={shlex.quote(pi.sd_device)} bs=4M iflag=fullblock oflag=direct status=none")
        began = time.monotonic()
        await connection.run(f"bash -c {shlex.quote(pipeline)}", check=True, timeout=300)
        raw = time.monotonic() - began
        began = time.monotonic()
        read_back = f"head -c {image.stat().st_size} {shlex.quote(pi.sd_device)} | sha256sum"
        await connection.run(f"bash -c {shlex.quote(read_back)}", check=True, timeout=300)
        return raw, time.monotonic() - began


async def one_run(lab, folder: Path, image: Path, index: int) -> tuple[float, float, float]:  # type: ignore[no-untyped-def]
    pi = lab.pis[0]
    agent = AgentConfig(lab, folder, name=f"copy{index}", timeout_scale=0.1).agent().start()
    watch = Watch(agent.address)
    try:
        await watch.add_node(NODE, lab.node_properties(pi))
        await watch.put_environment("big", f"{image.name}.zst")
        for _ in range(2):  # the first computes the image's digest, once
            await watch.start(NODE, "deploy", "big")
            final = await watch.final(NODE, within=300)
            assert final.state == "deployed", final
        await watch.start(NODE, "destroy")
        final = await watch.final(NODE, within=300)
        assert final.state == "destroyed", final
    finally:
        await watch.close()
        agent.terminate()
    raw, read_back = await by_hand(lab, pi, image)
    subprocess.run(["snmpset", "-v2c", "-c", lab.switch.community, lab.switch.address,
                    f"{lab.switch.poe_oid}.{pi.switch_port}", "i", "2"], check=True, capture_output=True)
    return copy_seconds(agent), raw, read_back


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--mib", type=int, default=128, help="incompressible MiB after the lab image")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgebed-lab-copy-") as scratch:
        with lab_process(Path(scratch) / "lab", pis=1) as lab:
            image = Path(lab.image_dir) / "big.img"
            with image.open("wb") as out:
                out.write((Path(lab.image_dir) / "lab-test.img").read_bytes())
                out.write(os.urandom(args.mib * MIB))
            subprocess.run(["zstd", "-q", "-f", "-T1", "-1", str(image), "-o", f"{image}.zst"], check=True)
            size = image.stat().st_size / MIB
            print(f"copy of a {size:.0f} MiB image (.zst), one lab Pi; {load()}")
            runs = []
            for index in range(args.repeat):
                copy, raw, read_back = await one_run(lab, Path(scratch) / f"run{index}", image, index)
                runs.append((copy, raw, read_back))
                print(f"  run {index + 1}/{args.repeat}: driver's copy_image {copy:.2f} s, raw curl|zstd|dd "
                      f"{raw:.2f} s, read back + sha256sum {read_back:.2f} s", flush=True)
    copy, raw, read_back = (statistics.median(run[i] for run in runs) for i in range(3))
    print(f"medians: driver's copy_image {copy:.2f} s ({size / copy:.0f} MiB/s, write + read back + sha256), "
          f"raw {raw:.2f} s ({size / raw:.0f} MiB/s), raw + read back {raw + read_back:.2f} s; "
          f"driver/raw {copy / raw:.2f}, driver/(raw + read back) {copy / (raw + read_back):.2f}; {load()}")


if __name__ == "__main__":
    asyncio.run(main())
