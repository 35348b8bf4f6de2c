"""The `real` drivers: real hardware behind the capability interfaces (nodetypes/interfaces.py).

raspberry (raspberry.py): PoE power over SNMP, network-boot folders, SSH image copy with a
checksum, wipe; configured by a raspberry agent's `[real]` table (config.py), entry point
`raspberry.real`.

sensor (sensor.py): boards on the agent's gateway, flashed, verified, erased, reset and powered
through the argument-list templates of their model, alive when their serial port shows a line
matching a pattern; configured by a sensor agent's `[real]` table (boards.py), entry point
`sensor.real`.
"""
