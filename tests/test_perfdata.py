"""The traffic model's counts, checked against counts made by hand."""

import pytest

from perfdata import traffic


def test_flops_convention():
    assert traffic.attention_flops(1024, 1024, 64, heads=8) == 4 * 8 * 1024 * 1024 * 64
    assert traffic.attention_flops(1024, 1024, 64, causal=True) == 2 * 1024 * 1024 * 64
    assert traffic.attention_flops(100, 100, 64, backward=True) == int(2.5 * 4 * 100 * 100 * 64)


def test_vectorized_rereads_k_and_v_per_query():
    # The draft's 512 x 128 fp32 example: every query loads all 512 keys and values.
    t = traffic.vectorized(512, 512, 128, elem_bytes=4)
    assert t.bytes_read == 4 * 128 * (512 + 2 * 512 * 512)
    assert t.bytes_read > 250e6  # ~268 MB requested, not the draft's 0.5 MB
    assert t.compulsory_bytes == 4 * 128 * 4 * 512  # ~1 MB must cross DRAM


def test_basic_reads_keys_three_times():
    t = traffic.basic(4, 4, 16, elem_bytes=2)
    assert t.bytes_read == 2 * 16 * (4 + 4 * 16)
    c = traffic.basic(4, 4, 16, elem_bytes=2, causal=True)
    assert c.bytes_read == 2 * 16 * (4 + 4 * (1 + 2 + 3 + 4))


def test_flash_reads_kv_once_per_query_tile():
    t = traffic.flash(1024, 1024, 64, elem_bytes=2, block_m=128, block_n=64)
    assert t.bytes_read == 2 * 64 * (1024 + 2 * 8 * 1024)
    causal = traffic.flash(1024, 1024, 64, elem_bytes=2, block_m=128, block_n=64, causal=True)
    # Tile i streams (i + 1) * 128 keys: 128 * 36 rows over 8 tiles.
    assert causal.bytes_read == 2 * 64 * (1024 + 2 * 128 * 36)


def test_keys_seen_causal_with_more_queries_than_keys():
    assert traffic._keys_seen(5, 3, True) == 1 + 2 + 3 + 3 + 3
    assert traffic._keys_seen(3, 5, True) == 1 + 2 + 3


def test_eager_materialises_scores():
    t = traffic.eager(256, 256, 64, elem_bytes=4)
    assert t.bytes_written >= 2 * 256 * 256 * 4


def test_sizes_are_checked():
    with pytest.raises(ValueError, match="nq must be positive"):
        traffic.attention_flops(0, 4, 4)
    with pytest.raises(TypeError, match="d must be an int"):
        traffic.basic(4, 4, 4.0)
    with pytest.raises(ValueError, match="block_m"):
        traffic.flash(4, 4, 4, block_m=0)


def test_compulsory_bytes_is_q_k_v_and_o_once():
    assert traffic.compulsory_bytes(3, 5, 8, elem_bytes=2, heads=2) == 2 * 2 * 8 * (3 + 5 + 5 + 3)


# ----------------------------------------------------------------------------- shards and their merge

from perfdata import schema, shards  # noqa: E402


def _shard(index, count=2, cases=("c/a", "c/b", "c/c"), commit="abc1234", records=None, **prov):
    """A synthetic shard: every count-th case from the index-th, one provider each."""
    mine = shards.select(list(cases), index, count) if records is None else records
    recs = [{"suite": "production", "case": case, "provider": "flash", "direction": "fwd", "dtype": "float16",
             "causal": False, "status": "ok", "unit": "ms", "p20": 1.0, "p50": 1.0, "p80": 1.0,
             "shape": {"B": 1, "H": 1, "Hkv": 1, "Nq": 8, "Nk": 8, "D": 16}} for case in mine]
    provenance = {"gpu": "NVIDIA H100", "sm_count": 132, "driver": "1", "cuda": "13.0", "torch": "2", "triton": "3",
                  "git_commit": commit, "date": f"2030-01-0{index}T00:00:00Z", "mode": "gpu",
                  "ceilings": {"copy_gbps": 3000.0 + index}, "fa4": {"status": "ok", "version": "4.0.0b36"},
                  "shard": {"index": index, "count": count, "cases": list(cases)}, **prov}
    return schema.validate({"schema": 1, "suite": "production", "provenance": provenance, "records": recs})


def test_shard_argument_is_parsed_and_checked():
    assert shards.parse("2/3") == (2, 3)
    for bad in ("0/2", "3/2", "2", "a/b"):
        with pytest.raises(ValueError):
            shards.parse(bad)
    with pytest.raises(TypeError):
        shards.select([1, 2], 1.0, 2)


def test_merge_puts_records_back_in_suite_order_and_notes_the_shards():
    merged = shards.merge([_shard(2), _shard(1)])
    assert [r["case"] for r in merged["records"]] == ["c/a", "c/b", "c/c"]
    prov = merged["provenance"]
    assert prov["shards"] == 2 and "shard" not in prov and prov["date"] == "2030-01-01T00:00:00Z"
    assert [(r["index"], r["date"]) for r in prov["shard_runs"]] == [(1, "2030-01-01T00:00:00Z"),
                                                                      (2, "2030-01-02T00:00:00Z")]


@pytest.mark.parametrize("shard_two, message", [
    (_shard(2, commit="def5678"), "git_commit"),
    (_shard(2, torch="3"), "torch"),
    (_shard(2, gpu="NVIDIA H200"), "gpu"),
    (_shard(2, fa4={"status": "ok", "version": "4.0.0b37"}), "fa4"),
    (_shard(1), r"missing \[2\], given twice \[1\]"),
    (_shard(2, records=["c/b", "c/a"]), "recorded twice"),
    (_shard(2, records=["c/b", "c/zz"]), "not in the suite's list"),
    (_shard(2, count=3), "one of 3 shards"),
    (_shard(2, cases=("c/a", "c/b", "c/d")), "different case lists"),
])
def test_merge_refuses_shards_that_do_not_belong_together(shard_two, message):
    with pytest.raises(schema.BenchDataError, match=message):
        shards.merge([_shard(1), shard_two])


def test_merge_refuses_a_suite_with_a_case_no_shard_ran():
    cases = ("c/a", "c/b", "c/c", "c/d")
    with pytest.raises(schema.BenchDataError, match="no shard holds 1 of the suite's cases, first 'c/b'"):
        shards.merge([_shard(1, cases=cases), _shard(2, cases=cases, records=["c/d"])])


def test_merge_files_leaves_the_old_file_when_refused(tmp_path):
    import json

    for doc in (_shard(1), _shard(2, commit="def5678")):
        index = doc["provenance"]["shard"]["index"]
        (tmp_path / f"production.h100.shard{index}of2.json").write_text(json.dumps(doc))
    target = tmp_path / "production.h100.json"
    target.write_text("old\n")
    with pytest.raises(schema.BenchDataError, match="git_commit"):
        shards.merge_files(sorted(tmp_path.glob("*.shard*")), tmp_path)
    assert target.read_text() == "old\n"
    with pytest.raises(ValueError, match="not a shard file"):
        shards.merge_files([target], tmp_path)


def test_provenance_entries_for_fa4_and_shards_are_validated():
    good = _shard(1)
    for fa4, message in (({"status": "maybe"}, "status"), ({"status": "unsupported"}, "reason"),
                         ({"status": "ok"}, "version")):
        with pytest.raises(schema.BenchDataError, match=message):
            schema.validate({**good, "provenance": {**good["provenance"], "fa4": fa4}})
    with pytest.raises(schema.BenchDataError, match="index and count"):
        schema.validate({**good, "provenance": {**good["provenance"], "shard": {"index": 3, "count": 2, "cases": ["x"]}}})
    with pytest.raises(schema.BenchDataError, match="shard_runs"):
        schema.validate({**good, "provenance": {**good["provenance"], "shards": 2, "shard_runs": []}})


# ----------------------------------------------------------------------------- the timeline suite

import copy  # noqa: E402

from timeline_synthetic import timeline_doc  # noqa: E402


def _corrupt(change):
    doc = timeline_doc(ctas=(0,), tiles=2)
    change(doc)
    return doc


def _set(path, value):
    """A change that sets doc[path...] (ints index lists) to value."""
    def change(doc):
        *head, last = path
        target = doc
        for key in head:
            target = target[key]
        target[last] = value
    return change


def test_timeline_validates_and_dispatches():
    doc = timeline_doc()
    assert schema.validate(copy.deepcopy(doc)) == doc
    cycles = timeline_doc(unit="cycles", warps=(0, 4, 8))  # what scripts/timeline.py writes by default
    cycles["provenance"]["proton"]["warps"] = "warps 0,4,8 of each program"
    assert schema.validate(copy.deepcopy(cycles)) == cycles
    assert schema.TIMELINE_SUITE == "timeline"


@pytest.mark.parametrize("change, message", [
    (_set(("provenance", "proton"), None), r"provenance\.proton missing"),
    (_set(("provenance", "proton", "note"), ""), r"provenance\.proton\.note"),
    (_set(("provenance", "git_commit"), 7), r"provenance\.git_commit"),
    (_set(("records", 3, "end"), 0.0), r"records\[3\]: needs 0 <= start < end"),
    (_set(("records", 3, "start"), -1.0), r"records\[3\]: needs 0 <= start < end"),
    (_set(("records", 3, "end"), float("nan")), r"records\[3\]: start and end must be finite"),
    (_set(("records", 3, "start"), "0"), r"records\[3\]: start and end must be finite"),
    (_set(("records", 3, "role"), "consumer 2"), r"records\[3\]\.role 'consumer 2' not in"),
    (_set(("records", 3, "cta"), 0.0), r"records\[3\]\.cta must be a non-negative int"),
    (_set(("records", 3, "warp"), True), r"records\[3\]\.warp must be a non-negative int"),
    (_set(("records", 3, "schedule"), 2), r"records\[3\]\.schedule missing or not a non-empty str"),
    (_set(("records", 3, "scope"), ""), r"records\[3\]\.scope missing"),
    (_set(("records", 3, "unit"), "ms"), r"records\[3\]\.unit must be one of \('ns', 'cycles'\)"),
    (_set(("records", 3, "unit"), "cycles"), r"records\[3\]\.unit 'cycles' differs from the file's first event's, 'ns'"),
    (_set(("provenance", "proton", "warps"), 3), r"provenance\.proton\.warps"),
    (_set(("records", 3, "suite"), "hopper"), r"records\[3\]\.suite 'hopper' differs"),
    (_set(("records", 3, "status"), "error"), r"records\[3\]: status error needs a reason"),
    (_set(("records",), []), "records must be a non-empty list"),
])
def test_a_corrupt_timeline_fails_naming_the_problem(change, message):
    with pytest.raises(schema.BenchDataError, match=message):
        schema.validate(_corrupt(change))


def test_a_timeline_warp_has_one_role_and_a_case_one_schedule():
    def two_roles(doc):
        first = next(r for r in doc["records"] if r["role"] == "consumer 0" and r["warp"] == 0)
        later = next(r for r in doc["records"] if r is not first and r["warp"] == 0 and r["case"] == first["case"])
        later["role"] = "consumer 1"

    with pytest.raises(schema.BenchDataError, match="warp 0 of program 0 .* has two roles"):
        schema.validate(_corrupt(two_roles))
    with pytest.raises(schema.BenchDataError, match="has two schedules"):
        schema.validate(_corrupt(_set(("records", 5, "schedule"), "other")))


def test_a_truncated_timeline_file_fails_to_load(tmp_path):
    import json

    path = tmp_path / "timeline.h100.json"
    path.write_text(json.dumps(timeline_doc())[:500])
    with pytest.raises(schema.BenchDataError, match="not valid JSON"):
        schema.load(path)
