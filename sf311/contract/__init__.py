"""The case contract every stage shares: schema files, wire frame, registry and the city."""
