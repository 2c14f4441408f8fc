"""The bundle's functions: one file an endpoint or worker, declared in ``functions.yaml``."""
