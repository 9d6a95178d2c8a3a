"""runtime.table_reader: a faust table's memory store read directly, anything else through its get."""

from __future__ import annotations

import faust

from carehub.runtime.stage import table_reader


def test_a_faust_memory_table_is_read_from_its_store() -> None:
    app = faust.App("carehub-test-reader", broker="kafka://127.0.0.1:1", web_enabled=False, store="memory://")
    table = app.Table("people", default=None, partitions=1, key_type=str)
    table.data["p1"] = "held"  # as a changelog recovery puts it there
    read = table_reader(table)
    assert read("p1") == "held" and read("p2") is None
    table.data["p2"] = "later"  # the store's dict is read as it is now, not as it was when bound
    assert read("p2") == "later"
    assert read.__self__ is table.data.data  # type: ignore[attr-defined]  # the dict, not faust's hooks


def test_any_other_mapping_is_read_with_its_get() -> None:
    rows = {"p1": "held"}
    read = table_reader(rows)
    assert read("p1") == "held" and read("p2") is None
