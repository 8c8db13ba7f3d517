"""Backups in S3: the object layout, codecs, the store interface, the shipper, restore,
and time travel (redo/undo) on a replica's file.

Depends on `denokv` (engine, protobuf schemas); `denokv` knows nothing of this.
"""
