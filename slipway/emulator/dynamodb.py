"""DynamoDB: the service applies a conditional write atomically (of two PutItems that both require
the item to be absent, one fails); moto checks, then writes, with no lock between, and the
emulator runs Lambdas on threads, so two runs could both take the lease. Writes are serialized."""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from unittest import mock

if TYPE_CHECKING:
    from slipway.emulator.core import Emulator


def install(emu: Emulator, patch: Callable[[Any], Any]) -> None:
    from moto.dynamodb.models import DynamoDBBackend

    lock = threading.RLock()  # re-entrant: TransactWriteItems writes through put_item

    def serialized(original):
        @functools.wraps(original)
        def write(*args, **kwargs):
            with lock:
                return original(*args, **kwargs)

        return write

    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        patch(mock.patch.object(DynamoDBBackend, name, serialized(getattr(DynamoDBBackend, name))))
