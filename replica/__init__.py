"""Read replicas that follow a backup in S3, and forward writes to the primary.

Depends on `timemachine` (layout, codecs, store, time travel) and `denokv` (engine, server).
"""
