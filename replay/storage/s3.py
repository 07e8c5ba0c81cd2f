"""`ByteStorage` on an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph, R2...).

``replay.open_store("s3://bucket/prefix")`` puts a store under `prefix` of
`bucket`, with exactly the keys of a store on disk (docs/format.md). The client
is obstore (Rust's ``object_store``), the same one zarr-python's
``zarr.storage.ObjectStore`` uses, so plain zarr reads what we write::

    store = replay.open_store("s3://replay/team-a")        # writer, sampler, service
    zarr.open_group(store.storage.zarr_store(), mode="r")  # plain zarr over the same bucket

Connection settings come from the usual environment: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION``,
``AWS_ENDPOINT_URL`` (an ``http://`` endpoint is allowed without more ado), web
identity / instance metadata on AWS, or a named profile (``AWS_PROFILE``, read
with boto3/botocore when installed). With a custom endpoint and no credentials at
all, requests are sent unsigned (anonymous) and the cloud metadata address
(169.254.169.254) is never asked.

How the commit protocol maps onto S3 (docs/format.md, "Commit protocol"):

- every `write` is one PUT of the whole object (never multipart): S3 makes an
  object visible only once its PUT completes, so readers get the old or the new
  version, never a torn one, and a writer killed mid-PUT leaves the old object;
- the writer issues its PUTs one after another and each returns only once the
  object is stored, so shards and step chunks are in place before the array
  shapes and the race group's ``length`` are PUT, last;
- S3 (since December 2020), SeaweedFS, MinIO and Ceph give strong
  read-after-write consistency for PUT, GET, HEAD and LIST: a reader that has
  seen ``length`` sees every shard written before it. A store without that
  guarantee is not supported;
- no temp objects are used, so a crash leaves nothing to clean up;
- an outage (the endpoint down, 5xx answers: OSError EIO once obstore's own ~2.3 s of
  retries are spent) is ridden out by the writer for `outage_timeout` seconds
  (`replay.storage.outage`): its commits wait and are retried, whole.

Reads: `read_ranges` fetches the byte ranges of one object with concurrent ranged
GETs (``obstore.get_ranges``: ranges closer than `coalesce` bytes are merged into
one request, up to 10 requests per call in flight); callers read several shards
at once from their own threads. A read of the shard index (a negative offset)
is one suffix GET.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import obstore
from obstore.exceptions import (
    BaseError,
    NotFoundError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from obstore.store import S3Store

from replay.errors import StoreError
from replay.storage.base import check_writable
from replay.storage.outage import outage_budget

if TYPE_CHECKING:
    from obstore.store import ClientConfig, S3Config, S3CredentialProvider
    from zarr.storage import ObjectStore

#: URL schemes routed to `ObjectStorage`.
SCHEMES = ("s3",)
#: Ranges closer than this are fetched by one GET (object_store's own default).
COALESCE = 1 << 20
#: Keys per DeleteObjects request (the S3 limit).
_DELETE_BATCH = 1000
_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ENDPOINT")
#: obstore's S3 settings that an ``AWS_<NAME>`` variable sets (its S3Config keys; the
#: endpoint comes from `_ENDPOINT_VARS`, in their order).
_ENV_SETTINGS = (
    "access_key_id",
    "secret_access_key",
    "session_token",
    "region",
    "default_region",
    "skip_signature",
    "metadata_endpoint",
    "container_credentials_relative_uri",
    "container_credentials_full_uri",
    "container_authorization_token_file",
    "web_identity_token_file",
    "role_arn",
    "role_session_name",
    "sts_endpoint",
    "virtual_hosted_style_request",
    "unsigned_payload",
    "checksum_algorithm",
    "request_payer",
)


def _environment_config() -> dict[str, str]:
    """The S3 settings this process's environment gives (``AWS_ACCESS_KEY_ID`` ...)."""
    settings = {
        k: os.environ[f"AWS_{k.upper()}"]
        for k in _ENV_SETTINGS
        if os.environ.get(f"AWS_{k.upper()}")
    }
    endpoint = next((os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v)), None)
    if endpoint:
        settings["endpoint"] = endpoint
    return settings


def parse_url(url: str) -> tuple[str, str]:
    """(bucket, prefix) of ``s3://bucket/prefix``; ValueError if it is not one."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES or not parts.netloc:
        raise ValueError(f"not an object store URL (s3://bucket/prefix): {url!r}")
    if parts.query or parts.fragment:
        raise ValueError(f"object store URL takes no query or fragment: {url!r}")
    prefix = parts.path.strip("/")
    if prefix and any(seg in ("", ".", "..") for seg in prefix.split("/")):
        raise ValueError(f"object store URL has an empty, '.' or '..' path segment: {url!r}")
    return parts.netloc, prefix


class ObjectStorage:
    """`ByteStorage` under ``s3://bucket/prefix``; thread-safe.

    `config` and `client_options` go to ``obstore.store.S3Store`` and override the
    environment (e.g. ``{"endpoint": "http://127.0.0.1:8333"}``). `coalesce` is the
    gap in bytes below which `read_ranges` merges ranges into one GET. `outage_timeout`
    is how long a writer rides out an unreachable store (`replay.storage.outage`;
    None: ``REPLAY_OUTAGE_TIMEOUT`` or 60 s).
    """

    #: each read a round trip: a batch's shards are read at once, on the I/O threads
    concurrent_reads = True

    def __init__(
        self,
        url: str,
        *,
        read_only: bool = False,
        coalesce: int = COALESCE,
        config: S3Config | None = None,
        client_options: ClientConfig | None = None,
        outage_timeout: float | None = None,
    ) -> None:
        if coalesce < 0:
            raise ValueError(f"coalesce must be >= 0 bytes, got {coalesce}")
        self.outage_timeout = outage_budget(outage_timeout)
        self.bucket, self.prefix = parse_url(url)
        self.url = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.read_only = read_only
        self.coalesce = coalesce
        # explicit, so the storage means the same in a writer process started before the
        # driver set its AWS_* variables (obstore would read them again there)
        settings: dict[str, Any] = {**_environment_config(), **(config or {})}
        options: dict[str, Any] = dict(client_options or {})
        endpoint = settings.get("endpoint") or next(
            (os.environ[v] for v in _ENDPOINT_VARS if os.environ.get(v)), ""
        )
        if str(endpoint).startswith("http://"):
            options.setdefault("allow_http", True)
        provider = _profile_credentials(settings)
        if endpoint and provider is None and not _has_credentials(settings):
            # Anonymous requests to a custom endpoint: without this, object_store would
            # ask the cloud metadata service (169.254.169.254) for credentials.
            settings.setdefault("skip_signature", True)
        self.s3 = S3Store(
            self.bucket,
            prefix=self.prefix or None,
            config=settings,  # type: ignore[arg-type]
            client_options=options,  # type: ignore[arg-type]
            credential_provider=provider,
        )

    def __repr__(self) -> str:
        return f"ObjectStorage({self.url!r})"

    def __str__(self) -> str:
        return self.url

    @property
    def root(self) -> str:
        """The store's URL (what `LocalStorage.root` is for a directory)."""
        return self.url

    def zarr_store(self) -> ObjectStore[S3Store]:
        """The store as a read-only zarr-python store (``zarr.storage.ObjectStore``)."""
        from zarr.storage import ObjectStore

        return ObjectStore(self.s3, read_only=True)

    # -- reads -------------------------------------------------------------------------

    def read(self, key: str) -> bytes:
        with _errors(self, key):
            return bytes(obstore.get(self.s3, key).bytes())

    def read_ranges(self, key: str, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        out: list[bytes | None] = [None] * len(ranges)
        tail = [i for i, (offset, _) in enumerate(ranges) if offset < 0]
        head = [i for i, (offset, _) in enumerate(ranges) if offset >= 0]
        with _errors(self, key):
            if tail:  # one suffix GET covers every range counted from the end
                suffix = max(-ranges[i][0] for i in tail)
                got = obstore.get(self.s3, key, options={"range": {"suffix": suffix}})
                data = memoryview(got.bytes())
                if len(data) < suffix:
                    raise EOFError(f"{self}/{key}: wanted the last {suffix} bytes, got {len(data)}")
                for i in tail:
                    offset, nbytes = ranges[i]
                    out[i] = bytes(data[suffix + offset : suffix + offset + nbytes])
            if head:
                blobs = obstore.get_ranges(
                    self.s3,
                    key,
                    starts=[ranges[i][0] for i in head],
                    lengths=[ranges[i][1] for i in head],
                    coalesce=self.coalesce,
                )
                for i, part in zip(head, blobs, strict=True):
                    out[i] = bytes(part)
        for (offset, nbytes), blob in zip(ranges, out, strict=True):
            if blob is None or len(blob) != nbytes:
                got_n = 0 if blob is None else len(blob)
                raise EOFError(f"{self}/{key}: wanted {nbytes} bytes at {offset}, got {got_n}")
        return out  # type: ignore[return-value]

    def size(self, key: str) -> int:
        with _errors(self, key):
            return int(obstore.head(self.s3, key)["size"])

    def exists(self, key: str) -> bool:
        try:
            self.size(key)
        except FileNotFoundError:
            return False
        return True

    def list_dir(self, prefix: str) -> list[str]:
        prefix = prefix.strip("/")
        with _errors(self, prefix):
            listing = obstore.list_with_delimiter(self.s3, prefix or None)
        names = [p.rsplit("/", 1)[-1] for p in listing["common_prefixes"]]
        names += [o["path"].rsplit("/", 1)[-1] for o in listing["objects"]]
        return sorted(names)

    def walk_sizes(self, prefix: str) -> Iterator[tuple[str, int]]:
        with _errors(self, prefix):
            for batch in obstore.list(self.s3, prefix.strip("/") or None, chunk_size=1000):
                for meta in batch:
                    yield meta["path"], int(meta["size"])

    # -- writes ------------------------------------------------------------------------

    def write(self, key: str, data: bytes) -> None:
        """One PUT of the whole object (atomic: readers see the old or the new bytes)."""
        check_writable(self.url, self.read_only, f"write {key}")
        with _errors(self, key):
            obstore.put(self.s3, key, data, use_multipart=False)

    def delete(self, key: str) -> None:
        check_writable(self.url, self.read_only, f"delete {key}")
        # S3 answers 204 for an absent key; other stores may say 404
        with _errors(self, key), contextlib.suppress(FileNotFoundError):
            obstore.delete(self.s3, key)

    def delete_tree(self, prefix: str) -> None:
        check_writable(self.url, self.read_only, f"delete {prefix}")
        keys = [key for key, _ in self.walk_sizes(prefix)]
        with _errors(self, prefix):
            for i in range(0, len(keys), _DELETE_BATCH):
                obstore.delete(self.s3, keys[i : i + _DELETE_BATCH])


class _errors:
    """Map obstore's errors onto the OSError family the store's callers handle.

    Absent keys are already FileNotFoundError; refused credentials become
    PermissionError; anything else (network, server errors) an OSError(EIO).
    """

    def __init__(self, storage: ObjectStorage, key: str) -> None:
        self._where = f"{storage.url}/{key}".rstrip("/")

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any
    ) -> None:
        if exc is None or isinstance(exc, (NotFoundError, OSError)):
            return
        if isinstance(exc, (PermissionDeniedError, UnauthenticatedError)):
            raise PermissionError(
                errno.EACCES,
                f"{self._where}: access denied (check the AWS_* credentials): {_first_line(exc)}",
            ) from exc
        if isinstance(exc, BaseError):
            raise OSError(errno.EIO, f"{self._where}: {_first_line(exc)}") from exc


def _first_line(exc: BaseException) -> str:
    """obstore's message without its debug dump, plus the S3 error code (NoSuchBucket...)."""
    text = str(exc).strip()
    line = text.splitlines()[0].split(": <?xml")[0] if text else type(exc).__name__
    code = re.search(r"<Code>([^<]+)</Code>", text)
    return f"{line} [{code.group(1)}]" if code else line


#: Where object_store finds credentials before it falls back to instance metadata.
_CREDENTIAL_VARS = (
    "AWS_ACCESS_KEY_ID",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_SKIP_SIGNATURE",
)


def _has_credentials(config: Mapping[str, Any]) -> bool:
    """True if credentials (or an explicit choice about them) are configured."""
    keys = ("access_key_id", "skip_signature", "token", "aws_access_key_id")
    return any(k in config for k in keys) or any(os.environ.get(v) for v in _CREDENTIAL_VARS)


def _profile_credentials(config: Mapping[str, Any]) -> S3CredentialProvider | None:
    """Credentials of a named AWS profile (``AWS_PROFILE``), if one is asked for.

    obstore reads keys from the environment, web identity tokens and instance
    metadata itself; a profile in ~/.aws is read with boto3.
    """
    profile = os.environ.get("AWS_PROFILE")
    if not profile or "access_key_id" in config or os.environ.get("AWS_ACCESS_KEY_ID"):
        return None
    try:
        import boto3  # type: ignore[import-not-found,unused-ignore]
        from obstore.auth.boto3 import Boto3CredentialProvider
    except ImportError:
        raise StoreError(
            f"AWS_PROFILE={profile!r} needs boto3 to read ~/.aws (pip install boto3), "
            "or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    try:
        return Boto3CredentialProvider(boto3.Session(profile_name=profile))
    except Exception as e:  # botocore's ProfileNotFound, no credentials in the profile
        raise StoreError(f"AWS profile {profile!r}: {e}") from e
