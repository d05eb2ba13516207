"""Registry of intrinsic-dimension estimators by name, so later areas plug in (PH dimension)."""

from __future__ import annotations

__all__ = ["register", "get", "available", "estimate"]

_REGISTRY: dict[str, type] = {}
_ALIASES: dict[str, str] = {}


def register(name: str, cls: type, aliases: tuple[str, ...] = ()) -> type:
    """Register an estimator class under ``name`` (lower case) and optional aliases."""
    key = name.lower()
    _REGISTRY[key] = cls
    for a in aliases:
        _ALIASES[a.lower()] = key
    return cls


def _resolve(name: str) -> str:
    if not isinstance(name, str):
        raise TypeError(f"estimator name must be a string, got {type(name).__name__}.")
    key = name.lower()
    key = _ALIASES.get(key, key)
    if key not in _REGISTRY:
        raise ValueError(f"unknown intrinsic-dimension method {name!r}; available: {', '.join(available())}.")
    return key


def available() -> list[str]:
    """Names of the registered estimators."""
    return sorted(_REGISTRY)


def get(name: str, **params):
    """A new estimator instance for ``name`` with ``params`` (its ``__init__`` arguments)."""
    cls = _REGISTRY[_resolve(name)]
    try:
        return cls(**params)
    except TypeError as exc:
        import inspect

        ok = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
        raise TypeError(f"{cls.__name__} does not take {exc}; its parameters are: {', '.join(ok)}.") from None


def estimate(X, method: str = "twonn", **params) -> float:
    """Intrinsic dimension of the point cloud ``X`` by the named method, as a float."""
    return float(get(method, **params).fit(X).dimension_)
