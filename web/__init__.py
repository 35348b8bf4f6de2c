"""edgebed web."""
