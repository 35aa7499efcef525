"""The driver side of lfme-ray: config, run directory, manifest, stage graph, CLI."""
