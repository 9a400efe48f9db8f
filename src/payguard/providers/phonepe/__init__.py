"""PhonePe Standard Checkout v2: the SDK adapter (``adapter``), its order mapping
(``mapping``), PhonePe's polling schedule (``schedule``), the SDK routed to a chosen host
(``sdk_client``) and a PhonePe-compatible simulator (``simulator``).

Import the submodules directly: importing this package does not load the SDK.
"""

__all__: list[str] = []
