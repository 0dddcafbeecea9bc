"""Two of moto's hot paths made proportional to what they return, with the same answers, for the serialized server.

At soak depth the local stack stalled behind moto, not behind prfleet (docs/reliability.md, default scale): every
request waits on the serialized server's one lock, and two operations cost time in proportion to everything stored:

- SQS ReceiveMessage (moto 5.2.5, `SQSBackend.receive_message`): for every message it returns it calls
  `is_message_valid_based_on_retention_period`, which asks `get_queue_attributes` for MessageRetentionPeriod;
  that builds the queue's whole attribute map, and the three approximate counts in it walk every message in the
  queue, each walk with two datetime conversions per message. Measured on this machine (one ReceiveMessage of 10
  through the serialized server): 22 ms at depth 0, 2.4 s at 500 messages, 6.6 s at 1,500; real SQS answers in
  milliseconds at any depth. The retention period is read from the queue directly here, and a named attribute
  lookup builds the attribute map once, not once per name.
- DynamoDB Query on a table's own key (`Table.query`): moto sorts every item of the table (`all_items`), then
  keeps those of the partition. Here only the queried partition is read and sorted, which is the same list in the
  same order: items of one partition sorted by range key. 665 ms at 6,000 items before.

Both patches apply only in the server process (`moto_proc.main`); `tests/integration/test_moto_speed.py` checks
that each patched call returns what moto's own returns.
"""

from __future__ import annotations

from typing import Any

_saved: dict[str, Any] = {}


def apply() -> None:
    """Patch moto in this process (idempotent)."""
    if _saved:
        return
    from moto.dynamodb.models.table import Table
    from moto.sqs.models import SQSBackend

    _saved.update(
        retention=SQSBackend.is_message_valid_based_on_retention_period,
        attributes=SQSBackend.get_queue_attributes,
        query=Table.query,
        all_items=Table.all_items,
    )
    SQSBackend.is_message_valid_based_on_retention_period = _valid_for_retention
    SQSBackend.get_queue_attributes = _get_queue_attributes
    Table.query = _query
    Table.all_items = _all_items


def revert() -> None:
    """Put moto's own methods back (for the equivalence tests)."""
    if not _saved:
        return
    from moto.dynamodb.models.table import Table
    from moto.sqs.models import SQSBackend

    SQSBackend.is_message_valid_based_on_retention_period = _saved["retention"]
    SQSBackend.get_queue_attributes = _saved["attributes"]
    Table.query = _saved["query"]
    Table.all_items = _saved["all_items"]
    _saved.clear()


def _valid_for_retention(self: Any, queue_name: str, message: Any) -> bool:
    from moto.core.utils import unix_time

    queue = self.get_queue(queue_name)
    retain_until = int(queue.message_retention_period) + message.sent_timestamp / 1000
    return retain_until > unix_time()


def _get_queue_attributes(self: Any, queue_name: str, attribute_names: list[str]) -> dict[str, Any]:
    from moto.sqs.exceptions import InvalidAttributeName

    queue = self.get_queue(queue_name)
    if not attribute_names:
        return {}
    valid = ["All"] + queue.BASE_ATTRIBUTES + queue.FIFO_ATTRIBUTES + queue.KMS_ATTRIBUTES
    invalid = next((n for n in attribute_names if n not in valid), None)
    if invalid or invalid == "":
        raise InvalidAttributeName(invalid)
    current = queue.attributes  # once: each build walks every message of the queue
    if "All" in attribute_names:
        return current
    return {n: current[n] for n in attribute_names if current.get(n) is not None}


def _query(self: Any, hash_key: Any, *args: Any, **kwargs: Any) -> Any:
    index_name = kwargs.get("index_name", args[6] if len(args) > 6 else None)
    if index_name or hash_key is None:
        return _saved["query"](self, hash_key, *args, **kwargs)
    self._prfleet_partition = hash_key  # the server runs one request at a time: no other query sees this
    try:
        return _saved["query"](self, hash_key, *args, **kwargs)
    finally:
        self._prfleet_partition = None


def _all_items(self: Any) -> list[Any]:
    key = getattr(self, "_prfleet_partition", None)
    if key is None:
        return _saved["all_items"](self)
    part = self.items.get(key)  # .get: `items` is a defaultdict, indexing would create the partition
    if part is None:
        return []
    if not self.range_key_attr:
        return [part]
    return sorted(part.values(), key=lambda x: x.range_key)
