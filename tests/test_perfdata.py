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
