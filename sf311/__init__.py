"""sf311: a streaming lakehouse for San Francisco's 311 service requests."""

__version__ = "0.1.0"
