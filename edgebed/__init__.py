"""edgebed: reservation and deployment manager for shared hardware testbeds."""
