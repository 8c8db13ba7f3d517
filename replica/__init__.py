"""Read replicas that follow a backup in S3, and time travel on the replica's file.

Depends on `timemachine` (layout, codecs, store) and `denokv` (engine, server).
"""
