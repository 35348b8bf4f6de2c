"""The `sim` driver: simulated hardware (hardware.py) behind the capability interfaces
(interfaces.py), composed per node type (raspberry.py, node.py, sensor.py) and offered through
the `edgebed.drivers` entry points like any other driver.
"""
