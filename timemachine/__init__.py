"""Backups in S3: the object layout, codecs, the store interface, the shipper and restore.

Depends on `denokv` (engine, protobuf schemas); `denokv` knows nothing of this.
"""
