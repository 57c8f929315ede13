"""The rollout report for product owners (`adoptstream report`): reads Prometheus and the rollout plans,
writes one self-contained HTML page or serves it live. It reads nothing else (no worker, no Kafka)."""
