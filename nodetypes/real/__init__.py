"""The `real` drivers: real hardware behind the capability interfaces (nodetypes/interfaces.py).

Only raspberry has one so far (raspberry.py: PoE power over SNMP, network-boot folders, SSH
image copy with a checksum, wipe), offered through the `edgebed.drivers` entry point
`raspberry.real` and configured by the agent's `[real]` table (config.py).
"""
