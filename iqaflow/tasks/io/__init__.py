"""Listing, manifests, shard plans, reading bytes, storage and atomic commits."""
