"""edgebed controller."""
