"""Where datasets live: a local folder or object storage (`s3://`, `gs://`, `az://`, `file://`), via fsspec.

Every dataset path in the project may be a URL. Reads stream (a shard is never read whole into
memory). Writes stay atomic: a local file is written under a temporary name, fsynced and renamed; an
object store's PUT is atomic by itself (readers see the old object or the whole new one). Either way
a dataset's manifest is written last: it is the commit point.

Credentials and endpoints come from the usual places (AWS_* variables, ~/.aws, GOOGLE_APPLICATION_
CREDENTIALS, ...); fsspec also reads FSSPEC_<PROTOCOL>_<OPTION>, e.g. FSSPEC_S3_ENDPOINT_URL for an
S3-compatible server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import IO, Iterator

import fsspec
from fsspec.core import url_to_fs


def is_remote(url: str | Path) -> bool:
    """Whether `url` names object storage (anything but a local path or file:// URL)."""
    protocol = str(url).split("://", 1)[0] if "://" in str(url) else "file"
    return protocol not in ("file", "local")


def local_path(url: str | Path) -> Path:
    """A local path or file:// URL as a Path."""
    text = str(url)
    return Path(text[len("file://"):] if text.startswith("file://") else text)


def check_url(url: str | Path) -> str:
    """`url` as given, when its scheme is one this installation can read and write; else a ValueError that
    says why (an unknown scheme, or one whose package is missing), never a local folder named `s4:`."""
    text = str(url)
    if "://" not in text:
        return text
    protocol = text.split("://", 1)[0]
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise ValueError(f"{text}: {protocol}:// is not a storage scheme fsspec knows; use a local path or a URL "
                         "such as s3://bucket/prefix, gs://..., az://... or file:///...") from None
    except ImportError as e:
        raise ValueError(f"{text}: {protocol}:// needs a package that is not installed ({e})") from None
    return text


def _fs(url: str | Path) -> tuple[fsspec.AbstractFileSystem, str]:
    # no listings cache: datasets are written by other processes (Ray workers, stages), and a cached folder
    # listing would hide what they wrote since
    return url_to_fs(check_url(url), use_listings_cache=False)


def is_absolute(url: str | Path) -> bool:
    """Whether `url` names a place on its own: a URL or an absolute local path (not one relative to a folder)."""
    return "://" in str(url) or Path(str(url)).is_absolute()


def resolve(base: str | Path, url: str) -> str:
    """`url` as written in a manifest at `base`: absolute as it is, relative to `base` otherwise (and then made
    absolute, so that it names the same file from any working directory)."""
    return url if is_absolute(url) else absolute(join(base, url))


def portable(url: str | Path) -> str:
    """How a manifest records a file: a URL as it is; a local path under the working directory (the workspace)
    relative to it, so that the record holds in another checkout or experiment folder; any other path absolute."""
    if is_remote(url):
        return str(url)
    path = os.path.abspath(local_path(url))
    here = os.getcwd()
    return os.path.relpath(path, here) if path.startswith(here + os.sep) else path


def absolute(url: str | Path) -> str:
    """A URL as it is; a local path made absolute (symlinks kept). What work sent to other processes carries:
    a Ray worker does not share the driver's working directory, on a cluster not even its machine."""
    return str(url) if is_remote(url) else os.path.abspath(local_path(url))


def join(base: str | Path, *names: str) -> str:
    """`base`/`names`, for a local folder or a URL alike."""
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *names])
    return str(local_path(base).joinpath(*names))


def open_read(url: str | Path) -> IO[bytes]:
    """A binary stream of the file at `url` (the caller closes it)."""
    if not is_remote(url):
        return open(local_path(url), "rb")
    fs, path = _fs(url)
    return fs.open(path, "rb")


def read_bytes(url: str | Path) -> bytes:
    """The whole (small) file at `url`."""
    with open_read(url) as f:
        return f.read()


def size(url: str | Path) -> int:
    """A file's size in bytes."""
    fs, path = _fs(url)
    return int(fs.size(path))


# object stores' content tags, in the order they are preferred: S3's ETag (an MD5 for single-part uploads),
# Google Cloud Storage's MD5 or CRC32C, Azure's ETag
_TAGS = ("ETag", "etag", "md5Hash", "crc32c", "content_md5")


def checksum(url: str | Path) -> dict[str, str]:
    """What vouches for a file's content without our reading it, where possible: an object store's tag from
    its listing ({"etag": ...}); a local file's sha256, streamed ({"sha256": ...})."""
    if not is_remote(url):
        return {"sha256": sha256(url)}
    fs, path = _fs(url)
    info = fs.info(path)
    for name in _TAGS:
        if info.get(name):
            return {"etag": str(info[name]).strip('"')}
    return {"sha256": sha256(url)}  # a store that keeps no tag: read it once


def matches(url: str | Path, recorded: dict) -> bool:
    """Whether the file at `url` still has the content a manifest recorded (its etag or sha256)."""
    if "etag" in recorded:
        return is_remote(url) and checksum(url).get("etag") == recorded["etag"]
    return sha256(url) == recorded.get("sha256")


def exists(url: str | Path) -> bool:
    """Whether a file exists at `url`."""
    if not is_remote(url):
        return local_path(url).is_file()
    fs, path = _fs(url)
    return fs.isfile(path)


def write_bytes(url: str | Path, data: bytes) -> None:
    """Write `data` to `url` so that readers see either the old file or the whole new one."""
    if is_remote(url):
        fs, path = _fs(url)
        fs.pipe_file(path, data)  # one PUT: atomic
        return
    with _local_commit(local_path(url)) as f:
        f.write(data)


def put_file(local: str | Path, url: str | Path) -> None:
    """Copy a local file to `url` as atomically as write_bytes, streaming (never read whole)."""
    if is_remote(url):
        fs, path = _fs(url)
        fs.put_file(str(local), path)  # one PUT, or a multipart upload that appears only when complete
        return
    with open(local, "rb") as src, _local_commit(local_path(url)) as f:
        shutil.copyfileobj(src, f)


@contextlib.contextmanager
def _local_commit(path: Path) -> Iterator[IO[bytes]]:
    """A file to write `path`'s new bytes into; renamed into place, fsynced, only when the block ends."""
    # a name of this writer's own: several processes may commit the same file at once (a CapFilt table
    # finished by both a slow rank and the one that took it over); each renames whole bytes into place
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def remove(url: str | Path) -> None:
    """Delete the file at `url` if it exists."""
    if not is_remote(url):
        local_path(url).unlink(missing_ok=True)
        return
    fs, path = _fs(url)
    if fs.isfile(path):
        fs.rm_file(path)


def listing(folder: str | Path, pattern: str) -> list[dict]:
    """The files in `folder` matching a glob `pattern`, sorted by name, each as {"url", "bytes"} and, for an
    object store, its content tag ("etag"): one listing call, no file read."""
    if not is_remote(folder):
        return [{"url": str(p), "bytes": p.stat().st_size} for p in sorted(local_path(folder).glob(pattern))
                if p.is_file()]
    fs, path = _fs(folder)
    protocol = str(folder).split("://", 1)[0]
    found = fs.glob(f"{path.rstrip('/')}/{pattern}", detail=True)
    out = []
    for name in sorted(found):
        info = found[name]
        if info.get("type", "file") != "file":
            continue
        entry = {"url": f"{protocol}://{name}", "bytes": int(info.get("size") or 0)}
        tag = next((str(info[t]).strip('"') for t in _TAGS if info.get(t)), None)
        if tag:
            entry["etag"] = tag
        out.append(entry)
    return out


def names(folder: str | Path, pattern: str) -> list[str]:
    """Names of the files in `folder` matching a glob `pattern`, sorted."""
    if not is_remote(folder):
        return sorted(p.name for p in local_path(folder).glob(pattern))
    fs, path = _fs(folder)
    return sorted(Path(p).name for p in fs.glob(f"{path.rstrip('/')}/{pattern}"))


def find(folder: str | Path) -> list[str]:
    """Paths (relative to `folder`, with /) of every file under it, at any depth, sorted."""
    if not is_remote(folder):
        base = local_path(folder)
        return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())
    fs, path = _fs(folder)
    base = path.rstrip("/") + "/"
    return sorted(p[len(base):] for p in fs.find(base))


def make_folder(folder: str | Path) -> None:
    """Create a local folder (object storage has none to make)."""
    if not is_remote(folder):
        local_path(folder).mkdir(parents=True, exist_ok=True)


def sha256(url: str | Path) -> str:
    """Hex sha256 of a file, streamed in chunks."""
    h = hashlib.sha256()
    with open_read(url) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
