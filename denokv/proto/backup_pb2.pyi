from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class BackupKvMutationKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MK_UNSPECIFIED: _ClassVar[BackupKvMutationKind]
    MK_SET: _ClassVar[BackupKvMutationKind]
    MK_CLEAR: _ClassVar[BackupKvMutationKind]
    MK_SUM: _ClassVar[BackupKvMutationKind]
    MK_MAX: _ClassVar[BackupKvMutationKind]
    MK_MIN: _ClassVar[BackupKvMutationKind]

class BackupQueueChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    QC_UNSPECIFIED: _ClassVar[BackupQueueChangeKind]
    QC_QUEUE_PUT: _ClassVar[BackupQueueChangeKind]
    QC_QUEUE_DELETE: _ClassVar[BackupQueueChangeKind]
    QC_RUNNING_PUT: _ClassVar[BackupQueueChangeKind]
    QC_RUNNING_DELETE: _ClassVar[BackupQueueChangeKind]
MK_UNSPECIFIED: BackupKvMutationKind
MK_SET: BackupKvMutationKind
MK_CLEAR: BackupKvMutationKind
MK_SUM: BackupKvMutationKind
MK_MAX: BackupKvMutationKind
MK_MIN: BackupKvMutationKind
QC_UNSPECIFIED: BackupQueueChangeKind
QC_QUEUE_PUT: BackupQueueChangeKind
QC_QUEUE_DELETE: BackupQueueChangeKind
QC_RUNNING_PUT: BackupQueueChangeKind
QC_RUNNING_DELETE: BackupQueueChangeKind

class BackupSnapshotRange(_message.Message):
    __slots__ = ("data_list", "metadata_list", "queue_rows")
    DATA_LIST_FIELD_NUMBER: _ClassVar[int]
    METADATA_LIST_FIELD_NUMBER: _ClassVar[int]
    QUEUE_ROWS_FIELD_NUMBER: _ClassVar[int]
    data_list: _containers.RepeatedCompositeFieldContainer[BackupKvPair]
    metadata_list: _containers.RepeatedCompositeFieldContainer[BackupKvPair]
    queue_rows: _containers.RepeatedCompositeFieldContainer[BackupQueueChange]
    def __init__(self, data_list: _Optional[_Iterable[_Union[BackupKvPair, _Mapping]]] = ..., metadata_list: _Optional[_Iterable[_Union[BackupKvPair, _Mapping]]] = ..., queue_rows: _Optional[_Iterable[_Union[BackupQueueChange, _Mapping]]] = ...) -> None: ...

class BackupKvPair(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    value: bytes
    def __init__(self, key: _Optional[bytes] = ..., value: _Optional[bytes] = ...) -> None: ...

class BackupMutationRange(_message.Message):
    __slots__ = ("entries", "timestamp_ms", "queue_changes", "previous_versionstamp")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    QUEUE_CHANGES_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_VERSIONSTAMP_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[BackupReplicationLogEntry]
    timestamp_ms: int
    queue_changes: _containers.RepeatedCompositeFieldContainer[BackupQueueChange]
    previous_versionstamp: bytes
    def __init__(self, entries: _Optional[_Iterable[_Union[BackupReplicationLogEntry, _Mapping]]] = ..., timestamp_ms: _Optional[int] = ..., queue_changes: _Optional[_Iterable[_Union[BackupQueueChange, _Mapping]]] = ..., previous_versionstamp: _Optional[bytes] = ...) -> None: ...

class BackupReplicationLogEntry(_message.Message):
    __slots__ = ("versionstamp", "kind", "key", "value", "value_encoding", "expire_at_ms")
    VERSIONSTAMP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    VALUE_ENCODING_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_AT_MS_FIELD_NUMBER: _ClassVar[int]
    versionstamp: bytes
    kind: BackupKvMutationKind
    key: bytes
    value: bytes
    value_encoding: int
    expire_at_ms: int
    def __init__(self, versionstamp: _Optional[bytes] = ..., kind: _Optional[_Union[BackupKvMutationKind, str]] = ..., key: _Optional[bytes] = ..., value: _Optional[bytes] = ..., value_encoding: _Optional[int] = ..., expire_at_ms: _Optional[int] = ...) -> None: ...

class BackupQueueChange(_message.Message):
    __slots__ = ("versionstamp", "kind", "ts", "id", "data", "backoff_schedule", "keys_if_undelivered", "commit_timestamp_ms")
    VERSIONSTAMP_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TS_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    BACKOFF_SCHEDULE_FIELD_NUMBER: _ClassVar[int]
    KEYS_IF_UNDELIVERED_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    versionstamp: bytes
    kind: BackupQueueChangeKind
    ts: int
    id: str
    data: bytes
    backoff_schedule: str
    keys_if_undelivered: bytes
    commit_timestamp_ms: int
    def __init__(self, versionstamp: _Optional[bytes] = ..., kind: _Optional[_Union[BackupQueueChangeKind, str]] = ..., ts: _Optional[int] = ..., id: _Optional[str] = ..., data: _Optional[bytes] = ..., backoff_schedule: _Optional[str] = ..., keys_if_undelivered: _Optional[bytes] = ..., commit_timestamp_ms: _Optional[int] = ...) -> None: ...
