"""Where downloaded files go: a local folder, an object store (S3, GCS, Azure, memory), or yours.

``fetch(..., dest=...)`` takes a folder path, an object-store URL (``s3://bucket/prefix``,
``gs://``, ``az://``, ``memory://``) or any :class:`Storage`.  A local folder never goes through
this interface: the worker writes it with its own fast path (unnamed files, resume records,
segments, locks shared between processes).  Every other storage gets the body as a stream:

- ``write`` receives an async iterator of chunks; the worker counts and hashes them as they pass
  and raises from inside the iterator when the body is short or the checksum is wrong, so a
  storage must treat an exception from the iterator as "store nothing".
- An object appears only once complete: ``ObjectStorage`` completes a multipart upload only
  after the iterator has ended (verified) and aborts it on any exception, cancellation included.
- A re-run asks ``stat`` first: an object that is there (with the expected checksum, recorded
  as object metadata, when the file has one) costs no request to the HTTP server.
- Nothing resumes: a failed or killed upload starts again from byte 0 on the next attempt (an
  aborted multipart upload leaves no object; a killed process leaves an incomplete upload that
  a bucket lifecycle rule should expire).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

from . import _files
from ._errors import FileSystemError, InvalidConfigError

if TYPE_CHECKING:
    from obstore.store import ObjectStore

#: Object metadata that records the verified checksum (``alg:hex``) of an upload.
CHECKSUM_ATTRIBUTE = "nbdl-checksum"
#: Bytes per part of a multipart upload (S3's minimum is 5 MiB, its maximum part count 10,000).
DEFAULT_PART_SIZE = 8 * 1024 * 1024
#: Parts uploaded at once per file: memory per file is about part_size * (concurrency + 1).
DEFAULT_CONCURRENCY = 4
#: URL schemes that name an object store (obstore's ``from_url`` understands them).
OBJECT_SCHEMES = frozenset({"s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl", "memory"})
_INSTALL_HINT = "object-store destinations need obstore: pip install 'nbdl[cloud]'"


@dataclass(frozen=True, slots=True)
class StoredObject:
    """What a storage knows of a stored file: its size and, if recorded, its checksum."""

    size: int
    #: ``"alg:hex"`` as verified when it was stored, or None.
    checksum: str | None = None


@runtime_checkable
class Storage(Protocol):
    """A destination for downloaded files (see the module docstring for the contract)."""

    def location(self, name: str) -> str:
        """Where the file ``name`` goes: a path or a URL, shown to users and in results."""

    async def stat(self, name: str) -> StoredObject | None:
        """The stored file ``name``, or None when there is none."""

    async def write(
        self, name: str, chunks: AsyncIterator[bytes], *, checksum: str | None = None
    ) -> None:
        """Store every chunk as ``name``, all or nothing.

        An exception raised by ``chunks`` (a short body, a checksum mismatch) or a cancel must
        leave no file and propagate unchanged.  ``checksum`` is the verified ``"alg:hex"`` to
        record for ``stat`` (it is verified by the time ``chunks`` ends).
        """


class FolderStorage:
    """A local folder as a :class:`Storage`.

    ``fetch(..., dest=FolderStorage(path))`` is the same as ``dest=path``: the worker writes
    local folders with its own faster path (resume, segments, unnamed files).  This class is
    the reference implementation of the interface, for code that stores files itself.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder).expanduser()

    def location(self, name: str) -> str:
        """The final path of ``name``."""
        return str(self.folder / name)

    async def stat(self, name: str) -> StoredObject | None:
        """The plain file ``name`` (links and folders do not count)."""
        with contextlib.suppress(OSError):
            info = os.lstat(self.folder / name)
            if info.st_mode & 0o170000 == 0o100000:
                return StoredObject(info.st_size)
        return None

    async def write(
        self, name: str, chunks: AsyncIterator[bytes], *, checksum: str | None = None
    ) -> None:
        """Write ``name.part`` and rename it once ``chunks`` ended without an error."""
        self.folder.mkdir(parents=True, exist_ok=True)
        final = self.folder / name
        part = f"{final}.part"
        fd = _files.open_part(part, self.folder, resume=False)
        done = False
        try:
            async for chunk in chunks:
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view) :]
            os.close(fd)
            fd = -1
            _files.check_final(final)
            os.replace(part, final)
            done = True
        finally:
            if fd >= 0:
                os.close(fd)
            if not done:
                with contextlib.suppress(OSError):
                    os.unlink(part)


#: ``memory://NAME`` stores of this process, so that a batch and the code reading its results
#: see the same objects.
_MEMORY: dict[str, ObjectStore] = {}
_MEMORY_LOCK = threading.Lock()


class ObjectStorage:
    """An object store (via obstore) as a :class:`Storage`; objects are ``prefix/name``.

    Made from a URL by ``fetch`` (``dest="s3://bucket/prefix"``) with credentials and endpoint
    from the usual environment (``AWS_*``, ``GOOGLE_*``, ``AZURE_*``), or from a store you
    configured yourself: ``ObjectStorage(obstore.store.S3Store("bucket", endpoint=...))``.
    ``part_size`` and ``concurrency`` bound the memory of one upload (about
    ``part_size * (concurrency + 1)``); a body smaller than one part is sent with a single PUT.
    """

    def __init__(
        self,
        store: ObjectStore,
        *,
        prefix: str = "",
        url: str | None = None,
        part_size: int = DEFAULT_PART_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
    ) -> None:
        obstore = _obstore()
        if not isinstance(part_size, int) or part_size < 5 * 1024 * 1024:
            raise InvalidConfigError(f"part_size must be an int >= 5 MiB, got {part_size!r}")
        if not isinstance(concurrency, int) or concurrency < 1:
            raise InvalidConfigError(f"concurrency must be an int >= 1, got {concurrency!r}")
        self._obstore = obstore
        self.store = store
        self.prefix = prefix.strip("/")
        self.part_size = part_size
        self.concurrency = concurrency
        self.url = (url or _describe(store)).rstrip("/")
        if self.prefix and url is None:
            self.url = f"{self.url}/{self.prefix}"

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        part_size: int = DEFAULT_PART_SIZE,
        concurrency: int = DEFAULT_CONCURRENCY,
        **options: Any,
    ) -> ObjectStorage:
        """The storage at ``url``; ``options`` go to ``obstore.store.from_url`` (e.g. ``region``).

        ``memory://NAME/prefix`` is one in-memory store per NAME in this process.
        """
        scheme = urlsplit(url).scheme.lower()
        if scheme not in OBJECT_SCHEMES:
            raise InvalidConfigError(
                f"dest {url!r}: unknown storage scheme {scheme!r}; use a folder path or one of "
                + ", ".join(f"{s}://" for s in sorted(OBJECT_SCHEMES))
            )
        obstore = _obstore()
        if scheme == "memory":
            parts = urlsplit(url)
            with _MEMORY_LOCK:
                store = _MEMORY.get(parts.netloc)
                if store is None:
                    store = _MEMORY[parts.netloc] = obstore.store.MemoryStore()
            return cls(
                store,
                prefix=parts.path,
                url=url.rstrip("/"),
                part_size=part_size,
                concurrency=concurrency,
            )
        try:
            store = obstore.store.from_url(url, **options)
        except Exception as exc:  # obstore's errors for a bad URL or configuration
            raise InvalidConfigError(f"dest {url!r}: {_first_line(exc)}") from None
        # from_url takes the URL's path as the store's own prefix: keys here are bare names.
        return cls(store, url=url.rstrip("/"), part_size=part_size, concurrency=concurrency)

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def location(self, name: str) -> str:
        """The object's URL, e.g. ``s3://bucket/prefix/name``."""
        return f"{self.url}/{name}"

    async def stat(self, name: str) -> StoredObject | None:
        """Size and recorded checksum of the object ``name`` (one HEAD request), or None."""
        try:
            result = await self._obstore.get_async(
                self.store, self._key(name), options={"head": True}
            )
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise self._error(name, exc) from None
        return StoredObject(result.meta["size"], result.attributes.get(CHECKSUM_ATTRIBUTE))

    async def write(
        self, name: str, chunks: AsyncIterator[bytes], *, checksum: str | None = None
    ) -> None:
        """Upload ``chunks`` as one object: a single PUT, or a multipart upload for a big body.

        The multipart upload is completed only after ``chunks`` ended; obstore aborts it when
        the iterator raises, and a cancel is turned into such an exception first (obstore does
        not abort an upload whose task is cancelled).
        """
        key = self._key(name)
        attributes: dict[str, str] = {CHECKSUM_ATTRIBUTE: checksum} if checksum else {}
        # Read up to one part first: a small body goes in one PUT (3 requests fewer).
        head: list[bytes] = []
        size = 0
        async for chunk in chunks:
            head.append(chunk)
            size += len(chunk)
            if size >= self.part_size:
                break
        else:
            try:
                await self._obstore.put_async(
                    self.store,
                    key,
                    b"".join(head),
                    attributes=attributes,
                    use_multipart=False,
                )
            except Exception as exc:
                raise self._error(name, exc) from None
            return
        pump = _Pump(chunks, head)
        put = self._obstore.put_async(
            self.store,
            key,
            pump.body(),
            attributes=attributes,
            use_multipart=True,
            chunk_size=self.part_size,
            max_concurrency=self.concurrency,
        )
        task = asyncio.ensure_future(put)
        try:
            # Shielded: a cancel that reached obstore's task would drop the upload unaborted.
            await asyncio.shield(task)
        except asyncio.CancelledError:
            pump.abort()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, ABORT_WAIT)
            raise
        except Exception as exc:
            # An exception of the iterator (the body, the checksum) passes through obstore as
            # the very same object; anything else is the store's.
            if exc is pump.raised:
                raise
            raise self._error(name, exc) from None

    def _error(self, name: str, exc: BaseException) -> FileSystemError:
        return FileSystemError(f"cannot store {self.location(name)}: {_first_line(exc)}")

    def __repr__(self) -> str:
        return f"ObjectStorage({self.url!r})"


#: Seconds a cancelled upload may take to abort before the cancel goes on without waiting.
ABORT_WAIT = 10.0


class _Aborted(Exception):
    """Raised inside an upload's iterator to make obstore abort the upload."""


class _Pump:
    """The iterator obstore uploads from: the bytes read ahead, then the rest of the body.

    Each step runs as a task of its own so that a cancel can end a step parked on a network
    read; the step's error then reaches obstore through the iterator and aborts the upload.
    """

    def __init__(self, chunks: AsyncIterator[bytes], head: list[bytes]) -> None:
        self._chunks = chunks
        self._head = head
        self._step: asyncio.Future[bytes | None] | None = None
        self._aborted = False
        #: The exception the iterator raised (passed through obstore unchanged), if any.
        self.raised: BaseException | None = None

    def abort(self) -> None:
        self._aborted = True
        if self._step is not None:
            self._step.cancel()

    async def body(self) -> AsyncIterator[bytes]:
        try:
            for chunk in self._head:
                yield chunk
            self._head.clear()  # those bytes are obstore's now
            while True:
                if self._aborted:
                    raise _Aborted
                self._step = asyncio.ensure_future(anext(self._chunks, None))
                try:
                    step = await self._step
                except asyncio.CancelledError:
                    raise _Aborted from None
                finally:
                    self._step = None
                if step is None:
                    return
                yield step
        except BaseException as exc:
            self.raised = exc
            raise


def _describe(store: object) -> str:
    """A URL for a store built by hand, for messages and ``DownloadInfo.location``."""
    name = type(store).__name__
    config: Mapping[str, object] = getattr(store, "config", None) or {}
    prefix = getattr(store, "prefix", None) or ""
    scheme, root = {
        "S3Store": ("s3", config.get("bucket") or config.get("aws_bucket")),
        "GCSStore": ("gs", config.get("bucket") or config.get("google_bucket")),
        "AzureStore": ("az", config.get("container_name") or config.get("azure_container_name")),
        "MemoryStore": ("memory", ""),
    }.get(name, (name.lower(), ""))
    path = "/".join(p for p in (str(root or ""), str(prefix).strip("/")) if p)
    return f"{scheme}://{path}"


def _obstore() -> Any:
    try:
        import obstore
        import obstore.store
    except ImportError:
        raise InvalidConfigError(_INSTALL_HINT) from None
    return obstore


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else type(exc).__name__
    return line if len(line) <= limit else line[: limit - 1] + "…"


def is_object_url(dest: object) -> bool:
    """True when ``dest`` is a string that names an object store (``scheme://...``)."""
    return isinstance(dest, str) and "://" in dest and not dest.lower().startswith("file://")


def resolve(dest: object) -> tuple[Path | None, Storage | None]:
    """A local folder (the fast path) or a storage for ``dest``; raises for a bad one."""
    if isinstance(dest, FolderStorage):
        return dest.folder, None
    if isinstance(dest, str) and dest.lower().startswith("file://"):
        return Path(urlsplit(dest).path).expanduser(), None
    if is_object_url(dest):
        assert isinstance(dest, str)
        return None, ObjectStorage.from_url(dest)
    if isinstance(dest, str | os.PathLike) and not isinstance(dest, bytes):
        if str(dest) == "":
            raise InvalidConfigError(f"dest must be a folder path or a storage URL, got {dest!r}")
        return Path(dest).expanduser(), None
    if isinstance(dest, Storage):
        return None, dest
    raise InvalidConfigError(
        f"dest must be a folder path, a storage URL (s3://...) or an nbdl.Storage, got {dest!r}"
    )
