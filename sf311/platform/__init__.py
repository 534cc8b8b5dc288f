"""The local stack: install, start, stop and health-check the services sf311 needs."""
