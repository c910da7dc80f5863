"""Delivery protection: dedup fingerprints, the enrichment cache, and the Redis they may use."""
