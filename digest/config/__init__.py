"""Load and validate digest.yaml into typed models; every error names file, key and reason."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from digest.config.base import Key, Model, check_key, check_timezone, no_repeats
from digest.config.delivery import Delivery, DkimSettings, SendGridSettings, SmtpSettings, Web
from digest.config.digests import Digest, Experiment, Variant
from digest.errors import ConfigError

__all__ = [
    "Config", "ConfigError", "Delivery", "Digest", "DkimSettings", "Experiment", "SendGridSettings",
    "Sender", "Site", "SmtpSettings", "Source", "Topic", "Variant", "Web",
    "check_timezone", "load_config", "secret",
]  # fmt: skip

DEFAULT_CONFIG = "digest.yaml"
SECRET_ENV = "DIGEST_SECRET"
DEFAULT_MAX_BYTES = 10 * 1024 * 1024  # larger than any sane feed; stops a runaway response


class Sender(Model):
    name: str = Field(description="Display name in the From header.")
    address: str = Field(description="From address.")
    reply_to: str | None = Field(None, description="Reply-To address; defaults to the sender.")


class Site(Model):
    name: str = Field(description="Name of the publication, shown in headers and footers.")
    base_url: str = Field(description="Public URL of `digest serve`; links in emails point here.")
    postal_address: str = Field(description="Sender's postal address, printed in every footer.")
    timezone: str = Field("UTC", description="Default time zone for weeks and dates.")

    @field_validator("base_url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError("not an http(s) URL")
        return v.rstrip("/")

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_timezone(v)


class Topic(Model):
    key: Key = Field(description="Stable identifier used in subscriber preferences.")
    name: str = Field(description="Display name of the section.")
    aliases: list[str] = Field(
        default_factory=list, description="Feed categories that map onto this topic."
    )
    thoughts: list[str] = Field(
        default_factory=list, description="Fallback Thoughts prompts, rotated per email."
    )

    _k = field_validator("key")(classmethod(lambda cls, v: check_key(v)))


class Source(Model):
    name: str = Field(description="Name used in reports and on article cards.")
    type: Literal["rss", "atom", "jsonfeed", "markdown"] = Field(description="Reader to use.")
    url: str | None = Field(None, description="http(s) URL of a feed.")
    path: str | None = Field(None, description="File or folder, relative to digest.yaml.")
    topic: str | None = Field(None, description="Topic for entries that carry no category.")
    max_bytes: int = Field(
        DEFAULT_MAX_BYTES,
        ge=1024,
        description="Largest feed file or response accepted, in bytes; a bigger one is refused.",
    )

    @model_validator(mode="after")
    def _one_location(self) -> Source:
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of 'url' or 'path'")
        if self.url is not None and not re.match(r"^https?://", self.url):
            raise ValueError("url: not an http(s) URL")
        return self


class Config(Model):
    site: Site
    sender: Sender
    topics: list[Topic] = Field(min_length=1)
    sources: list[Source] = Field(default_factory=list)
    digests: list[Digest] = Field(min_length=1)
    store: str = Field(
        "sqlite:///digest.db",
        description="SQLAlchemy URL; SQLite paths are relative to digest.yaml.",
    )
    templates_dir: str = Field(
        "templates", description="Templates folder; its files override digest's own, by name."
    )
    subscribers_dir: str = Field("subscribers", description="Default subscriber files folder.")
    delivery: Delivery = Field(default_factory=Delivery)  # type: ignore[arg-type]
    web: Web = Field(default_factory=Web)  # type: ignore[arg-type]
    root: Path = Field(Path("."), exclude=True, description="Folder of digest.yaml (set on load).")
    path: Path = Field(Path(DEFAULT_CONFIG), exclude=True, description="digest.yaml itself.")

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        keys = [t.key for t in self.topics]
        no_repeats(keys, "topics", "key")
        no_repeats([d.key for d in self.digests], "digests", "key")
        for i, source in enumerate(self.sources):
            if source.topic is not None and source.topic not in keys:
                raise ValueError(f"sources[{i}].topic: unknown topic {source.topic!r}")
        for i, digest in enumerate(self.digests):
            for j, topic in enumerate(digest.topics):
                if topic not in keys:
                    raise ValueError(
                        f"digests[{i}].topics[{j}]: unknown topic {topic!r} "
                        f"(known: {', '.join(keys)})"
                    )
        return self

    # -- lookups -------------------------------------------------------------
    def digest(self, key: str) -> Digest:
        for d in self.digests:
            if d.key == key:
                return d
        known = ", ".join(d.key for d in self.digests)
        raise ConfigError(str(self.path), f"no digest {key!r} (known: {known})", key="digests")

    def topic(self, key: str) -> Topic:
        for t in self.topics:
            if t.key == key:
                return t
        raise ConfigError(str(self.path), f"unknown topic {key!r}", key="topics")

    def resolve(self, relative: str) -> Path:
        p = Path(relative)
        return p if p.is_absolute() else self.root / p

    @property
    def store_url(self) -> str:
        prefix = "sqlite:///"
        if self.store.startswith(prefix) and not self.store.startswith(prefix + "/"):
            rest = self.store[len(prefix) :]
            if rest and rest != ":memory:":
                return prefix + str(self.resolve(rest))
        return self.store

    def digest_timezone(self, digest: Digest) -> ZoneInfo:
        return ZoneInfo(digest.timezone or self.site.timezone)

    def schedule_timezone(self, digest: Digest) -> ZoneInfo:
        return ZoneInfo(digest.schedule.timezone or digest.timezone or self.site.timezone)


def secret() -> str:
    """The signing secret for tokens; from the environment only, never from a file."""
    value = os.environ.get(SECRET_ENV, "")
    if len(value) < 8:
        raise ConfigError(
            SECRET_ENV,
            "not set (or shorter than 8 characters)",
            hint=f"export {SECRET_ENV}=<a long random string>; it signs unsubscribe links",
        )
    return value


def load_config(path: str | Path = DEFAULT_CONFIG) -> Config:
    """Read and validate digest.yaml; raise ConfigError naming file, key path and reason."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(path), "file not found", hint="pass --config PATH") from None
    except OSError as exc:
        raise ConfigError(str(path), exc.strerror or str(exc)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(str(path), f"invalid YAML: {reason}", line=line) from None
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a mapping at the top level")
    try:
        return Config.model_validate({**data, "root": path.resolve().parent, "path": path})
    except ValidationError as exc:
        raise _config_error(path, exc) from None


def _config_error(path: Path, exc: ValidationError) -> ConfigError:
    err = exc.errors()[0]
    key = _key_path(err["loc"])
    reason = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        reason = "unknown key"
    elif err["type"] == "missing":
        reason = "required key is missing"
    # cross-reference errors carry their own key path in the message
    m = re.match(r"^([a-z_]+(?:\[\d+\])?(?:\.[a-z_]+(?:\[\d+\])?)*): (.*)$", reason)
    if m and not key:
        key, reason = m.group(1), m.group(2)
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return ConfigError(str(path), reason + more, key=key or None)


def _key_path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not out:
            out = str(part)
        else:
            out += f".{part}"
    return out
