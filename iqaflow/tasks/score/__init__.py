"""The shard loop: read ahead, decode, score per batch, isolate failures, domain steps (medical, print)."""
