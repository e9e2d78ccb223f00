"""Backend failures that mean "the store does not answer now" become ``StoreUnavailable``.

``raising_unavailable`` wraps every public method of a store class (its mixins'
too) so that the driver's errors for an outage leave it as ``StoreUnavailable``: the
API answers 503 with ``Retry-After`` and ``retryable: true``, and the loops of
``postcall.outages`` back off and try again. Errors that say the request itself is
wrong pass through unchanged.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from postcall.errors import StoreUnavailable

P = ParamSpec("P")
R = TypeVar("R")
C = TypeVar("C", bound=type)


def raising_unavailable(
    errors: tuple[type[BaseException], ...],
    what: str,
    *,
    when: Callable[[BaseException], bool] = lambda exc: True,
) -> Callable[[C], C]:
    """A class decorator: ``errors`` for which ``when`` holds are raised as
    ``StoreUnavailable("the store (<what>) does not answer: …")``."""

    def translated(method: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(method)
        def call(*args: P.args, **kwargs: P.kwargs) -> R:
            try:
                return method(*args, **kwargs)
            except errors as exc:
                if not when(exc):
                    raise
                raise StoreUnavailable(f"the store ({what}) does not answer: {exc}") from exc

        return call

    def decorate(cls: C) -> C:
        names = {
            name
            for klass in cls.__mro__
            for name, attr in vars(klass).items()
            if not name.startswith("_") and name != "close" and inspect.isfunction(attr)
        }
        for name in names:
            setattr(cls, name, translated(getattr(cls, name)))
        return cls

    return decorate
