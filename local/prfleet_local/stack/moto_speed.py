"""Three of moto's hot paths made proportional to what they touch, with the same answers, for the serialized server.

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
- DynamoDB TransactWriteItems (`DynamoDBBackend.transact_write_items`): before applying anything moto deep-copies
  every table the transaction names, to roll back if it is cancelled; the ledger's transactions name the state
  table, which holds every run and head file list of the day, so each one copied megabytes (seen with py-spy in a
  default-scale soak: the moto process CPU-bound in `Item.__deepcopy__` under `transact_write_items`, 7 GB
  resident). Here only the items the transaction names are copied, and restored in place if it is cancelled or
  refused: a transaction can change nothing else.

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
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table
    from moto.sqs.models import SQSBackend

    _saved.update(
        retention=SQSBackend.is_message_valid_based_on_retention_period,
        attributes=SQSBackend.get_queue_attributes,
        query=Table.query,
        all_items=Table.all_items,
        transact=DynamoDBBackend.transact_write_items,
    )
    DynamoDBBackend.transact_write_items = _transact_write_items
    SQSBackend.is_message_valid_based_on_retention_period = _valid_for_retention
    SQSBackend.get_queue_attributes = _get_queue_attributes
    Table.query = _query
    Table.all_items = _all_items


def revert() -> None:
    """Put moto's own methods back (for the equivalence tests)."""
    if not _saved:
        return
    from moto.dynamodb.models import DynamoDBBackend
    from moto.dynamodb.models.table import Table
    from moto.sqs.models import SQSBackend

    DynamoDBBackend.transact_write_items = _saved["transact"]
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


class _NoTableCopy:
    """The `copy` module as moto's DynamoDB models see it during one transaction: a Table is not copied (the
    items it names are, by _transact_write_items), everything else is."""

    def __getattr__(self, name: str) -> Any:
        import copy

        return getattr(copy, name)

    @staticmethod
    def deepcopy(x: Any, memo: Any = None) -> Any:
        import copy

        from moto.dynamodb.models.table import Table

        return x if isinstance(x, Table) else copy.deepcopy(x, memo)


def _transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> Any:
    import copy

    import moto.dynamodb.models as models
    from moto.dynamodb.models.dynamo_type import DynamoType

    snapshots = []
    try:
        for entry in transact_items:
            ((op_type, op),) = entry.items()
            table = self.tables.get(op.get("TableName"))
            if table is None:
                continue
            raw = op["Item"] if op_type == "Put" else op["Key"]
            hk = DynamoType(raw[table.hash_key_attr])
            rk = DynamoType(raw[table.range_key_attr]) if table.range_key_attr else None
            snapshots.append((table, hk, rk, copy.deepcopy(_stored(table, hk, rk))))
    except Exception:  # noqa: BLE001 - a shape moto refuses: its own code says how, with its own rollback
        return _saved["transact"](self, transact_items)
    models.copy = _NoTableCopy()
    try:
        return _saved["transact"](self, transact_items)
    except BaseException:
        for table, hk, rk, item in reversed(snapshots):  # the first snapshot of a key is its state before
            _restore(table, hk, rk, item)
        raise
    finally:
        models.copy = copy


def _stored(table: Any, hk: Any, rk: Any) -> Any:
    part = table.items.get(hk)
    if rk is None or part is None:
        return part
    return part.get(rk)


def _restore(table: Any, hk: Any, rk: Any, item: Any) -> None:
    if rk is None:
        if item is None:
            table.items.pop(hk, None)
        else:
            table.items[hk] = item
        return
    if item is not None:
        table.items[hk][rk] = item
        return
    part = table.items.get(hk)
    if part is not None:
        part.pop(rk, None)
        if not part:
            del table.items[hk]
