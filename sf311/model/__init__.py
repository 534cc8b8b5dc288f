"""Resolution-time model: features, training, export and JVM-free scoring."""
