"""Stream runtime: Kafka in, exact state, durable changelog. Drives the pure core in batches."""
