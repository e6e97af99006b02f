"""One suite's run cut into shards (one device call each), and the shards merged back into one file.

A device call runs at most 10 minutes, and the production suite takes longer, so
``scripts/benchmark.py --shard K/N`` runs every N-th case of the suite starting at the K-th
(K counted from 1) and writes ``<suite>.<gpu>.shardKofN.json``. Its provenance carries
``shard`` = {"index": K, "count": N, "cases": every case name of the whole suite}, so the
merge can tell whether the shards cover the suite. ``--merge`` checks that the shards come
from the same code, GPU, versions and settings, that together they hold every case once, and
only then writes ``<suite>.<gpu>.json``.

Standard library only, like the rest of ``perfdata``.
"""

from __future__ import annotations

import re
from pathlib import Path

from . import schema

SHARD_NAME = re.compile(r"^(?P<stem>.+)\.shard(?P<index>\d+)of(?P<count>\d+)\.json$")
# Each shard measures these itself (its own start time, its own copy and matmul rates); every
# other provenance entry must be the same in all shards.
PER_SHARD_KEYS = ("date", "ceilings", "shard")


def parse(text: str) -> tuple[int, int]:
    """'2/3' -> (2, 3): the second of three shards."""
    if not isinstance(text, str):
        raise TypeError(f"a shard is given as a str 'K/N', got {type(text).__name__}")
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m:
        raise ValueError(f"a shard is written K/N (say 1/2), got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: K must be between 1 and N")
    return index, count


def select(items: list, index: int, count: int) -> list:
    """Every ``count``-th item starting at the ``index``-th (from 1): disjoint shards that cover ``items``.
    Round robin rather than blocks, so each shard gets a share of the short and the long cases."""
    for name, value in (("index", index), ("count", count)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if not 1 <= index <= count:
        raise ValueError(f"shard {index}/{count}: index must be between 1 and count")
    return list(items)[index - 1::count]


def file_name(suite: str, gpu: str, index: int, count: int) -> str:
    return f"{suite}.{gpu}.shard{index}of{count}.json"


def merge(docs: list[dict], names: list[str] | None = None) -> dict:
    """The shards of one suite's run as one document; BenchDataError naming the first problem.
    ``names`` (one per doc, default 'shard K') are used in the messages."""
    if not docs:
        raise ValueError("no shards to merge")
    names = names or [f"shard {d.get('provenance', {}).get('shard', {}).get('index', '?')}" for d in docs]
    for doc, name in zip(docs, names):
        schema.validate(doc, name)
        if "shard" not in doc["provenance"]:
            raise schema.BenchDataError(f"{name}: not a shard (its provenance has no 'shard' entry)")
    first, first_name = docs[0], names[0]
    count = first["provenance"]["shard"]["count"]
    for doc, name in zip(docs[1:], names[1:]):
        if doc["suite"] != first["suite"]:
            raise schema.BenchDataError(f"{name} is suite {doc['suite']!r}, {first_name} is {first['suite']!r}")
        keys = (first["provenance"].keys() | doc["provenance"].keys()) - set(PER_SHARD_KEYS)
        for key in sorted(keys):
            mine, theirs = first["provenance"].get(key), doc["provenance"].get(key)
            if mine != theirs:
                raise schema.BenchDataError(f"shards disagree on {key}: {mine!r} in {first_name}, {theirs!r} in {name}")
        shard = doc["provenance"]["shard"]
        if shard["count"] != count:
            raise schema.BenchDataError(f"{name} is one of {shard['count']} shards, {first_name} one of {count}")
        if shard["cases"] != first["provenance"]["shard"]["cases"]:
            raise schema.BenchDataError(f"{name} and {first_name} were cut from different case lists")
    indices = sorted(d["provenance"]["shard"]["index"] for d in docs)
    if indices != list(range(1, count + 1)):
        missing = sorted(set(range(1, count + 1)) - set(indices))
        doubled = sorted({i for i in indices if indices.count(i) > 1})
        raise schema.BenchDataError(f"the shards of {count} are incomplete: missing {missing}, given twice {doubled}")
    cases = first["provenance"]["shard"]["cases"]
    order = {case: i for i, case in enumerate(cases)}
    seen, records = set(), []
    for doc, name in sorted(zip(docs, names), key=lambda dn: dn[0]["provenance"]["shard"]["index"]):
        for rec in doc["records"]:
            key = (rec["case"], rec["provider"])
            if rec["case"] not in order:
                raise schema.BenchDataError(f"{name} holds case {rec['case']!r}, which is not in the suite's list")
            if key in seen:
                raise schema.BenchDataError(f"{rec['provider']} in {rec['case']} is recorded twice (again in {name})")
            seen.add(key)
            records.append(rec)
    missing = sorted(set(cases) - {case for case, _ in seen}, key=order.get)
    if missing:
        raise schema.BenchDataError(f"no shard holds {len(missing)} of the suite's cases, first {missing[0]!r}")
    records.sort(key=lambda r: order[r["case"]])  # stable: providers keep their order within a case
    by_index = sorted(docs, key=lambda d: d["provenance"]["shard"]["index"])
    prov = {key: value for key, value in by_index[0]["provenance"].items() if key != "shard"}
    prov["shards"] = count
    prov["shard_runs"] = [{"index": d["provenance"]["shard"]["index"], "date": d["provenance"]["date"],
                           "ceilings": d["provenance"]["ceilings"]} for d in by_index]
    return schema.validate({"schema": schema.SCHEMA_VERSION, "suite": first["suite"], "provenance": prov,
                            "records": records})


def merge_files(paths, out_dir) -> Path:
    """Merge shard files into ``<out_dir>/<suite>.<gpu>.json``; the target is written only if every
    check passes (and then atomically), so a failed merge leaves the old file as it was."""
    paths = [Path(p) for p in paths]
    stems = set()
    for p in paths:
        m = SHARD_NAME.match(p.name)
        if not m:
            raise ValueError(f"{p.name} is not a shard file (<suite>.<gpu>.shardKofN.json)")
        stems.add(m.group("stem"))
    if len(stems) != 1:
        raise schema.BenchDataError(f"the shards name different suites or GPUs: {sorted(stems)}")
    docs = [schema.load(p) for p in paths]
    merged = merge(docs, [p.name for p in paths])
    target = Path(out_dir) / f"{stems.pop()}.json"
    schema.write_atomic(target, merged)
    return target
