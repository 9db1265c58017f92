"""sam2_edge.runtimes: one streaming tracker, many backends. numpy + the backend's runtime
only; importing this package never imports torch."""
