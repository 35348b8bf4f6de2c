"""The `real` drivers: real hardware behind the capability interfaces (nodetypes/interfaces.py),
configured by the agent's `[real]` table, whose schema depends on the node type (config.py).

- raspberry.py (`raspberry.real`): PoE power over SNMP, network-boot folders, SSH image copy with
  a checksum, wipe.
- servers.py (`node.real`): power and boot device through a BMC (bmc.py: IPMI or Redfish), a
  per-MAC iPXE entry (pxe.py), and the raspberry driver's image, system and setup parts on the
  server's disk.
- sensor.py (`sensor.real`): boards on the agent's gateway, flashed, verified, erased, reset and
  powered through the argument-list templates of their model (boards.py, whose [real] schema it
  has), alive when their serial port shows a line matching a pattern (serialwatch.py); each
  command a job that outlives the agent (boardjobs.py).
"""
