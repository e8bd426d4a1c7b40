"""Every result of an MLflow search, not just its first page.

MLflow's searches answer one page (`search_registered_models`: 100 by default) and a `token` for the
next; a caller that reads only the first silently misses the rest. Torch-free, so the exporter and the
API's processes may import it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from mlflow.store.entities.paged_list import PagedList

T = TypeVar("T")


def every_page(search: Callable[..., PagedList[T]], /, **kwargs: Any) -> Iterator[T]:
    """Each result of `search(**kwargs)` (a bound MlflowClient.search_* method), following the page
    token until MLflow answers none."""
    token: str | None = None
    while True:
        page = search(**kwargs, page_token=token)
        yield from page
        token = page.token
        if not token:
            return
