"""The generator's settings: config/synthetic.yaml deep-merged with the caller's overrides.

Values are read as attributes (`cfg.rig.lidar.beams`); an override naming a key the file does not have is an error,
so a typo cannot silently leave a default in place.
"""
from __future__ import annotations

import copy
from functools import lru_cache

import yaml

from ...errors import ConfigError
from ...resources import resolve

CONDITIONS = ("sun", "cloud", "fog", "night", "rain")
FAILURES = ("motionblur", "overexposure", "underexposure", "lidarjitter", "eventlowres")


class Settings:
    """Read-only attribute view of a nested dict."""

    def __init__(self, data: dict, path: str = ""):
        self._data = data
        self._path = path

    def __getattr__(self, key):
        try:
            value = self._data[key]
        except KeyError:
            raise ConfigError(f"synthetic config has no '{self._path}{key}'") from None
        return Settings(value, f"{self._path}{key}.") if isinstance(value, dict) else value

    def get(self, key, default=None):
        value = self._data.get(key, default)
        return Settings(value, f"{self._path}{key}.") if isinstance(value, dict) else value

    def to_dict(self) -> dict:
        return copy.deepcopy(self._data)


@lru_cache(maxsize=1)
def _defaults() -> dict:
    with open(resolve("synthetic.yaml", "config")) as f:
        return yaml.safe_load(f)


def _merge(base: dict, override: dict, path: str) -> dict:
    out = dict(base)
    for key, value in override.items():
        if key not in base:
            raise ConfigError(f"synthetic config: unknown key '{path}{key}' (known: {', '.join(base)})")
        if isinstance(base[key], dict):
            if not isinstance(value, dict):
                raise ConfigError(f"synthetic config: '{path}{key}' must be a mapping, got {value!r}")
            out[key] = _merge(base[key], value, f"{path}{key}.")
        else:
            out[key] = value
    return out


def load(overrides: dict | None = None) -> Settings:
    return Settings(_merge(copy.deepcopy(_defaults()), overrides or {}, ""))


def check_case(condition: str, failure: str | None) -> None:
    if condition not in CONDITIONS:
        raise ConfigError(f"condition must be one of {CONDITIONS}, got {condition!r}")
    if failure is not None and failure not in FAILURES:
        raise ConfigError(f"failure must be None or one of {FAILURES}, got {failure!r}")
