"""Where a shard folder lives: a local folder or an S3 prefix, and the few operations on it.

`open_store("s3://BUCKET/PREFIX")` gives an `S3Store`, anything else a `LocalStore`; both are
frozen values (picklable, so worker processes get them as they are) with the same methods:
`url(rel)` (what DALI and messages get), `read_bytes`, `size` (None when absent), `sizes` (one
listing of a folder), `open` (a binary stream), `write_bytes`. Paths inside a store are relative
and use "/" (`train/train-000000.tar`), as manifest.json records them.

S3 goes through boto3 (the `s3` extra) with the standard AWS configuration only: credentials from
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a profile, or an instance role), AWS_REGION, and
AWS_ENDPOINT_URL for S3-compatible stores (MinIO, Ceph); DALI's reader reads the same variables.
A missing bucket, refused credentials or an unreachable endpoint is a `StorageError` (a
DataError: one `error:` line) naming the URL and what to check; a missing object is a
FileNotFoundError, as for a local file, so each file format's reader words its own message.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Union

from alexnet_dali.errors import DataError
from alexnet_dali.tools.outdir import naming, temp_path

S3_SCHEME = "s3://"
EXTRA = "pip install 'alexnet-dali[s3]'"
# error codes S3 and S3-compatible stores answer when they refuse the credentials
REFUSED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
           "InvalidToken", "InvalidClientTokenId", "AuthorizationHeaderMalformed", "403"}


class StorageError(DataError):
    """Object storage could not be used: no such bucket, refused credentials, no connection."""


def is_remote(location: str | Path) -> bool:
    """True for an `s3://` URL."""
    return str(location).startswith(S3_SCHEME)


@dataclass(frozen=True)
class LocalStore:
    """A folder on a local (or mounted) filesystem."""

    root: Path
    remote = False

    def __str__(self) -> str:
        return str(self.root)

    def url(self, rel: str) -> str:
        """The file's path, as DALI and messages get it."""
        return str(self.root / rel)

    def read_bytes(self, rel: str) -> bytes:
        """The whole file (FileNotFoundError when absent)."""
        return (self.root / rel).read_bytes()

    def size(self, rel: str) -> int | None:
        """Bytes of the file, None when it is not there (or not a regular file)."""
        path = self.root / rel
        return path.stat().st_size if path.is_file() else None

    def sizes(self, folder: str) -> dict[str, int]:
        """rel -> bytes of every regular file directly in `folder` ({} when it is absent)."""
        base = self.root / folder
        if not base.is_dir():
            return {}
        return {f"{folder}/{p.name}": p.stat().st_size for p in base.iterdir() if p.is_file()}

    def open(self, rel: str) -> BinaryIO:
        """A binary stream of the file."""
        return open(self.root / rel, "rb")

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write under a temporary name, fsync, then rename: a full disk never leaves half a
        file, and a crash never leaves an empty one."""
        path = self.root / rel
        tmp = temp_path(path)
        try:
            with naming(tmp), open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


@dataclass(frozen=True)
class S3Store:
    """The objects under `s3://bucket/prefix/`."""

    bucket: str
    prefix: str  # no leading or trailing "/"; "" for the whole bucket
    remote = True

    def __str__(self) -> str:
        return f"{S3_SCHEME}{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, rel: str) -> str:
        """The object key of a path inside the store."""
        return f"{self.prefix}/{rel}" if self.prefix else rel

    def url(self, rel: str) -> str:
        """`s3://bucket/prefix/rel`, as DALI reads it."""
        return f"{S3_SCHEME}{self.bucket}/{self.key(rel)}"

    def read_bytes(self, rel: str) -> bytes:
        """The whole object (FileNotFoundError when absent)."""
        with self.open(rel) as body:
            return body.read()

    def size(self, rel: str) -> int | None:
        """Bytes of the object, None when it is not there."""
        try:
            head = _call(self, rel, "head_object", Bucket=self.bucket, Key=self.key(rel))
        except FileNotFoundError:
            return None
        return int(head["ContentLength"])

    def sizes(self, folder: str) -> dict[str, int]:
        """rel -> bytes of every object directly under `folder/` (one paginated listing)."""
        start = self.key(folder) + "/"
        found: dict[str, int] = {}
        token: dict[str, str] = {}
        while True:
            page = _call(self, folder, "list_objects_v2", Bucket=self.bucket, Prefix=start,
                         Delimiter="/", **token)
            for item in page.get("Contents", []):
                found[f"{folder}/{item['Key'][len(start):]}"] = int(item["Size"])
            if not page.get("IsTruncated"):
                return found
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def open(self, rel: str) -> BinaryIO:
        """A stream of the object's bytes (one GET); read errors become a StorageError."""
        answer = _call(self, rel, "get_object", Bucket=self.bucket, Key=self.key(rel))
        return _Body(self, rel, answer["Body"])

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Upload the object (a PUT replaces it whole: nobody sees half of it)."""
        _call(self, rel, "put_object", Bucket=self.bucket, Key=self.key(rel), Body=data)

    def why_missing(self, rel: str) -> str:
        """Why `rel` is not there, in words: no bucket, an empty prefix, or only that object."""
        try:
            _call(self, "", "head_bucket", Bucket=self.bucket)
        except FileNotFoundError:
            return f"there is no bucket {self.bucket!r} at {endpoint()}"
        listed = _call(self, "", "list_objects_v2", Bucket=self.bucket, MaxKeys=1,
                       Prefix=self.key(""))
        if not listed.get("KeyCount"):
            return f"nothing is stored under {self}/"
        return f"{self}/ holds objects but no {rel}"


Store = Union[LocalStore, S3Store]


def open_store(location: str | Path | Store) -> Store:
    """The store of a shard folder given as a local path or `s3://BUCKET[/PREFIX]`."""
    if isinstance(location, (LocalStore, S3Store)):
        return location
    if not is_remote(location):
        return LocalStore(Path(location))
    bucket, _, prefix = str(location)[len(S3_SCHEME):].partition("/")
    if not bucket:
        raise StorageError(f"{location}: no bucket named; write s3://BUCKET/PREFIX")
    return S3Store(bucket, prefix.strip("/"))


class _Body:
    """A GET's body as a binary stream whose network failures are StorageErrors."""

    def __init__(self, store: S3Store, rel: str, body: Any) -> None:
        self._store, self._rel, self._body = store, rel, body

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all with -1)."""
        try:
            return self._body.read(None if size is None or size < 0 else size)
        except Exception as e:  # urllib3/botocore errors of a broken connection; others as they are
            raise _failure(self._store, self._rel, e) from None

    def close(self) -> None:
        """Release the connection."""
        self._body.close()

    def __enter__(self) -> "_Body":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_LOCK = threading.Lock()
_CLIENT: tuple[int, Any] | None = None  # (pid, boto3 client): one per process


def client() -> Any:
    """This process's boto3 S3 client (made on first use, from the standard AWS variables)."""
    global _CLIENT
    with _LOCK:
        if _CLIENT is None or _CLIENT[0] != os.getpid():
            try:
                import boto3
            except ImportError:
                raise StorageError(f"s3:// URLs need boto3: {EXTRA}") from None
            # AWS_REGION is what DALI's reader reads; botocore itself reads AWS_DEFAULT_REGION
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            session = boto3.session.Session()
            _CLIENT = (os.getpid(), session.client("s3", region_name=region or "us-east-1"))
        return _CLIENT[1]


def forget_client() -> None:
    """Drop this process's client: the next request makes one from the environment as it is."""
    global _CLIENT
    with _LOCK:
        _CLIENT = None


def endpoint() -> str:
    """The endpoint the client talks to (AWS_ENDPOINT_URL, or AWS's for the region)."""
    return str(client().meta.endpoint_url)


def _call(store: S3Store, rel: str, method: str, **kwargs: Any) -> Any:
    """One S3 request; its failures as StorageError (FileNotFoundError for a missing object)."""
    try:
        return getattr(client(), method)(**kwargs)
    except StorageError:
        raise
    except Exception as e:  # botocore's errors: sorted out by _failure
        raise _failure(store, rel, e) from None


def _failure(store: S3Store, rel: str, error: Exception) -> Exception:
    """The exception a user reads for a failed request: which URL, what happened, what to check."""
    from botocore import exceptions as bx

    url = store.url(rel) if rel else str(store)
    if isinstance(error, (bx.NoCredentialsError, bx.PartialCredentialsError)):
        return StorageError(f"{url}: no AWS credentials found; set AWS_ACCESS_KEY_ID and "
                            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)")
    if isinstance(error, bx.ClientError):
        info = error.response.get("Error", {})
        code = str(info.get("Code", ""))
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        said = f"{code}: {info.get('Message')}" if info.get("Message") else code or str(status)
        if code == "NoSuchBucket":
            return StorageError(f"{url}: there is no bucket {store.bucket!r} at {endpoint()}; "
                                "check the URL, AWS_ENDPOINT_URL and AWS_REGION")
        if code in ("NoSuchKey", "404", "NotFound") or status == 404:
            return FileNotFoundError(2, "not found", url)
        if code in REFUSED or status == 403:
            return StorageError(f"{url}: {endpoint()} refused the credentials ({said}); check "
                                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) "
                                "and the bucket's access policy")
        return StorageError(f"{url}: {endpoint()} answered {status} ({said})")
    network = (bx.ConnectionError, bx.HTTPClientError, bx.IncompleteReadError, OSError)
    if isinstance(error, network) or type(error).__module__.startswith("urllib3"):
        return StorageError(f"{url}: cannot reach {endpoint()} ({error}); check "
                            "AWS_ENDPOINT_URL and the network, then run the command again")
    return error
