"""edgebed agent."""
