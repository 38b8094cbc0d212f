"""Bring a feed's bytes in from a file or an http(s) URL, bounded in time and size."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

from digest import __version__
from digest.config import Config, Source
from digest.errors import SourceError

TIMEOUT_SECONDS = 20.0
USER_AGENT = f"digest/{__version__} (+https://digest.example.com)"


def source_location(source: Source) -> str:
    """How a source is named in messages: its URL, or its path as written in digest.yaml."""
    return source.url or str(source.path)


def source_path(source: Source, config: Config) -> Path:
    if source.path is None:
        raise SourceError(source.name, f"a {source.type} source needs 'path', not 'url'")
    return config.resolve(source.path)


def read_bytes(source: Source, config: Config, *, timeout: float = TIMEOUT_SECONDS) -> bytes:
    """The raw document of a file or URL source; SourceError names the source and why."""
    if source.url is not None:
        return _fetch(source.url, timeout=timeout, limit=source.max_bytes)
    path = source_path(source, config)
    where = source_location(source)
    try:
        size = path.stat().st_size
        if size > source.max_bytes:
            raise SourceError(
                where,
                f"file is {size} bytes, more than the {source.max_bytes} allowed",
                hint="raise the source's max_bytes in digest.yaml if the feed is really this big",
            )
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError(where, "file not found") from None
    except IsADirectoryError:
        raise SourceError(where, "is a folder, expected a feed file") from None
    except OSError as exc:
        raise SourceError(where, exc.strerror or str(exc)) from None


def _fetch(url: str, *, timeout: float, limit: int) -> bytes:
    request = urllib.request.Request(
        url,
        headers={
            "User-Agent": USER_AGENT,
            "Accept": "application/rss+xml, application/atom+xml, application/feed+json, "
            "application/json, application/xml;q=0.9, */*;q=0.5",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            data: bytes = response.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise SourceError(url, f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise SourceError(url, f"cannot fetch: {exc.reason}") from None
    except TimeoutError:
        raise SourceError(url, f"no answer within {timeout:g} s") from None
    except OSError as exc:
        raise SourceError(url, f"cannot fetch: {exc}") from None
    if len(data) > limit:
        raise SourceError(
            url,
            f"response is larger than the {limit} bytes allowed",
            hint="raise the source's max_bytes in digest.yaml if the feed is really this big",
        )
    return data
