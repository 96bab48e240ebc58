"""The adapter contract and the registry that finds adapters by entry point."""

from __future__ import annotations

import json
import tomllib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from datetime import datetime
from importlib.metadata import entry_points
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from governance.errors import ConfigurationError, UnknownAdapterError
from governance.ingest.message import ParsedEntity, RawMessage
from governance.ingest.sources import read_capture_lines

ENTRY_POINT_GROUP = "citygov.adapters"


class AdapterConfig(BaseModel):
    """Base of every adapter's configuration model (provisioning file, column mapping, time zones)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoConfig(AdapterConfig):
    """For adapters that need no configuration."""


class Adapter(ABC):
    """Turns one raw message of a feed family into standard entities (key-values form).

    Subclasses declare what they are with class attributes and implement :meth:`parse`. ``parse``
    raises :class:`governance.errors.InvalidRecordError` for anything it cannot map with certainty;
    it never guesses and never drops a record silently.
    """

    name: ClassVar[str]
    version: ClassVar[str]
    module: ClassVar[str]
    """City module the feed belongs to: ``lighting``, ``monitoring`` or ``care``."""
    source_format: ClassVar[str]
    """One line on what the feed looks like on the wire."""
    target_types: ClassVar[tuple[str, ...]]
    """Standard entity types this adapter produces."""
    transport: ClassVar[str] = "mqtt"
    """``mqtt`` (captured as JSON lines for file ingest), ``http`` or ``file``."""
    config_model: ClassVar[type[AdapterConfig]] = NoConfig
    requires_config: ClassVar[bool] = False

    def __init__(self, config: AdapterConfig | None = None, *, config_ref: str | None = None) -> None:
        if config is None:
            if self.requires_config:
                raise ConfigurationError(f"adapter {self.name!r} needs a configuration file (--config)")
            config = self.config_model()
        if not isinstance(config, self.config_model):
            raise ConfigurationError(
                f"adapter {self.name!r} expects a {self.config_model.__name__}, got {type(config).__name__}"
            )
        self.config = config
        self.config_ref = config_ref

    @classmethod
    def from_config_file(cls, path: Path | None) -> Adapter:
        """Build the adapter from a JSON or TOML configuration file (or defaults when ``None``)."""
        if path is None:
            return cls()
        return cls(load_config(cls.config_model, path), config_ref=str(path))

    @abstractmethod
    def parse(self, message: RawMessage) -> list[ParsedEntity]:
        """Map one message to zero or more entities, or raise ``InvalidRecordError``."""

    def subject_hint(self, message: RawMessage) -> str | None:
        """The data subject a message names, as the entities would (``urn:ngsi-ld:Person:…``), if it can be
        read at all — also from a message that fails to parse. Used to seal a quarantined payload under the
        subject's own key, so that erasing the subject erases it too. Feeds without personal data: None.
        """
        return None

    def read(self, path: Path, *, received_at: datetime, max_bytes: int) -> Iterator[RawMessage]:
        """Read a file of this feed. The default reads captured messages, one JSON object a line."""
        return read_capture_lines(path, received_at=received_at, max_bytes=max_bytes)


def load_config(model: type[AdapterConfig], path: Path) -> AdapterConfig:
    """Load and validate an adapter configuration file; every problem is a ``ConfigurationError``."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc.strerror}") from exc
    try:
        if path.suffix.lower() == ".toml":
            data = tomllib.loads(raw.decode("utf-8"))
        else:
            data = json.loads(raw)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigurationError(f"configuration file {path} is not valid JSON/TOML: {exc}") from exc
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(root)'}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigurationError(f"configuration file {path} is invalid: {problems}") from exc


def registered_adapters() -> dict[str, type[Adapter]]:
    """Every adapter class registered under the ``citygov.adapters`` entry-point group, by name."""
    found: dict[str, type[Adapter]] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Adapter)):
            raise ConfigurationError(f"entry point {ep.name!r} does not name an Adapter subclass")
        if cls.name != ep.name:
            raise ConfigurationError(f"entry point {ep.name!r} loads adapter named {cls.name!r}")
        found[ep.name] = cls
    return dict(sorted(found.items()))


def adapter_class(name: str) -> type[Adapter]:
    """The adapter class registered under ``name``."""
    adapters = registered_adapters()
    try:
        return adapters[name]
    except KeyError:
        known = ", ".join(adapters) or "none"
        raise UnknownAdapterError(f"no adapter named {name!r} (registered: {known})") from None
