"""A local, stateful PhonePe Standard Checkout v2 subset (see ``app.py``)."""

from payguard.providers.phonepe.simulator.app import (
    PhonePeSimOptions,
    PhonePeSimulator,
    callback_authorization,
    create_phonepe_simulator_app,
)

__all__ = ["PhonePeSimOptions", "PhonePeSimulator", "callback_authorization",
           "create_phonepe_simulator_app"]
