"""The official PhonePe SDK's ``StandardCheckoutClient``, pointed at a base URL we choose.

The SDK (``phonepe-pg-sdk-python``) has no base-URL option: ``BaseClient.__init__`` takes
its hosts from the ``Env`` enum (sandbox or production), and the token service fetches its
first OAuth token to that host while the client is being built. So to talk to the local
simulator we do not fork or monkeypatch the SDK; we solve it in its HTTP layer: every SDK
request goes through a ``BaseHttpCommand(host_url, http_client_config)``, and this subclass
builds the client's commands (API, PCI API, OAuth) with *our* host URLs before any I/O
happens. Everything else (request models, token caching and refresh, 401 handling, error
mapping, callback validation) is the SDK's own code, unchanged.

With no base URLs configured, :func:`build_client` returns the SDK's own ``get_instance``
client for the configured ``Env``, which is what real PhonePe uses.
"""

from __future__ import annotations

from typing import Any

from phonepe.sdk.pg.common.configs.credential_config import CredentialConfig
from phonepe.sdk.pg.common.configs.http_client_config import HttpClientConfig
from phonepe.sdk.pg.common.events.publisher.event_publisher_factory import EventPublisherFactory
from phonepe.sdk.pg.common.http_client_modules.base_http_command import BaseHttpCommand
from phonepe.sdk.pg.common.token_handler.token_service import TokenService
from phonepe.sdk.pg.env import Env
from phonepe.sdk.pg.payments.v2.standard_checkout_client import StandardCheckoutClient

__all__ = ["LocalTokenService", "RoutedCheckoutClient", "build_client"]


class LocalTokenService(TokenService):  # type: ignore[misc]
    """The SDK's token service (eager fetch, background refresh) on ``oauth_base_url``."""

    def __init__(self, *, oauth_base_url: str, credential_config: CredentialConfig,
                 event_publisher: Any, http_client_config: HttpClientConfig) -> None:
        super().__init__(credential_config=credential_config, env=Env.SANDBOX,
                         event_publisher=event_publisher, http_client_config=http_client_config)
        # The parent built its command for the Env's host but made no request yet (all I/O
        # happens in start()); swap it for one on our host before start() is called.
        parents_command: Any = self._http_command
        parents_command.close()
        self._http_command: Any = BaseHttpCommand(host_url=oauth_base_url,
                                             http_client_config=http_client_config)


class RoutedCheckoutClient(StandardCheckoutClient):  # type: ignore[misc]
    """``StandardCheckoutClient`` whose API and OAuth hosts are given, not taken from ``Env``.

    Mirrors ``BaseClient.__init__`` (same components, same cleanup on failure) with two
    differences: the hosts, and no event publishing (there is nobody to publish to locally;
    the SDK itself only publishes in production).
    """

    def __init__(self, *, client_id: str, client_secret: str, client_version: int,
                 pg_base_url: str, oauth_base_url: str,
                 http_client_config: HttpClientConfig) -> None:
        self.env = Env.SANDBOX
        self.credential_config = CredentialConfig(client_id=client_id,
                                                  client_secret=client_secret,
                                                  client_version=client_version)
        self.http_client_config = http_client_config
        self.should_publish_events = False
        closables: list[Any] = []
        try:
            self._http_command = BaseHttpCommand(pg_base_url, http_client_config=http_client_config)
            closables.append(self._http_command)
            self._pci_http_command = BaseHttpCommand(pg_base_url,
                                                     http_client_config=http_client_config)
            closables.append(self._pci_http_command)
            self._event_publisher_factory = EventPublisherFactory(
                event_sender=BaseHttpCommand(host_url=pg_base_url,
                                             http_client_config=http_client_config))
            closables.append(self._event_publisher_factory.event_sender)
            self.event_publisher = self._event_publisher_factory.get_event_publisher(
                should_publish_events=False)
            self._token_service = LocalTokenService(
                oauth_base_url=oauth_base_url, credential_config=self.credential_config,
                event_publisher=self.event_publisher, http_client_config=http_client_config)
            closables.append(self._token_service)
            self._token_service.start()
        except Exception:
            for closable in reversed(closables):
                closable.close()
            raise


def build_client(*, client_id: str, client_secret: str, client_version: int, env: str,
                 pg_base_url: str | None, oauth_base_url: str | None,
                 http_client_config: HttpClientConfig) -> StandardCheckoutClient:
    """A checkout client: routed to the given hosts, or the SDK's own for ``env``."""
    if pg_base_url:
        return RoutedCheckoutClient(
            client_id=client_id, client_secret=client_secret, client_version=client_version,
            pg_base_url=pg_base_url.rstrip("/"),
            oauth_base_url=(oauth_base_url or pg_base_url).rstrip("/"),
            http_client_config=http_client_config)
    return StandardCheckoutClient.get_instance(
        client_id=client_id, client_secret=client_secret, client_version=client_version,
        env=Env.PRODUCTION if env == "production" else Env.SANDBOX,
        http_client_config=http_client_config)
