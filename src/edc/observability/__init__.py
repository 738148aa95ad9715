"""What the platform tells its operators: structured logs, Prometheus metrics, request timing."""
