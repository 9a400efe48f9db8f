"""The Stripe SDK's httpx client, with one fix for httpx >= 0.28.

``stripe.HTTPXClient`` hands the already-encoded form body to httpx as ``data=<str>``,
which httpx deprecates (``DeprecationWarning``: use ``content=``). Under
``filterwarnings=error`` that warning aborts every POST, and the SDK reports it as a
network error. The body is sent unchanged, as ``content=``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import stripe

__all__ = ["SdkHttpxClient"]


class SdkHttpxClient(stripe.HTTPXClient):
    def _get_request_args_kwargs(
        self, method: str, url: str, headers: Mapping[str, str], post_data: Any
    ) -> list[Any]:
        args, kwargs = super()._get_request_args_kwargs(method, url, headers, post_data)
        data = kwargs.pop("data", None)
        if isinstance(data, str | bytes):
            kwargs["content"] = data
        elif data:
            kwargs["data"] = data
        return [args, kwargs]
