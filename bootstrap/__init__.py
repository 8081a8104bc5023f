"""The bootstrap: DHT seed, stats aggregation, and its HTTP endpoints."""
