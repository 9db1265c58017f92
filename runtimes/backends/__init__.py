"""Runtime backends: each only runs the four stage graphs."""
