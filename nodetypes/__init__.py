"""edgebed nodetypes."""
