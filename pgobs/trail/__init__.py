"""The trail of every event and outcome: searching it, and shipping it to Elasticsearch."""
