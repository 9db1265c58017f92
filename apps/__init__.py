"""Applications built on sam2-edge (run from a checkout of the repository)."""
