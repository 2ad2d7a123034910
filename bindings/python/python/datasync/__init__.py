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
import json
import logging
import threading
import weakref
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _native

__all__ = [
    "open",
    "DataSync",
    "Repository",
    "Subscription",
    "MemoryTier",
    "DirectoryTier",
    "Persistence",
    "KeyStrategy",
    "GlobalStrategy",
    "DateStrategy",
    "FieldStrategy",
    "ConflictResolver",
    "Deleted",
    "Prefix",
    "SyncStats",
    "Status",
    "Error",
    "add_logger",
    "shutdown_all",
]

Entity = Dict[str, Any]
"""An entity: a JSON object with the reserved fields id, createdAt, updatedAt, version."""

SortSpec = Union[str, Tuple[str, str]]
"""A sort field: ``"name"``, ``"name:desc"`` or ``("name", "desc")``."""

Error = _native.DataSyncError
"""Every error the library raises; subclasses name the kind (``Error.InvalidId``, ...)."""

SyncStats = _native.SyncStats
Status = _native.Status

_log = logging.getLogger("datasync")


# ---------------------------------------------------------------- tiers


class MemoryTier:
    """An in-memory tier that several instances may share (a stand-in cloud)."""

    def __init__(self) -> None:
        self._native = _native.MemoryTier()

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


class Persistence(ABC):
    """Blob storage supplied by the app: subclass it and pass an instance as
    ``local`` or ``cloud``.

    The library never calls one adapter from two threads at once. Raising any
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


class _PersistenceAdapter(_native.HostPersistence):
    def __init__(self, host: Persistence) -> None:
        self._host = host

    def load(self, key: str) -> Optional[bytes]:
        data = self._host.load(key)
        return None if data is None else bytes(data)

    def store(self, key: str, data: bytes) -> None:
        self._host.store(key, bytes(data))

    def clear(self, key: str) -> None:
        self._host.clear(key)

    def keys(self) -> Optional[List[str]]:
        keys = self._host.keys()
        return None if keys is None else [str(k) for k in keys]


TierLike = Union[MemoryTier, DirectoryTier, Persistence]


def _tier_spec(tier: Optional[TierLike]) -> Optional[Any]:
    if tier is None:
        return None
    if isinstance(tier, MemoryTier):
        return _native.TierSpec.MEMORY(tier._native)
    if isinstance(tier, DirectoryTier):
        return _native.TierSpec.DIRECTORY(str(tier.path), tier.durable)
    if isinstance(tier, Persistence):
        return _native.TierSpec.HOST(_PersistenceAdapter(tier))
    raise TypeError(f"a tier must be a MemoryTier, DirectoryTier or Persistence, not {type(tier).__name__}")


# ---------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Prefix:
    """Returned by :meth:`KeyStrategy.candidate_keys`: every partition key that
    starts with ``prefix``."""

    prefix: str


class KeyStrategy(ABC):
    """A custom key strategy: subclass it. ``separator`` and ``id_length`` are read
    once, when the instance opens."""

    separator: str = "."
    id_length: int = 16

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
        return str(self._host.logical_key(entity_name, json.loads(entity_json)))

    def candidate_keys(self, prefix: str, entity_name: str, filter_json: Optional[str]) -> Any:
        flt = None if filter_json is None else json.loads(filter_json)
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
        return _native.StrategySpec.HOST(_StrategyAdapter(strategy), strategy.separator, int(strategy.id_length))
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
        return json.loads(state.entity_json)
    return Deleted(state.deleted_at)


def _state(side: Side) -> Any:
    if isinstance(side, Deleted):
        return _native.SlotState.DELETED(side.at)
    return _native.SlotState.ACTIVE(json.dumps(side))


class _ResolverAdapter(_native.HostConflictResolver):
    def __init__(self, host: ConflictResolver) -> None:
        self._host = host

    def resolve(self, entity_name: str, a: Any, b: Any) -> Any:
        return _state(self._host.resolve(entity_name, _side(a), _side(b)))


# ---------------------------------------------------------------- observers


def _call_observer(fn: Callable[..., Any], value: Any) -> None:
    try:
        fn(value)
    except Exception:  # noqa: BLE001 - an observer failure is logged, never fatal
        _log.exception("datasync observer %r raised", fn)


class _EntityObserver(_native.EntityObserver):
    def __init__(self, fn: Callable[[Optional[Entity]], Any]) -> None:
        self._fn = fn

    def on_change(self, entity_json: Optional[str]) -> None:
        _call_observer(self._fn, None if entity_json is None else json.loads(entity_json))


class _QueryObserver(_native.QueryObserver):
    def __init__(self, fn: Callable[[List[Entity]], Any]) -> None:
        self._fn = fn

    def on_results(self, entities_json: str) -> None:
        # The list arrives as one JSON array: one string across, one parse.
        _call_observer(self._fn, json.loads(entities_json))


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
        raise ValueError(f"sort order must be 'asc' or 'desc', not {order!r}")
    return _native.SortField(field=field, descending=order.startswith("desc"))


def _query(
    where: Optional[Dict[str, Any]] = None,
    sort: Optional[Sequence[SortSpec]] = None,
    limit: Optional[int] = None,
    offset: Optional[int] = None,
    ids: Optional[Iterable[str]] = None,
    filter: Any = None,
) -> Any:
    return _native.Query(
        ids=None if ids is None else list(ids),
        where_json=None if where is None else json.dumps(where),
        sort=[_sort_field(s) for s in (sort or [])],
        limit=limit,
        offset=offset,
        filter_json=None if filter is None else json.dumps(filter),
    )


# ---------------------------------------------------------------- instance


class Repository:
    """The entities of one name. Entities go in and come out as dicts."""

    def __init__(self, native: Any, owner: "DataSync") -> None:
        self._native = native
        # The instance shuts down when its last reference goes; a repository keeps it.
        self._owner = owner

    @property
    def name(self) -> str:
        return self._native.name()

    def save(self, entity: Entity) -> str:
        """Saves an entity and returns its id (generated when absent). The dict
        passed in is not changed."""
        return self._native.save(json.dumps(entity))

    def save_many(self, entities: Iterable[Entity]) -> List[str]:
        """Saves several entities at once (all or none); returns their ids."""
        return list(self._native.save_many([json.dumps(e) for e in entities]))

    def get(self, id: str) -> Optional[Entity]:
        """The entity with this id, or None."""
        text = self._native.get(id)
        return None if text is None else json.loads(text)

    def delete(self, id: str) -> bool:
        """Deletes an entity; returns whether it existed."""
        return self._native.delete(id)

    def delete_many(self, ids: Iterable[str]) -> int:
        """Deletes several entities; returns how many existed."""
        return int(self._native.delete_many(list(ids)))

    def query(
        self,
        where: Optional[Dict[str, Any]] = None,
        sort: Optional[Sequence[SortSpec]] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        ids: Optional[Iterable[str]] = None,
        filter: Any = None,
    ) -> List[Entity]:
        """The entities matching shallow field equality ``where``, sorted by
        ``sort`` (e.g. ``[("age", "desc"), "name"]``), paged by ``limit``/``offset``;
        ``filter`` is the key strategy's (e.g. a date range)."""
        texts = self._native.query(_query(where, sort, limit, offset, ids, filter))
        return [json.loads(t) for t in texts]

    def all(self) -> List[Entity]:
        """Every entity of this name."""
        return self.query()

    def observe(self, id: str, fn: Callable[[Optional[Entity]], Any]) -> Subscription:
        """Calls ``fn`` with the entity's current value (None if absent), then with
        each change (None on delete), on the dispatcher thread."""
        return Subscription(self._native.observe(id, _EntityObserver(fn)), self._owner)

    def observe_all(
        self,
        fn: Callable[[List[Entity]], Any],
        where: Optional[Dict[str, Any]] = None,
        sort: Optional[Sequence[SortSpec]] = None,
        limit: Optional[int] = None,
        offset: Optional[int] = None,
        ids: Optional[Iterable[str]] = None,
        filter: Any = None,
    ) -> Subscription:
        """Calls ``fn`` with the full matching list, then with the new list after
        changes (bursts coalesced; the last call carries the final state)."""
        query = _query(where, sort, limit, offset, ids, filter)
        return Subscription(self._native.observe_all(query, _QueryObserver(fn)), self._owner)

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
        with _live_lock:
            _live.add(self)

    def repo(self, name: str) -> Repository:
        """The repository of one entity name."""
        return Repository(self._native.repo(name), self)

    def sync_now(self) -> SyncStats:
        """Runs the whole sync chain now and returns what it did. An unreachable
        cloud shows in ``stats.offline`` / ``stats.errors``, not as an exception."""
        return self._native.sync_now()

    def flush(self) -> None:
        """Returns once every earlier write is durable in the tier below the store."""
        self._native.flush()

    def drain_events(self) -> None:
        """Returns once observers have been called for every earlier change."""
        self._native.drain_events()

    @property
    def status(self) -> Status:
        """Online state, last sync, pending keys, failures, closed."""
        return self._native.status()

    def tier_keys(self, tier: str) -> List[str]:
        """The partition keys of ``"store"``, ``"local"`` or ``"cloud"``."""
        kind = {"store": _native.TierKind.STORE, "local": _native.TierKind.LOCAL, "cloud": _native.TierKind.CLOUD}[tier]
        return list(self._native.tier_keys(kind))

    def audit(self) -> List[str]:
        """Disagreements between every tier's metadata and its partitions (empty
        when all is well)."""
        return list(self._native.audit())

    def close(self) -> None:
        """Flushes, runs queued observer calls, stops the threads. Idempotent;
        other calls raise ``Error.Closed`` afterwards. Calling it from an observer
        raises ``Error.WouldDeadlock``."""
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


def open(
    prefix: str,
    *,
    local: Optional[TierLike] = None,
    cloud: Optional[TierLike] = None,
    strategy: Optional[StrategyLike] = None,
    resolver: Optional[ConflictResolver] = None,
    store_sync_delay: float = 0.05,
    cloud_sync_interval: float = 30.0,
    retry_base: float = 1.0,
    retry_max: float = 300.0,
    max_clock_skew: float = 300.0,
    sync_on_open: bool = True,
) -> DataSync:
    """Opens an instance. ``local`` and ``cloud`` are optional tiers (a
    :class:`MemoryTier`, a :class:`DirectoryTier` or a :class:`Persistence`
    subclass); durations are in seconds."""

    def ms(seconds: float) -> int:
        return max(0, int(round(seconds * 1000)))

    options = _native.OpenOptions(
        prefix=prefix,
        local=_tier_spec(local),
        cloud=_tier_spec(cloud),
        strategy=_strategy_spec(strategy),
        resolver=None if resolver is None else _ResolverAdapter(resolver),
        store_sync_delay_ms=ms(store_sync_delay),
        cloud_sync_interval_ms=ms(cloud_sync_interval),
        retry_base_ms=ms(retry_base),
        retry_max_ms=ms(retry_max),
        max_clock_skew_ms=ms(max_clock_skew),
        sync_on_open=sync_on_open,
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
