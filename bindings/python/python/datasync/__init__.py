"""datasync: an offline-first, multi-tier, reactive entity store with sync.

Entities are plain dicts. Open an instance, take a repository per entity name,
save / get / delete / query, observe changes, sync with other tiers::

    import datasync

    with datasync.open(prefix="app", local=datasync.DirectoryTier("data")) as ds:
        users = ds.repo("User")
        uid = users.save({"name": "Alice"})
        users.observe(uid, lambda user: print("now", user))
        print(users.query(where={"name": "Alice"}, sort=[("name", "asc")]))

Observers and host adapters are called on library threads (the dispatcher for
observers). Open instances are shut down when the interpreter exits.

The generated low-level bindings live in :mod:`datasync._native`.
"""

from __future__ import annotations

import atexit
import ctypes
import functools
import inspect
import json
import json.encoder
import logging
import math
import re
import threading
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _native

try:
    # orjson parses JSON several times faster than the json module (every entity an
    # observer or a read hands back is parsed); it is a dependency of the package,
    # and json.loads does the same work without it (tests/test_python_api.py runs
    # the suite both ways). Encoding stays with the json module: with orjson's
    # encoder a `save` loop measured slower as a whole, though the encoding alone
    # was faster.
    import orjson as _orjson
except ImportError:
    _orjson = None

_loads = json.loads if _orjson is None else _orjson.loads

# `open` is deliberately not here: `from datasync import *` must not shadow the
# builtin. Call it as `datasync.open(...)`.
__all__ = [
    "DataSync",
    "Repository",
    "Subscription",
    "Changes",
    "MemoryTier",
    "DirectoryTier",
    "HttpTier",
    "Persistence",
    "KeyStrategy",
    "GlobalStrategy",
    "DateStrategy",
    "FieldStrategy",
    "ConflictResolver",
    "Deleted",
    "Prefix",
    "Query",
    "SyncStats",
    "Status",
    "PendingWrite",
    "PendingWrites",
    "DataSyncError",
    "InvalidJson",
    "InvalidEntity",
    "InvalidName",
    "InvalidId",
    "InvalidKey",
    "Forbidden",
    "InvalidConfig",
    "InvalidQuery",
    "Adapter",
    "Corrupt",
    "Closed",
    "WouldDeadlock",
    "Callback",
    "Internal",
    "Error",
    "DISPATCHER_THREAD",
    "default_options",
    "parse_instant",
    "format_instant",
    "add_logger",
    "shutdown_all",
]

Entity = Dict[str, Any]
"""An entity: a JSON object with the reserved fields id, createdAt, updatedAt, version."""

SortSpec = Union[str, Tuple[str, str]]
"""A sort field: ``"name"``, ``"name:desc"`` or ``("name", "desc")``."""

DISPATCHER_THREAD = "datasync-dispatcher"
"""The name observers see as ``threading.current_thread().name``."""

_log = logging.getLogger("datasync")


# ---------------------------------------------------------------- errors


class DataSyncError(Exception):
    """Every error the library raises. ``str(e)`` is a sentence; the fields of its
    kind (``reason``, ``id``, ``tier``, ``key``, ...) are attributes. Each kind is a
    subclass that is also the matching builtin, so ``except ValueError`` catches bad
    input and ``except OSError`` a failing tier."""

    def __init__(self, message: str, **fields: Any) -> None:
        super().__init__(message)
        self.message = message
        for name, value in fields.items():
            setattr(self, name, value)


class InvalidJson(DataSyncError, ValueError):
    """A value that JSON cannot hold (NaN, an integer past 64 bits, a lone surrogate)."""


class InvalidEntity(DataSyncError, ValueError):
    """Not a JSON object, or a reserved field of the wrong type."""


class InvalidName(DataSyncError, ValueError):
    """An entity name the library refuses."""


class InvalidId(DataSyncError, ValueError):
    """An id that does not parse, or names a partition its entity cannot be in."""


class InvalidKey(DataSyncError, ValueError):
    """A partition key the strategy cannot use."""


class InvalidConfig(DataSyncError, ValueError):
    """Options :func:`open` refuses."""


class InvalidQuery(DataSyncError, ValueError):
    """Query options that are wrong (a negative limit, an unknown sort order...)."""


class Forbidden(DataSyncError, PermissionError):
    """The key strategy does not let this instance read or write that partition."""


class Adapter(DataSyncError, OSError):
    """A tier's adapter failed (for the cloud tier sync reports it as offline)."""


class Corrupt(DataSyncError, OSError):
    """A tier holds bytes that are not a valid partition or metadata document. An
    ``OSError`` like :class:`Adapter`: both say a tier cannot be used as it is."""


class Closed(DataSyncError, RuntimeError):
    """The instance was closed."""


class WouldDeadlock(DataSyncError, RuntimeError):
    """A blocking call made from the thread it would wait on (``close`` in an observer)."""


class Callback(DataSyncError, RuntimeError):
    """A host callback (strategy, resolver) raised or returned something unusable."""


class Internal(DataSyncError, RuntimeError):
    """A bug in the library."""


_KINDS = {
    cls.__name__: cls
    for cls in (
        InvalidJson, InvalidEntity, InvalidName, InvalidId, InvalidKey, InvalidConfig, InvalidQuery,
        Forbidden, Adapter, Corrupt, Closed, WouldDeadlock, Callback, Internal,
    )
}
for _name, _cls in _KINDS.items():
    # The older spelling `datasync.Error.InvalidId` keeps working.
    setattr(DataSyncError, _name, _cls)

Error = DataSyncError
"""The older name of :class:`DataSyncError`."""


def _from_native(e: Any) -> DataSyncError:
    cls = _KINDS[type(e).__name__]
    names = [p for p in inspect.signature(type(e).__init__).parameters if p != "self"]
    return cls(_native.describe_error(e), **{n: getattr(e, n) for n in names})


def _translated(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Raises the library's errors as :class:`DataSyncError` subclasses."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except _native.DataSyncError as e:
            raise _from_native(e) from None

    return call


_PREFIXES = {InvalidJson: "invalid JSON", InvalidEntity: "invalid entity", InvalidQuery: "invalid query"}


def _refuse(cls: type, reason: str) -> DataSyncError:
    return cls(f"{_PREFIXES[cls]}: {reason}", reason=reason)


# ---------------------------------------------------------------- instants and JSON


_INSTANT = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})\.(\d{3})Z")


def format_instant(when: datetime) -> str:
    """An aware ``datetime`` as the library writes instants
    (``YYYY-MM-DDTHH:MM:SS.sssZ``, UTC, milliseconds; finer digits are dropped).
    A naive datetime is refused: its time zone would be a guess."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{when!r} has no time zone; give one (e.g. tzinfo=timezone.utc)")
    u = when.astimezone(timezone.utc)
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}.{u.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> datetime:
    """An instant the library wrote (``createdAt``, ``updatedAt``, ``Status.last_sync``)
    as an aware UTC ``datetime``."""
    m = _INSTANT.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not an instant like 2026-01-31T12:00:00.000Z")
    y, mo, d, h, mi, sec, ms = (int(g) for g in m.groups())
    return datetime(y, mo, d, h, mi, sec, ms * 1000, tzinfo=timezone.utc)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_instant(value)
    raise TypeError(f"{type(value).__name__} is not a JSON value")


_INT_MIN, _INT_END = -(2**63), 2**64
# Only a run of 19+ digits can be an integer past 64 bits: the walk below is then needed.
_LONG_DIGITS = re.compile(r"\d{19}")


def _bad_value(value: Any, path: str) -> Optional[str]:
    """Why `value` cannot cross as JSON exactly, or None."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return None
    if isinstance(value, int):
        if not _INT_MIN <= value < _INT_END:
            return f"{path} is {value}, outside the 64-bit range JSON numbers keep exactly here (pass it as a string)"
        return None
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return f"{path} is {value}, which JSON cannot hold"
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            return f"{path} is a datetime without a time zone; give one (e.g. tzinfo=timezone.utc)"
        return None
    if isinstance(value, dict):
        for k, v in value.items():
            why = _bad_value(v, f"{path}[{k!r}]")
            if why:
                return why
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            why = _bad_value(v, f"{path}[{i}]")
            if why:
                return why
    return None


# One encoder for every call: `json.dumps` with keyword arguments builds a new
# encoder each time.
_encode = json.JSONEncoder(default=_json_default, allow_nan=False).encode


def _dumps(value: Any, what: str, kind: type = InvalidJson) -> str:
    """`value` as JSON text; aware datetimes become instants. NaN, infinities,
    integers past 64 bits and naive datetimes are refused with `kind`; values JSON
    has no type for raise ``TypeError``."""
    try:
        text = _encode(value)
    except ValueError:
        raise _refuse(kind, _bad_value(value, what) or f"{what} is not JSON") from None
    if _LONG_DIGITS.search(text):
        why = _bad_value(value, what)
        if why:
            raise _refuse(kind, why)
    return text


# ---------------------------------------------------------------- direct calls


# A repository's hot calls (save, save_many, get, delete) go through the library's
# `datasync_direct_*` functions (src/ffi/uniffi/direct.rs): one ctypes call with the
# JSON bytes borrowed and the answer written into a buffer this thread owns, instead
# of the generated method's several foreign calls. Errors are raised by the
# generated `direct_error()`, so they are the same objects as everywhere else.
_lib = _native.datasync._UniffiLib
_OK, _WAITING, _ABSENT = 0, 2, 3  # 1: failed, raised by direct_error()
_ANSWER = 64 * 1024
_size_p = ctypes.POINTER(ctypes.c_size_t)
for _fn in (_lib.datasync_direct_save, _lib.datasync_direct_save_many, _lib.datasync_direct_get):
    _fn.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t, _size_p]
    _fn.restype = ctypes.c_int32
_lib.datasync_direct_delete.argtypes = [ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t, ctypes.POINTER(ctypes.c_uint8)]
_lib.datasync_direct_delete.restype = ctypes.c_int32
_lib.datasync_direct_take.argtypes = [ctypes.c_char_p, ctypes.c_size_t, _size_p]
_lib.datasync_direct_take.restype = ctypes.c_int32
_lib.datasync_direct_release.argtypes = [ctypes.c_uint64]
_lib.datasync_direct_release.restype = None
_direct_save = _lib.datasync_direct_save
_direct_save_many = _lib.datasync_direct_save_many
_direct_get = _lib.datasync_direct_get
_direct_delete = _lib.datasync_direct_delete
_direct_release = _lib.datasync_direct_release


def _release(handle: int) -> None:
    _direct_release(handle)


class _Answers(threading.local):
    """This thread's answer buffer for direct calls."""

    def __init__(self) -> None:
        self.buf = ctypes.create_string_buffer(_ANSWER)
        self.len = ctypes.c_size_t()
        self.len_p = ctypes.pointer(self.len)
        self.flag = ctypes.c_uint8()
        self.flag_p = ctypes.pointer(self.flag)


_answers = _Answers()


def _answer(code: int, a: _Answers) -> bytes:
    """The bytes a direct call answered with `code`; raises its error."""
    if code == _OK:
        return a.buf[: a.len.value]
    if code == _WAITING:
        big = ctypes.create_string_buffer(a.len.value)
        if _lib.datasync_direct_take(big, a.len.value, a.len_p) == _OK:
            return big[: a.len.value]
    _native.direct_error()
    raise Internal("a direct call failed without an error", reason="no error recorded")


def _id_bytes(id: Any) -> bytes:
    if type(id) is not str:
        raise TypeError(f"an id must be a str, not {type(id).__name__}")
    try:
        return id.encode()
    except UnicodeEncodeError:
        raise InvalidId(f"invalid id {id!r}: it is not valid UTF-8", id=id, reason="it is not valid UTF-8") from None


_c_make_encoder = getattr(json.encoder, "c_make_encoder", None)


class _Encoder(threading.local):
    """This thread's compact JSON encoder for direct calls. Where the C encoder is
    there, it is made once and called directly, without the one made per call by
    ``JSONEncoder.encode``; each thread has its own, since the encoder's table of
    containers being encoded must not be shared."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        if _c_make_encoder is None:
            encode = json.JSONEncoder(default=_json_default, allow_nan=False, separators=(",", ":")).encode
            self.chunks = lambda value, _level: (encode(value),)
        else:
            self.chunks = _c_make_encoder(
                {}, _json_default, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
            )


_encoder = _Encoder()

def _encode_direct(value: Any, what: str) -> bytes:
    """`value` as JSON bytes for a direct call, refused as :func:`_dumps` refuses;
    integers past 64 bits are left to the library, which refuses them (see
    :func:`_direct_refusal`)."""
    e = _encoder
    try:
        return "".join(e.chunks(value, 0)).encode()
    except ValueError:
        e.reset()
        raise _refuse(InvalidJson, _bad_value(value, what) or f"{what} is not JSON") from None
    except BaseException:
        # A failed encoding may leave containers in the encoder's table.
        e.reset()
        raise


def _direct_refusal(value: Any, what: str) -> None:
    """After a direct call refused `value`: an InvalidJson naming the field when the
    library refused an integer past 64 bits (it cannot name the field)."""
    why = _bad_value(value, what)
    if why:
        raise _refuse(InvalidJson, why)


# ---------------------------------------------------------------- records


def _record(cls: type, native: Any) -> Any:
    return cls(**{f.name: getattr(native, f.name) for f in fields(cls)})


@dataclass(frozen=True)
class SyncStats:
    """What a sync did."""

    keys_compared: int
    keys_copied: int
    keys_merged: int
    keys_skipped: int
    entities_changed: int
    conflicts: int
    bytes_written: int
    #: Partitions left out: the key strategy does not let this instance read them.
    keys_refused: int
    #: Writes into a shared tier that found another device's update there first.
    write_races: int
    offline: bool
    errors: List[str]


@dataclass(frozen=True)
class Status:
    """The instance's sync state. ``last_sync`` is an instant (see :func:`parse_instant`)."""

    online: bool
    last_sync: Optional[str]
    last_error: Optional[str]
    pending_keys: int
    #: Writes durable locally (or made, without a local tier) but not yet in the cloud.
    pending_cloud: int
    failures: int
    closed: bool


@dataclass(frozen=True)
class PendingWrite:
    """A write not yet where it is going: the entity it saved or deleted."""

    name: str
    id: str
    #: The partition holding the entity.
    key: str


@dataclass(frozen=True)
class PendingWrites:
    """This instance's writes not yet durable locally (``local``) and those durable
    locally but not yet in the cloud (``cloud``), oldest first; each entity once."""

    local: List[PendingWrite]
    cloud: List[PendingWrite]


def _pending(native: Any) -> PendingWrites:
    return PendingWrites(
        local=[_record(PendingWrite, w) for w in native.local],
        cloud=[_record(PendingWrite, w) for w in native.cloud],
    )


def _timeout_ms(seconds: Any) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or math.isnan(seconds) or seconds < 0:
        raise ValueError(f"timeout must be a number of seconds, 0 or more, not {seconds!r}")
    # Infinity, or longer than any wait can matter: as good as forever.
    forever = 2**63
    return forever if math.isinf(seconds) else min(math.ceil(seconds * 1000), forever)


def default_options() -> Dict[str, Any]:
    """The library's defaults for :func:`open`'s timings (seconds),
    ``sync_on_open``, ``format`` and ``partition_bound``, as keyword arguments, read
    from the library itself."""
    native = _native.default_options("app")
    return {
        "store_sync_delay": native.store_sync_delay_ms / 1000,
        "cloud_sync_interval": native.cloud_sync_interval_ms / 1000,
        "retry_base": native.retry_base_ms / 1000,
        "retry_max": native.retry_max_ms / 1000,
        "max_clock_skew": native.max_clock_skew_ms / 1000,
        "sync_on_open": native.sync_on_open,
        "format": native.format,
        "partition_bound": native.partition_bound,
    }


# ---------------------------------------------------------------- tiers


class MemoryTier:
    """An in-memory tier that several instances may share (a stand-in cloud)."""

    def __init__(self) -> None:
        self._native = _native.MemoryTier()

    def __repr__(self) -> str:
        return f"MemoryTier(keys={len(self.keys())})"

    def keys(self) -> List[str]:
        """Every stored key, partitions and metadata, sorted."""
        return list(self._native.keys())

    def read(self, key: str) -> Optional[bytes]:
        """The bytes stored under ``key``."""
        return self._native.read(key)

    def overwrite(self, key: str, data: bytes) -> None:
        """Replaces the bytes under ``key`` behind the library's back (tests)."""
        self._native.overwrite(key, data)


@dataclass(frozen=True)
class DirectoryTier:
    """The crash-safe directory store. ``durable`` syncs every write to disk."""

    path: str
    durable: bool = True


@dataclass(frozen=True)
class HttpTier:
    """The sync server (``datasync-server``) at ``url``, authenticated by the bearer
    ``token``. Timeouts in seconds; ``None``: 5 s to connect, 30 s per read.
    A partition the token may not touch is left out of syncs (counted in
    ``keys_refused``); an unreachable server makes the instance offline."""

    url: str
    token: str = field(repr=False)
    connect_timeout: Optional[float] = None
    read_timeout: Optional[float] = None


class Persistence(ABC):
    """Blob storage supplied by the app: subclass it and pass an instance as
    ``local`` or ``cloud``.

    The library never calls one adapter from two threads at once, also when
    several instances share it (the package serialises calls per adapter object),
    so an adapter need not be thread-safe. Raising any
    exception reports a failure (for the cloud tier: offline); it never crashes
    the library. An adapter must not call back into the library.
    """

    @abstractmethod
    def load(self, key: str) -> Optional[bytes]:
        """The bytes under ``key``, or None when there are none."""

    @abstractmethod
    def store(self, key: str, data: bytes) -> None:
        """Replaces the bytes under ``key``."""

    @abstractmethod
    def clear(self, key: str) -> None:
        """Removes ``key``; removing an absent key is not an error."""

    def keys(self) -> Optional[List[str]]:
        """Every stored key, or None if the adapter cannot list them."""
        return None

    def store_if(self, key: str, expected: Optional[bytes], data: bytes) -> Optional[bool]:
        """The conditional write: stores ``data`` under ``key`` only if the key
        holds exactly ``expected`` now (None: only if it is absent), atomically
        against every other writer; True when stored, False when the key held
        something else (nothing written).

        Optional: the default returns None, "not offered". The library then reads
        the key just before writing it, and two devices syncing a shared tier at the
        same moment can overwrite each other's update until a later sync repairs
        it. A tier shared by several devices should offer it.
        """
        return None


_adapter_locks: "weakref.WeakKeyDictionary[Persistence, threading.Lock]" = weakref.WeakKeyDictionary()
_adapter_locks_lock = threading.Lock()


def _calls_lock(host: Persistence) -> threading.Lock:
    """One lock per adapter object, shared by every instance that uses it: each
    instance serialises its own calls, this serialises them across instances."""
    with _adapter_locks_lock:
        try:
            lock = _adapter_locks.get(host)
            if lock is None:
                lock = _adapter_locks[host] = threading.Lock()
            return lock
        except TypeError:  # not hashable or not weak-referenceable: per instance
            return threading.Lock()


class _PersistenceAdapter(_native.HostPersistence):
    def __init__(self, host: Persistence) -> None:
        self._host = host
        self._calls = _calls_lock(host)

    def load(self, key: str) -> Optional[bytes]:
        with self._calls:
            data = self._host.load(key)
        return None if data is None else bytes(data)

    def store(self, key: str, data: bytes) -> None:
        with self._calls:
            self._host.store(key, bytes(data))

    def clear(self, key: str) -> None:
        with self._calls:
            self._host.clear(key)

    def keys(self) -> Optional[List[str]]:
        with self._calls:
            keys = self._host.keys()
        return None if keys is None else [str(k) for k in keys]

    def store_if(self, key: str, expected: Optional[bytes], data: bytes) -> Optional[bool]:
        with self._calls:
            stored = self._host.store_if(key, None if expected is None else bytes(expected), bytes(data))
        if stored is None or isinstance(stored, bool):
            return stored
        raise TypeError(f"store_if must return True, False or None, not {type(stored).__name__}")


TierLike = Union[MemoryTier, DirectoryTier, HttpTier, Persistence]


def _millis(seconds: Optional[float]) -> Optional[int]:
    return None if seconds is None else max(1, int(round(seconds * 1000)))


def _tier_spec(tier: Optional[TierLike]) -> Optional[Any]:
    if tier is None:
        return None
    if isinstance(tier, MemoryTier):
        return _native.TierSpec.MEMORY(tier._native)
    if isinstance(tier, DirectoryTier):
        return _native.TierSpec.DIRECTORY(str(tier.path), bool(tier.durable))
    if isinstance(tier, HttpTier):
        return _native.TierSpec.HTTP(
            str(tier.url), str(tier.token), _millis(tier.connect_timeout), _millis(tier.read_timeout)
        )
    if isinstance(tier, Persistence):
        return _native.TierSpec.HOST(_PersistenceAdapter(tier))
    raise TypeError(
        f"a tier must be a MemoryTier, DirectoryTier, HttpTier or Persistence, not {type(tier).__name__}"
    )


# ---------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Prefix:
    """Returned by :meth:`KeyStrategy.candidate_keys`: every partition key that
    starts with ``prefix``."""

    prefix: str


class KeyStrategy(ABC):
    """A custom key strategy: subclass it. ``separator`` (one character) and
    ``id_length`` (8 to 64) are read once, when the instance opens; left None, they
    are the library's defaults (those of the built-in strategies)."""

    separator: Optional[str] = None
    id_length: Optional[int] = None

    @abstractmethod
    def logical_key(self, entity_name: str, entity: Entity) -> str:
        """The partition (without prefix) of an entity about to be saved. Pure."""

    @abstractmethod
    def candidate_keys(self, prefix: str, entity_name: str, filter: Any) -> Union[List[str], Prefix]:
        """The partition keys a query reads: only those the caller may read."""


@dataclass(frozen=True)
class GlobalStrategy:
    """One partition per entity name (the default)."""


@dataclass(frozen=True)
class DateStrategy:
    """Partitions by the ``year``, ``month`` or ``day`` of ``createdAt``; query with
    ``filter={"from": ..., "to": ...}``."""

    granularity: str = "month"


@dataclass(frozen=True)
class FieldStrategy:
    """Partitions by the value of one field; query with ``filter={"values": [...]}``."""

    field: str


class _StrategyAdapter(_native.HostKeyStrategy):
    def __init__(self, host: KeyStrategy) -> None:
        self._host = host

    def logical_key(self, entity_name: str, entity_json: str) -> str:
        return str(self._host.logical_key(entity_name, _loads(entity_json)))

    def candidate_keys(self, prefix: str, entity_name: str, filter_json: Optional[str]) -> Any:
        flt = None if filter_json is None else _loads(filter_json)
        keys = self._host.candidate_keys(prefix, entity_name, flt)
        if isinstance(keys, Prefix):
            return _native.CandidateKeys.PREFIX(keys.prefix)
        return _native.CandidateKeys.KEYS([str(k) for k in keys])


StrategyLike = Union[GlobalStrategy, DateStrategy, FieldStrategy, KeyStrategy]

_GRANULARITY = {"year": _native.DateGranularity.YEAR, "month": _native.DateGranularity.MONTH, "day": _native.DateGranularity.DAY}


def _strategy_spec(strategy: Optional[StrategyLike]) -> Optional[Any]:
    if strategy is None or isinstance(strategy, GlobalStrategy):
        return None
    if isinstance(strategy, DateStrategy):
        if strategy.granularity not in _GRANULARITY:
            raise ValueError(f"granularity must be one of {sorted(_GRANULARITY)}, not {strategy.granularity!r}")
        return _native.StrategySpec.DATE(_GRANULARITY[strategy.granularity])
    if isinstance(strategy, FieldStrategy):
        return _native.StrategySpec.FIELD(strategy.field)
    if isinstance(strategy, KeyStrategy):
        id_length = strategy.id_length
        if id_length is not None and (isinstance(id_length, bool) or not isinstance(id_length, int) or id_length < 0):
            raise InvalidConfig(f"invalid configuration: id_length must be a positive int, not {id_length!r}", reason=f"id_length is {id_length!r}")
        return _native.StrategySpec.HOST(_StrategyAdapter(strategy), strategy.separator, id_length)
    raise TypeError(f"unknown strategy {strategy!r}")


# ---------------------------------------------------------------- conflicts


@dataclass(frozen=True)
class Deleted:
    """A deleted entity, as a conflict resolver sees it: the instant of deletion."""

    at: str


Side = Union[Entity, Deleted]


class ConflictResolver(ABC):
    """A custom conflict policy: subclass it. ``resolve`` gets the two differing
    states of one entity (a dict, or :class:`Deleted`) and returns the winner or a
    merge (which must keep the id). It must be deterministic and symmetric. If it
    raises, last-writer-wins decides."""

    @abstractmethod
    def resolve(self, entity_name: str, a: Side, b: Side) -> Side:
        ...


def _side(state: Any) -> Side:
    if state.is_active():
        return _loads(state.entity_json)
    return Deleted(state.deleted_at)


def _state(side: Side) -> Any:
    if isinstance(side, Deleted):
        return _native.SlotState.DELETED(side.at)
    return _native.SlotState.ACTIVE(_dumps(side, "the resolved entity"))


class _ResolverAdapter(_native.HostConflictResolver):
    def __init__(self, host: ConflictResolver) -> None:
        self._host = host

    def resolve(self, entity_name: str, a: Any, b: Any) -> Any:
        return _state(self._host.resolve(entity_name, _side(a), _side(b)))


# ---------------------------------------------------------------- observers


def _call_observer(fn: Callable[..., Any], value: Any) -> None:
    thread = threading.current_thread()
    if thread.name != DISPATCHER_THREAD:
        # Python knows the library's thread only as "Dummy-N": name it once.
        thread.name = DISPATCHER_THREAD
    try:
        fn(value)
    except Exception:  # noqa: BLE001 - an observer failure is logged, never fatal
        _log.exception("datasync observer %r raised", fn)


def _callable(fn: Any) -> Any:
    if not callable(fn):
        raise TypeError(f"an observer must be callable, not {type(fn).__name__}")
    return fn


class _EntityBatch(_native.EntityBatchObserver):
    """The entity observers of one instance: the library hands each dispatcher
    round's deliveries over in one call (one JSON array of ``[handle, entity]``
    pairs), and this calls the observers in that order. A callback runs under
    ``lock``, which ``remove`` takes too: once an observer is removed (from another
    thread, or from inside a callback) it is not called again."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self._fns: Dict[int, Callable[[Optional[Entity]], Any]] = {}
        self._next = 0
        self.native: Any = None

    def add(self, fn: Callable[[Optional[Entity]], Any]) -> int:
        with self.lock:
            self._next += 1
            self._fns[self._next] = fn
            return self._next

    def remove(self, handle: int) -> None:
        with self.lock:
            self._fns.pop(handle, None)

    def on_entities(self, batch_json: str) -> None:
        fns = self._fns
        for handle, value in _loads(batch_json):
            with self.lock:
                fn = fns.get(handle)
                if fn is not None:
                    _call_observer(fn, value)


class _BatchedSubscription:
    """The native subscription of one batched entity observer, and its handle."""

    def __init__(self, native: Any, batch: _EntityBatch, handle: int) -> None:
        self._native = native
        self._batch = batch
        self._handle = handle

    def unsubscribe(self) -> None:
        self._native.unsubscribe()
        self._batch.remove(self._handle)

    def is_active(self) -> bool:
        return bool(self._native.is_active())


class _QueryObserver(_native.QueryObserver):
    def __init__(self, fn: Callable[[List[Entity]], Any]) -> None:
        self._fn = _callable(fn)

    def on_results(self, entities_json: str) -> None:
        # The list arrives as one JSON array: one string across, one parse.
        _call_observer(self._fn, _loads(entities_json))


class Changes:
    """One emission of :meth:`Repository.observe_changes`: what changed since the
    previous one. To apply it to the previous list (empty before the first), by
    position: delete the entries at the indexes ``removed_at`` (from the last), then
    for each upsert in the order given replace the entry at its position when it is
    ``in place``, else insert it there (:meth:`apply` does this; the cost follows
    the change, not the list). By id gives the same list: remove every entity whose
    id is in ``removed`` or among the upserts, then insert each upserted entity at
    its position. ``list()`` gives the whole result instead; it is fetched only when
    asked."""

    __slots__ = ("initial", "count", "removed", "removed_at", "upserted", "in_place", "_handle", "_list")

    def __init__(self, doc: Dict[str, Any], handle: Any) -> None:
        self.initial: bool = doc["initial"]
        """True for the first emission (the whole result, as upserts)."""
        self.count: int = doc["count"]
        """How many entities the result has now."""
        self.removed: List[str] = doc["removed"]
        """Ids no longer in the result."""
        self.removed_at: List[int] = doc["removedAt"]
        """Indexes in the previous list of the entries that leave their place (the
        removed ones and the upserts that moved), ascending."""
        ups = doc["upserted"]
        self.upserted: List[Tuple[int, Entity]] = [(u["position"], u["entity"]) for u in ups]
        """``(position, entity)`` pairs, positions ascending, inserted or updated."""
        self.in_place: List[bool] = [u["inPlace"] for u in ups]
        """For each upsert: it replaces the entry at its position (it was there and
        kept its place) rather than being inserted."""
        self._handle = handle
        self._list: Optional[List[Entity]] = None

    def list(self) -> List[Entity]:
        """The whole result at this emission (parsed once, on the first call)."""
        if self._list is None:
            self._list = _loads(self._handle.list_json())
        return self._list

    def apply(self, previous: List[Entity]) -> List[Entity]:
        """``previous`` (the list after the last emission) changed in place into
        this emission's list; returns it."""
        for at in reversed(self.removed_at):
            del previous[at]
        for (position, entity), replace in zip(self.upserted, self.in_place):
            if replace:
                previous[position] = entity
            else:
                previous.insert(position, entity)
        return previous

    def __repr__(self) -> str:
        return (
            f"Changes(initial={self.initial}, count={self.count}, "
            f"removed={len(self.removed)}, upserted={len(self.upserted)})"
        )


class _ChangeObserver(_native.ChangeObserver):
    def __init__(self, fn: Callable[[Changes], Any]) -> None:
        self._fn = _callable(fn)

    def on_changes(self, changes_json: str, changes: Any) -> None:
        _call_observer(self._fn, Changes(_loads(changes_json), changes))


class _StatusObserver(_native.StatusObserver):
    def __init__(self, fn: Callable[[Status], Any]) -> None:
        self._fn = _callable(fn)

    def on_status(self, status: Any) -> None:
        _call_observer(self._fn, _record(Status, status))


class Subscription:
    """A live observer. It lives until ``unsubscribe()`` (idempotent) or until its
    instance closes, whether or not the handle is kept; once ``unsubscribe()``
    returns the callback is not called again. Also a context manager."""

    def __init__(self, native: Any, owner: "DataSync") -> None:
        self._native = native
        self._owner = owner
        owner._subscriptions.add(self)

    def unsubscribe(self) -> None:
        self._native.unsubscribe()
        self._owner._subscriptions.discard(self)

    @property
    def active(self) -> bool:
        return bool(self._native.is_active())

    def __enter__(self) -> "Subscription":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.unsubscribe()


# ---------------------------------------------------------------- queries


def _sort_field(spec: SortSpec) -> Any:
    if isinstance(spec, str):
        field, _, order = spec.rpartition(":") if spec.endswith((":asc", ":desc")) else (spec, "", "asc")
    else:
        field, order = spec
    order = order.lower()
    if order not in ("asc", "desc", "ascending", "descending"):
        raise _refuse(InvalidQuery, f"sort order must be 'asc' or 'desc', not {order!r}")
    return _native.SortField(field=field, descending=order.startswith("desc"))


def _count(value: Optional[int], what: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    if value < 0:
        raise _refuse(InvalidQuery, f"{what} must be 0 or more, not {value}")
    return value


@dataclass(frozen=True)
class Query:
    """What a query selects; every field is optional. Checked when built."""

    where: Optional[Dict[str, Any]] = None
    """Shallow field equality (``{"team": "core"}``)."""
    sort: Sequence[SortSpec] = ()
    """Sort fields in order, e.g. ``[("age", "desc"), "name"]``."""
    limit: Optional[int] = None
    offset: Optional[int] = None
    ids: Optional[Sequence[str]] = None
    """Only these ids."""
    filter: Any = None
    """The key strategy's filter (e.g. a date range ``{"from": ..., "to": ...}``)."""

    def __post_init__(self) -> None:
        _count(self.limit, "limit")
        _count(self.offset, "offset")
        object.__setattr__(self, "sort", tuple(self.sort or ()))
        if self.ids is not None:
            object.__setattr__(self, "ids", tuple(self.ids))

    def _native(self) -> Any:
        return _native.Query(
            ids=None if self.ids is None else list(self.ids),
            where_json=None if self.where is None else _dumps(self.where, "where", InvalidQuery),
            sort=[_sort_field(s) for s in self.sort],
            limit=self.limit,
            offset=self.offset,
            filter_json=None if self.filter is None else _dumps(self.filter, "filter", InvalidQuery),
        )


def _query(
    where: Union[None, Dict[str, Any], Query] = None,
    sort: Optional[Sequence[SortSpec]] = None,
    limit: Optional[int] = None,
    offset: Optional[int] = None,
    ids: Optional[Iterable[str]] = None,
    filter: Any = None,
) -> Any:
    if isinstance(where, Query):
        return where._native()
    return Query(where, tuple(sort or ()), limit, offset, None if ids is None else tuple(ids), filter)._native()


# ---------------------------------------------------------------- instance


class Repository:
    """The entities of one name. Entities go in and come out as dicts."""

    def __init__(self, native: Any, owner: "DataSync") -> None:
        self._native = native
        # The instance shuts down when its last reference goes; a repository keeps it.
        self._owner = owner
        self._direct = native.direct_handle()
        weakref.finalize(self, _release, self._direct)

    @property
    def name(self) -> str:
        return self._native.name()

    @_translated
    def save(self, entity: Entity) -> str:
        """Saves an entity and returns its id (generated when absent). The dict
        passed in is not changed. Aware ``datetime`` values (e.g. ``createdAt``)
        are stored as instants; NaN, infinities and integers past 64 bits raise
        :class:`InvalidJson`."""
        data = _encode_direct(entity, "the entity")
        a = _answers
        code = _direct_save(self._direct, data, len(data), a.buf, _ANSWER, a.len_p)
        if code == _OK:
            return a.buf[: a.len.value].decode()
        try:
            return _answer(code, a).decode()
        except _native.DataSyncError.InvalidJson:
            _direct_refusal(entity, "the entity")
            raise

    @_translated
    def save_many(self, entities: Iterable[Entity]) -> List[str]:
        """Saves several entities at once (all or none); returns their ids. The batch
        crosses as one JSON array each way."""
        batch = list(entities)
        data = _encode_direct(batch, "the entities")
        a = _answers
        try:
            return _loads(_answer(_direct_save_many(self._direct, data, len(data), a.buf, _ANSWER, a.len_p), a))
        except _native.DataSyncError.InvalidJson:
            _direct_refusal(batch, "the entities")
            raise

    @_translated
    def get(self, id: str) -> Optional[Entity]:
        """The entity with this id, or None."""
        key = _id_bytes(id)
        a = _answers
        code = _direct_get(self._direct, key, len(key), a.buf, _ANSWER, a.len_p)
        if code == _OK:
            return _loads(a.buf[: a.len.value])
        if code == _ABSENT:
            return None
        return _loads(_answer(code, a))

    @_translated
    def delete(self, id: str) -> bool:
        """Deletes an entity; returns whether it existed."""
        key = _id_bytes(id)
        a = _answers
        code = _direct_delete(self._direct, key, len(key), a.flag_p)
        if code != _OK:
            _answer(code, a)
        return bool(a.flag.value)

    @_translated
    def delete_many(self, ids: Iterable[str]) -> int:
        """Deletes several entities; returns how many existed."""
        return int(self._native.delete_many(list(ids)))

    @_translated
    def query(
        self,
        where: Union[None, Dict[str, Any], Query] = None,
        sort: Optional[Sequence[SortSpec]] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        ids: Optional[Iterable[str]] = None,
        filter: Any = None,
    ) -> List[Entity]:
        """The entities matching shallow field equality ``where``, sorted by
        ``sort`` (e.g. ``[("age", "desc"), "name"]``), paged by ``limit``/``offset``;
        ``filter`` is the key strategy's (e.g. a date range). A :class:`Query` may
        be passed instead of the keywords."""
        texts = self._native.query(_query(where, sort, limit, offset, ids, filter))
        return [_loads(t) for t in texts]

    def all(self) -> List[Entity]:
        """Every entity of this name."""
        return self.query()

    @_translated
    def observe(self, id: str, fn: Callable[[Optional[Entity]], Any]) -> Subscription:
        """Calls ``fn`` with the entity's current value (None if absent), then with
        each change (None on delete), on the dispatcher thread. A ``fn`` that is not
        callable is a ``TypeError`` here, not later."""
        batch = self._owner._entity_batch()
        handle = batch.add(_callable(fn))
        try:
            native = self._native.observe_batched(id, batch.native, handle)
        except BaseException:
            batch.remove(handle)
            raise
        return Subscription(_BatchedSubscription(native, batch, handle), self._owner)

    @_translated
    def observe_all(
        self,
        fn: Callable[[List[Entity]], Any],
        where: Union[None, Dict[str, Any], Query] = None,
        sort: Optional[Sequence[SortSpec]] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        ids: Optional[Iterable[str]] = None,
        filter: Any = None,
    ) -> Subscription:
        """Calls ``fn`` with the full matching list, then with the new list after
        changes (bursts coalesced; the last call carries the final state)."""
        observer = _QueryObserver(fn)
        query = _query(where, sort, limit, offset, ids, filter)
        return Subscription(self._native.observe_all(query, observer), self._owner)

    @_translated
    def observe_changes(
        self,
        fn: Callable[[Changes], Any],
        where: Union[None, Dict[str, Any], Query] = None,
        sort: Optional[Sequence[SortSpec]] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        ids: Optional[Iterable[str]] = None,
        filter: Any = None,
    ) -> Subscription:
        """Calls ``fn`` with :class:`Changes`: first the whole matching list (as
        upserts, ``initial`` true), then only what changed (bursts coalesced; the
        last call leaves an applied copy equal to the final state). Costs what
        changed, not the size of the result."""
        observer = _ChangeObserver(fn)
        query = _query(where, sort, limit, offset, ids, filter)
        return Subscription(self._native.observe_changes(query, observer), self._owner)

    def __repr__(self) -> str:
        return f"Repository({self.name!r})"


_live: "weakref.WeakSet[DataSync]" = weakref.WeakSet()
_live_lock = threading.Lock()


class DataSync:
    """An open instance; use :func:`open`. Usable from any thread. ``with`` (or
    :meth:`close`) flushes and stops its threads."""

    def __init__(self, native: Any, prefix: str) -> None:
        self._native = native
        self.prefix = prefix
        self._subscriptions: "set[Subscription]" = set()
        self._batch: Optional[_EntityBatch] = None
        self._batch_lock = threading.Lock()
        with _live_lock:
            _live.add(self)

    def _entity_batch(self) -> _EntityBatch:
        """The instance's entity observers, made at the first ``observe``."""
        with self._batch_lock:
            if self._batch is None:
                batch = _EntityBatch()
                batch.native = self._native.entity_batch(batch)
                self._batch = batch
            return self._batch

    @_translated
    def repo(self, name: str) -> Repository:
        """The repository of one entity name."""
        return Repository(self._native.repo(name), self)

    @_translated
    def sync_now(self) -> SyncStats:
        """Runs the whole sync chain now and returns what it did. An unreachable
        cloud shows in ``stats.offline`` / ``stats.errors``, not as an exception."""
        return _record(SyncStats, self._native.sync_now())

    @_translated
    def flush(self) -> None:
        """Returns once every earlier write is durable in the tier below the store."""
        self._native.flush()

    @_translated
    def drain_events(self) -> None:
        """Returns once observers have been called for every earlier change."""
        self._native.drain_events()

    @property
    def status(self) -> Status:
        """Online state, last sync, pending keys, failures, closed."""
        return _record(Status, self._native.status())

    @_translated
    def pending_writes(self) -> PendingWrites:
        """The writes not yet durable locally and those not yet in the cloud. Kept
        in memory: writes made before this instance was opened are not listed."""
        return _pending(self._native.pending_writes())

    @_translated
    def wait_in_cloud(self, name: str, id: str, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds until the latest write of entity ``id`` of
        ``name`` is in the cloud: True when it is (at once when nothing of it is
        pending), False when the time ran out. It only waits (call :meth:`sync_now`
        to hurry). Raises :class:`WouldDeadlock` from an observer or adapter callback
        and :class:`InvalidConfig` without a cloud tier."""
        return bool(self._native.wait_in_cloud(name, id, _timeout_ms(timeout)))

    @_translated
    def wait_all_in_cloud(self, timeout: float) -> bool:
        """Waits up to ``timeout`` seconds until every earlier write is in the cloud;
        as :meth:`wait_in_cloud` otherwise."""
        return bool(self._native.wait_all_in_cloud(_timeout_ms(timeout)))

    @_translated
    def observe_status(self, fn: Callable[[Status], Any]) -> Subscription:
        """Calls ``fn`` with the current :class:`Status`, then with the new one after
        every chain sync (success or failure) and after a store sync that changed
        ``pending_cloud``, on the dispatcher thread."""
        return Subscription(self._native.observe_status(_StatusObserver(fn)), self)

    @_translated
    def tier_keys(self, tier: str) -> List[str]:
        """The partition keys of ``"store"``, ``"local"`` or ``"cloud"``."""
        kinds = {"store": _native.TierKind.STORE, "local": _native.TierKind.LOCAL, "cloud": _native.TierKind.CLOUD}
        if tier not in kinds:
            raise ValueError(f"tier must be one of {sorted(kinds)}, not {tier!r}")
        return list(self._native.tier_keys(kinds[tier]))

    @_translated
    def audit(self) -> List[str]:
        """Disagreements between every tier's metadata and its partitions (empty
        when all is well)."""
        return list(self._native.audit())

    @_translated
    def close(self) -> None:
        """Flushes, runs queued observer calls, stops the threads. Idempotent;
        other calls raise :class:`Closed` afterwards. Calling it from an observer
        raises :class:`WouldDeadlock`."""
        self._native.shutdown()
        self._subscriptions.clear()
        with _live_lock:
            _live.discard(self)

    @property
    def closed(self) -> bool:
        return bool(self._native.status().closed)

    def __enter__(self) -> "DataSync":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"DataSync(prefix={self.prefix!r})"


def _format(format: Optional[int]) -> Optional[int]:
    if format is None:
        return None
    if isinstance(format, bool) or not isinstance(format, int) or format not in (1, 2):
        raise InvalidConfig(f"invalid configuration: format must be 1 or 2, not {format!r}", reason=f"format is {format!r}")
    return format


def _partition_bound(bound: Optional[int]) -> Optional[int]:
    if bound is None:
        return None
    if isinstance(bound, bool) or not isinstance(bound, int) or bound < 0:
        raise InvalidConfig(f"invalid configuration: partition_bound must be a number of entities, 0 or more, not {bound!r}", reason=f"partition_bound is {bound!r}")
    return bound


@_translated
def open(
    prefix: str,
    *,
    local: Optional[TierLike] = None,
    cloud: Optional[TierLike] = None,
    strategy: Optional[StrategyLike] = None,
    resolver: Optional[ConflictResolver] = None,
    store_sync_delay: Optional[float] = None,
    cloud_sync_interval: Optional[float] = None,
    retry_base: Optional[float] = None,
    retry_max: Optional[float] = None,
    max_clock_skew: Optional[float] = None,
    sync_on_open: Optional[bool] = None,
    format: Optional[int] = None,
    partition_bound: Optional[int] = None,
) -> DataSync:
    """Opens an instance. ``local`` and ``cloud`` are optional tiers (a
    :class:`MemoryTier`, a :class:`DirectoryTier`, an :class:`HttpTier` or a
    :class:`Persistence` subclass); durations are in seconds, and each one left out (None) keeps the
    library's default (:func:`default_options` lists them). ``format`` is how the
    blob tiers keep partitions: 2 (the default), write-once pieces; 1, one
    document per partition, for a cloud shared with devices that do not read
    format 2 yet. ``partition_bound`` is about how many entities a partition
    holds before new ones go to sub-partitions (1,000 by default; 0 keeps every
    partition whole)."""

    def ms(seconds: Optional[float], what: str) -> Optional[int]:
        if seconds is None:
            return None
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or seconds < 0:
            raise InvalidConfig(f"invalid configuration: {what} must be a number of seconds, 0 or more, not {seconds!r}", reason=f"{what} is {seconds!r}")
        return int(round(seconds * 1000))

    options = _native.OpenOptions(
        prefix=prefix,
        local=_tier_spec(local),
        cloud=_tier_spec(cloud),
        strategy=_strategy_spec(strategy),
        resolver=None if resolver is None else _ResolverAdapter(resolver),
        store_sync_delay_ms=ms(store_sync_delay, "store_sync_delay"),
        cloud_sync_interval_ms=ms(cloud_sync_interval, "cloud_sync_interval"),
        retry_base_ms=ms(retry_base, "retry_base"),
        retry_max_ms=ms(retry_max, "retry_max"),
        max_clock_skew_ms=ms(max_clock_skew, "max_clock_skew"),
        sync_on_open=None if sync_on_open is None else bool(sync_on_open),
        format=_format(format),
        partition_bound=_partition_bound(partition_bound),
    )
    return DataSync(_native.DataSync.open(options), prefix)


# ---------------------------------------------------------------- logging


_LEVELS = {
    "trace": _native.LogLevel.TRACE,
    "debug": _native.LogLevel.DEBUG,
    "info": _native.LogLevel.INFO,
    "warn": _native.LogLevel.WARN,
    "warning": _native.LogLevel.WARN,
    "error": _native.LogLevel.ERROR,
}

_PY_LEVELS = {
    _native.LogLevel.TRACE: logging.DEBUG,
    _native.LogLevel.DEBUG: logging.DEBUG,
    _native.LogLevel.INFO: logging.INFO,
    _native.LogLevel.WARN: logging.WARNING,
    _native.LogLevel.ERROR: logging.ERROR,
}


class _Logger(_native.HostLogger):
    def __init__(self, fn: Callable[[str, str, str], Any]) -> None:
        self._fn = fn

    def log(self, level: Any, target: str, text: str) -> None:
        try:
            self._fn(level.name.lower(), target, text)
        except Exception:  # noqa: BLE001 - a failing logger has nowhere to report
            pass


_loggers: List[Any] = []


class LoggerHandle:
    """An installed logger; ``remove()`` uninstalls it."""

    def __init__(self, native: Any) -> None:
        self._native = native

    def remove(self) -> None:
        self._native.remove()


def add_logger(fn: Optional[Callable[[str, str, str], Any]] = None, level: str = "info") -> LoggerHandle:
    """Forwards the library's log records at ``level`` and above to
    ``fn(level, target, text)``; by default to the ``datasync`` :mod:`logging`
    logger. Called on whichever thread logs; must not call into the library."""

    def to_logging(lvl: str, target: str, text: str) -> None:
        logging.getLogger(target.replace("::", ".")).log(_PY_LEVELS[_LEVELS[lvl]], text)

    if fn is not None and not callable(fn):
        raise TypeError(f"a logger must be callable, not {type(fn).__name__}")
    if level not in _LEVELS:
        raise ValueError(f"level must be one of {sorted(_LEVELS)}, not {level!r}")
    native = _native.add_logger(_Logger(fn or to_logging), _LEVELS[level])
    with _live_lock:
        _loggers.append(native)
    return LoggerHandle(native)


# ---------------------------------------------------------------- exit


def shutdown_all() -> None:
    """Closes every open instance and removes every logger. Runs at interpreter
    exit: a library thread entering Python while the interpreter finalises would
    abort the process."""
    with _live_lock:
        instances = list(_live)
        loggers = list(_loggers)
        _loggers.clear()
    for ds in instances:
        try:
            ds.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            _log.exception("closing %r at exit failed", ds)
    for native in loggers:
        native.remove()


atexit.register(shutdown_all)
