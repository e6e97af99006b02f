"""The site's HTML tables, built from benchmark records.

Each table has a caption (its accessible name) and a header row, sits in a
``div.table-scroll`` (the stylesheet lets it scroll sideways on a phone, first column
kept in view), and names under it why a cell has no number: a status such as
"unsupported" carries a numbered note with the benchmark's recorded reason.

Written with string building, not pandas: the cells mix numbers with notes, small
second lines and highlight classes, and headers span columns, which pandas' HTML
writer does not express more briefly; it would also add pandas to the site's
dependencies for five tables.
"""

from __future__ import annotations

import html

from . import fmt, query
from .theme import label, short_label


class _Notes:
    """Numbered notes under a table, one per distinct reason."""

    def __init__(self):
        self.reasons: list[str] = []

    def mark(self, record: dict) -> str:
        """A cell for a record that did not run: its status and a note number."""
        reason = f"{record['status']}: {record.get('reason') or 'no reason recorded'}"
        if reason not in self.reasons:
            self.reasons.append(reason)
        n = self.reasons.index(reason) + 1
        return f'<em>{html.escape(record["status"])}</em><sup>{n}</sup>'

    def html(self) -> str:
        if not self.reasons:
            return ""
        items = "".join(f"<li>{html.escape(r)}</li>" for r in self.reasons)
        return f'<ol class="bench-notes">{items}</ol>'


def _td(cell) -> str:
    """A body cell: HTML, or (HTML, CSS class) for a highlighted one."""
    text, css = cell if isinstance(cell, tuple) else (cell, "")
    return f'<td class="{css}">{text}</td>' if css else f"<td>{text}</td>"


def _table(caption: str, head: list[str], body: list[list], *, notes: _Notes | None = None, foot: str = "",
           docs: list[dict] = (), table_id: str | None = None, details: bool = False) -> str:
    """Assemble one table. ``head`` is a list of header-row HTML strings (each a run of
    <th> cells), ``body`` rows of cells (see ``_td``); each row's first cell is its header."""
    ident = f' id="{html.escape(table_id)}"' if table_id else ""
    thead = "".join(f"<tr>{row}</tr>" for row in head)
    rows = [f'<tr><th scope="row">{cells[0]}</th>{"".join(_td(c) for c in cells[1:])}</tr>' for cells in body]
    prov = "".join(f"<br>{html.escape(query.provenance_line(d))}" for d in docs)
    out = (f'<div class="table-scroll"><table class="bench-table"{ident}><caption>{html.escape(caption)}</caption>'
           f'<thead>{thead}</thead><tbody>{"".join(rows)}</tbody></table></div>'
           + (notes.html() if notes else "")
           + (f'<p class="bench-prov">{foot}{" Measured on" if docs else ""}{prov}</p>' if foot or docs else ""))
    if details:
        return f'<details class="bench-details"><summary>{html.escape(caption)}</summary>{out}</details>'
    return out


def _th(text: str, span: int = 1) -> str:
    return f'<th scope="col"{f" colspan={span}" if span > 1 else ""}>{text}</th>'


# ----------------------------------------------------------------------------- the draft's sizes (posts 1-3)

def seed_table(doc: dict, providers=None) -> str:
    """Median time per provider at each size; a CUDA-graph replay time under it where measured."""
    records = doc["records"]
    present = list(dict.fromkeys(r["provider"] for r in records))
    chosen = present if providers is None else [p for p in providers if p in present]
    if not chosen:
        raise ValueError(f"none of {providers} is in the data; present: {present}")
    notes = _Notes()
    by = {(r["provider"], r["shape"]["Nq"], r["shape"]["D"]): r for r in records}
    body = []
    for n, d in query.distinct(records, "Nq", "D"):
        cells = [f"{n}×{d}"]
        for p in chosen:
            r = by.get((p, n, d))
            if r is None:
                cells.append("–")
            elif r["status"] != "ok":
                cells.append(notes.mark(r))
            else:
                graph = f"<br><small>graph {fmt.ms(r['graph_p50'])}</small>" if r.get("graph_p50") else ""
                cells.append(fmt.ms(r["p50"]) + graph)
        body.append(cells)
    shape = query.shape_caption(records, skip=("Nq", "Nk", "D", "Hkv"))
    dtypes = ", ".join(x for (x,) in query.distinct(records, "dtype"))
    foot = (f"Median ({html.escape(query.timing_note(doc))}). \"graph\": the same call replayed in a CUDA graph, "
            "without launch overhead.")
    head = [_th("seq × d") + "".join(
        f'<th scope="col" title="{html.escape(label(p))}">{html.escape(short_label(p))}</th>' for p in chosen)]
    return _table(f"Median forward time per size, {dtypes}, {shape}", head, body, notes=notes, foot=foot, docs=[doc],
                  table_id=f"{doc['suite']}-times")


# ----------------------------------------------------------------------------- production shapes (post 3)

def production_ratio_table(doc: dict, dtype: str = "float16", direction: str = "fwd", *, details: bool = False) -> str:
    """Our TFLOP/s per production shape and its ratio to cuDNN's and FA2's (and FlashAttention-4's
    where it ran), one direction.

    Ratios are of TFLOP/s (higher is ours faster). Where both calls were also replayed as
    CUDA graphs, one more column gives that ratio. Grouped-query shapes (Hkv < H) are
    left out: cuDNN and FA2 were not timed on them; so are the decoding cases (Nq = 1).
    """
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
    records = [r for r in query.square(doc["records"]) if r["dtype"] == dtype and r["direction"] == direction
               and r["shape"]["H"] == r["shape"]["Hkv"]]
    if not records:
        dtypes = [x for (x,) in query.distinct(doc["records"], "dtype")]
        raise ValueError(f"no {direction} records for dtype {dtype!r}; dtypes present: {dtypes}")
    by_case: dict[str, dict] = {}
    for r in records:
        by_case.setdefault(r["case"], {})[r["provider"]] = r
    with_graphs = any(r.get("graph_p50") for r in records if r["provider"] == "flash")
    # FlashAttention-4 gets a column where it ran at least once; a run without it keeps the table as it was.
    fa4 = [r for r in records if r["provider"] == "fa4"]
    peers = ["sdpa-cudnn", "sdpa-flash"] + (["fa4"] if any(r["status"] == "ok" for r in fa4) else [])
    notes = _Notes()
    body = []
    for case in sorted(by_case, key=lambda c: (-next(iter(by_case[c].values()))["shape"]["D"],
                                              next(iter(by_case[c].values()))["causal"],
                                              next(iter(by_case[c].values()))["shape"]["Nq"])):
        rs = by_case[case]
        ours, cudnn = rs.get("flash"), rs.get("sdpa-cudnn")
        if ours is None:
            continue
        s = ours["shape"]
        others = [rs.get(p) for p in peers]
        good = [x is not None and x["status"] == "ok" for x in (ours, *others)]
        cells = [f"D={s['D']}{' causal' if ours['causal'] else ''}, N={fmt.size(s['Nq'])}",
                 f"{ours['tflops']:.0f}" if good[0] else notes.mark(ours)]
        for other, ok in zip(others, good[1:]):
            if good[0] and ok:
                cells.append(f"{ours['tflops'] / other['tflops']:.2f}")
            else:
                cells.append(notes.mark(other) if other is not None and not ok else "–")
        if with_graphs:
            graphs = good[0] and good[1] and ours.get("graph_p50") and cudnn.get("graph_p50")
            cells.append(f"{cudnn['graph_p50'] / ours['graph_p50']:.2f}" if graphs else "")
        body.append(cells)
    word = "Forward" if direction == "fwd" else "Backward"
    head = [_th("case") + _th("ours, TFLOP/s") + "".join(_th(f"÷ {short_label(p)}") for p in peers)
            + (_th("÷ cuDNN, graphs*") if with_graphs else "")]
    shape = query.shape_caption(records, skip=("Nq", "Nk", "D", "H", "Hkv"))
    foot = (f"Ratios of TFLOP/s: above 1, ours is faster. {html.escape(query.timing_note(doc))}. "
            + ("* Where a call took under 0.3 ms, both were also timed as CUDA-graph replays, which remove host "
               "launch overhead: the ratio of those times. " if with_graphs else ""))
    if fa4 and "fa4" not in peers:
        foot += html.escape(f"FlashAttention-4 did not run: {fa4[0]['reason'] or fa4[0]['status']}. ")
    gpu = query.gpu_label(doc)
    names = ["cuDNN", "FlashAttention-2"] + (["FlashAttention-4"] if "fa4" in peers else [])
    against = " and ".join(names) if len(names) == 2 else f"{names[0]}, {names[1]} and {names[2]}"
    return _table(f"{word}, {dtype}, {shape}, {gpu}: ours against {against}", head, body,
                  notes=notes, foot=foot, docs=[doc], details=details,
                  table_id=production_table_id(doc, dtype, direction))


def production_table_id(doc: dict, dtype: str, direction: str) -> str:
    """The HTML id of a production table, for links from other pages."""
    return f"production-{direction}-{dtype}-{query.gpu_label(doc).lower()}"


# ----------------------------------------------------------------------------- the ablation (post 4)

def ablation_table(doc: dict) -> str:
    """Each rung's measured speed-up over the previous rung, with the prediction, per case."""
    cases = query.ablation_cases(doc)
    by_case = [{r["provider"]: r for r in query.ablation_rows(doc, d, c)} for d, c in cases]
    notes = _Notes()
    body = []
    for rung in query.ablation_rows(doc, *cases[0]):
        # The step's name only: the label would set the column's width, and the post lists labels beside names.
        cells = [f'<code title="{html.escape(rung["label"])}">{html.escape(rung["provider"])}</code>']
        for rows in by_case:
            x = rows.get(rung["provider"])
            if x is not None and x["status"] != "ok":
                cells.append(notes.mark(x))
            elif x is None or x["measured_speedup"] is None:
                cells.append(f"{x['tflops']:.0f} TFLOP/s" if x else "–")
            else:
                text = f"{x['measured_speedup']:.2f}×<br><small>predicted {x['predicted_speedup']:.2f}×</small>"
                missed = abs(x["measured_speedup"] / x["predicted_speedup"] - 1) > 0.1
                cells.append((text, "miss") if missed else text)
        body.append(cells)
    head = [_th("step") + "".join(_th(f"D={d}, {'causal' if c else 'full'}") for d, c in cases)]
    rungs = [r for r in doc["records"] if r.get("step") is not None]
    foot = ("Measured speed-up of each step over the step before it (ratio of median times), with the prediction "
            "written before the run; the first row gives the starting throughput. Highlighted: measurements more "
            f"than 10% away from the prediction. {html.escape(query.timing_note(doc))}.")
    common = query.shape_caption(rungs, skip=("Nk", "Hkv", "D", "H"))
    return _table(f"Each step's speed-up, measured and predicted ({common})",
                  head, body, notes=notes, foot=foot, docs=[doc], table_id="ablation-steps")


def compiler_table(doc: dict, d: int | None = None, causal: bool | None = None) -> str:
    """What the compiler made of each rung in one case (default: the first the data holds)."""
    cases = query.ablation_cases(doc)
    d = cases[0][0] if d is None else d
    causal = cases[0][1] if causal is None else causal
    cols = [("regs", "registers"), ("spills", "spills"), ("smem", "shared_bytes"), ("wgmma", "ptx_wgmma"),
            ("ex2", "ptx_ex2"), ("mul", "ptx_mul_f32"), ("fma", "ptx_fma_f32")]
    body = []
    for r in query.ablation_rows(doc, d, causal):
        rep, cfg = r.get("compiler") or {}, r.get("config") or {}
        tile = (f"{cfg.get('BLOCK_M')}×{cfg.get('BLOCK_N')}<br><small>{cfg.get('num_warps')}w, "
                f"{cfg.get('num_stages')}s</small>") if cfg else "–"
        cells = [f"<code>{html.escape(r['provider'])}</code>", tile]
        for _, key in cols:
            v = rep.get(key)
            cells.append("–" if v is None else f"{v / 1024:.0f} KB" if key == "shared_bytes" else str(v))
        body.append(cells)
    head = [_th("step") + _th("tile") + "".join(_th(name) for name, _ in cols)]
    foot = ("Tile: BLOCK_M×BLOCK_N, warps (w) and pipeline stages (s). Registers per thread (regs), spills and "
            "shared memory (smem) from the compiled kernel; wgmma, ex2, mul.f32 and fma.f32 are static counts in "
            "the PTX (code size, not executed instructions).")
    case = f"D={d}, {'causal' if causal else 'full'}"
    return _table(f"What the compiler made of each step, {case}", head, body, foot=foot, docs=[doc],
                  table_id=f"compiler-d{d}-{'causal' if causal else 'full'}")


def warpspec_table(doc: dict) -> str:
    """The descriptor kernel with warp specialisation off and on, beside flash_attention and cuDNN."""
    notes = _Notes()
    body = []

    def cell(r):
        if r is None:
            return "no record"
        return f"{r['tflops']:.0f}" if r["status"] == "ok" else notes.mark(r)

    for p in query.warpspec_pairs(doc):
        t = p["tile"]
        ran = p["ws"] is not None and p["ws"]["status"] == "ok"
        refs = " · ".join(f"{name} {value:.0f}" for name, value in (("ours", p["flash"]), ("cuDNN", p["cudnn"]))
                          if value is not None)
        case = f"D={p['D']}, {'causal' if p['causal'] else 'full'}" + (f"<br><small>{refs}</small>" if refs else "")
        body.append([case,
                     f"{t['BLOCK_M']}×{t['BLOCK_N']}<br><small>{t['num_warps']} warps</small>",
                     cell(p["plain"]), cell(p["ws"]), ("yes" if p["same_code"] else "no") if ran else "–",
                     "–" if p["setmaxnreg"] is None else str(p["setmaxnreg"])])
    head = [_th("case") + _th("tile") + _th("plain") + _th("specialised") + _th("same code?")
            + _th("<code>setmaxnreg</code>")]
    foot = (f"Forward TFLOP/s ({html.escape(query.timing_note(doc))}); under each case, <code>flash_attention</code> "
            "(ours) and cuDNN in the same run. \"Same code\": equal registers, shared memory, "
            "PTX line count and counts of wgmma, ex2, fma and mul. <code>setmaxnreg</code> is the instruction "
            "specialised warp groups use to trade registers; none means no split.")
    return _table("Warp specialisation off and on, per tile", head, body, notes=notes, foot=foot, docs=[doc],
                  table_id="warpspec")


def profile_table(prof: dict) -> str:
    """Bytes of each profiled flash forward launch: the traffic model beside Nsight Compute's counters."""
    measured = sorted((r for r in prof["records"] if r["group"] == "flash" and r["status"] == "ok"
                       and None not in (r["measured"]["dram_read_bytes"], r["measured"]["dram_write_bytes"])),
                      key=lambda r: (-r["shape"]["D"], r["shape"]["Nq"], r["causal"]))
    if not measured:
        raise ValueError("the profile holds no measured flash launch")
    gb = lambda x: "–" if x is None else f"{x / 1e9:.2f}"  # noqa: E731
    head = [_th("case") + _th("tile") + _th("requested (model)") + _th("DRAM") + _th("L2") + _th("DRAM ÷ compulsory")]
    body = []
    for r in measured:
        m, mod, s, c = r["measured"], r["model"], r["shape"], r["config"]
        dram = m["dram_read_bytes"] + m["dram_write_bytes"]
        body.append([f"D={s['D']} H={s['H']} N={s['Nq']}{', causal' if r['causal'] else ''}",
                     f"{c['BLOCK_M']}×{c['BLOCK_N']}",
                     gb(mod["requested_bytes"]), gb(dram), gb(m["l2_bytes"]), f"{dram / mod['compulsory_bytes']:.2f}×"])
    p, s = prof["provenance"], measured[0]["shape"]
    clocks = ("clocks left to the GPU (--clock-control none)" if p["clock_control"] == "none"
              else "clocks locked to base by ncu")
    foot = (f"GB per forward launch, {measured[0]['dtype']}, B={s['B']}; DRAM = bytes read + written, L2 = bytes requested from L2; model bytes for the "
            f"tile the autotuner picked; compulsory = Q, K, V read and O written once. Nsight Compute {p['ncu']}, "
            f"one profiled launch per case after warm-up, {clocks}.")
    return _table("Bytes moved by the forward kernel: the model beside Nsight Compute", head, body, foot=html.escape(foot),
                  docs=[prof])


# ----------------------------------------------------------------------------- the Gluon kernel (post 5)

def hopper_table(doc: dict) -> str:
    """Each Gluon variant against the default (serial) one per case, with the references."""
    cases = query.hopper_cases(doc)
    by_case = [{r["provider"]: r for r in query.hopper_rows(doc, d, c)} for d, c in cases]
    notes = _Notes()
    body = []
    base_smem = {d: (rows.get("gluon-serial", {}).get("compiler") or {}).get("shared_bytes")
                 for (d, _), rows in zip(cases, by_case)}
    for provider in dict.fromkeys(r["provider"] for r in query.hopper_rows(doc, *cases[0])):
        first = html.escape(label(provider))
        # Shared memory only where a variant differs from the default kernel of that head dim.
        other = sorted({(d, rows[provider]["compiler"]["shared_bytes"]) for (d, _), rows in zip(cases, by_case)
                        if (rows.get(provider) or {}).get("compiler")
                        and round(rows[provider]["compiler"]["shared_bytes"] / 1024) != round((base_smem[d] or 0) / 1024)})
        if other:
            first += "<br><small>" + ", ".join(f"{b / 1024:.0f} KB smem at D={d}" for d, b in other) + "</small>"
        cells = [first]
        for rows in by_case:
            r = rows.get(provider)
            if r is None:
                cells.append("–")
            elif r["status"] != "ok":
                cells.append(notes.mark(r))
            elif r["vs_serial"] is None:
                cells.append(f"{r['tflops']:.0f}")
            else:
                text = f"{r['tflops']:.0f}<br><small>{r['vs_serial']:.2f}×</small>"
                if r["beyond_noise"] and provider.startswith("gluon-"):
                    cells.append((text, "hit" if r["vs_serial"] > 1 else "miss"))
                else:
                    cells.append(text)
        body.append(cells)
    head = [_th("kernel") + "".join(_th(f"D={d}, {'causal' if c else 'full'}") for d, c in cases)]
    reps = [r["compiler"] for rows in by_case for r in rows.values() if r.get("compiler")]
    regs = "/".join(str(v) for v in sorted({rep["registers"] for rep in reps}))
    spills = "/".join(str(v) for v in sorted({rep["spills"] for rep in reps}))
    smem = ", ".join(f"{b / 1024:.0f} KB at D={d}" for d, b in sorted(base_smem.items()) if b)
    foot = ("Forward TFLOP/s and, under it, the ratio to the default Gluon kernel (serial consumers) in the same "
            "run. Highlighted: a Gluon variant whose timing rounds all lie on one side of the default's (teal "
            f"faster, pink slower); the rest are within the noise. Every Gluon variant compiled to {regs} registers "
            f"per thread at launch (the warps then trade registers with <code>setmaxnreg</code>) and {spills} "
            f"spills; the default uses {smem} of shared memory. {html.escape(query.timing_note(doc))}.")
    return _table(f"The Gluon kernel's switches ({query.shape_caption(doc['records'], skip=('Nk', 'Hkv', 'D', 'H'))})",
                  head, body, notes=notes, foot=foot, docs=[doc], table_id="hopper-switches")


def timeline_table(doc: dict) -> str:
    """Per traced case and role: the share of the warps' time in each kind of scope, and how much of
    each consumer's softmax ran while the other consumer was inside a matmul scope."""
    cases = query.timeline_cases(doc)
    if not cases:
        raise ValueError("the timeline holds no event that ran: every record failed")
    summaries = [(c, query.timeline_summary(doc, c["case"])) for c in cases]
    kinds = [k for k in query.SCOPE_KINDS if any(k in s["share"] for _, by_role in summaries for s in by_role.values())]
    body = []
    for c, by_role in summaries:
        for role, s in by_role.items():
            under = s["softmax_under_matmul"]
            body.append([f'<span title="{html.escape(label(c["provider"]))}">{html.escape(short_label(c["provider"]))}'
                         f"</span><br><small>{html.escape(role)}</small>"]
                        + [f"{s['share'][k]:.0%}" if k in s["share"] else "–" for k in kinds]
                        + ["–" if under is None else f"{under:.0%}"])
    head = [_th("schedule") + "".join(_th(k) for k in kinds) + _th("overlap")]
    programs = sorted({len(c["ctas"]) for c in cases})
    scopes = {}
    for r in (r for c in cases for r in query.timeline_events(doc, c["case"])):
        scopes.setdefault(query.scope_kind(r["scope"]), {})[r["scope"]] = None
    kinds_text = "; ".join(f"{k}: {', '.join(scopes[k])}" for k in kinds)
    foot = (f"Share of each warp's time, from its first record to its last, spent inside scopes of each kind ({kinds_text}), "
            f"summed over the role's warps and the {'/'.join(map(str, programs))} traced program(s) of each case. "
            "Overlap: the fraction of a consumer's softmax time during which a warp of the other "
            f"consumer was inside a matmul scope. From an instrumented run: {doc['provenance']['proton']['note'].rstrip('.')}.")
    return _table("Where each role's time went, per schedule", head, body, foot=html.escape(foot), docs=[doc],
                  table_id="timeline-shares")


# ----------------------------------------------------------------------------- post 6: the variants

def variants_table(doc: dict, direction: str = "fwd") -> str:
    """Post 6: per case (variant, dtype, D), our median time and TFLOP/s (kept pairs only), and
    ours ÷ each peer in speed; a peer that did not run shows its status and the recorded reason."""
    if direction not in ("fwd", "bwd"):
        raise ValueError(f"direction must be 'fwd' or 'bwd', got {direction!r}")
    records = [r for r in doc["records"] if r["direction"] == direction]
    if not records:
        raise ValueError(f"no {direction} records in the variants document")
    peers = [p for p in dict.fromkeys(r["provider"] for r in records) if p != "ours"]
    names = {"flex": "FlexAttention", "fa4": "FA4", "sdpa-dense": "SDPA dense", "eager": "eager",
             "ours-pointer": "ours, post 3", "ours-block-mask": "ours, block mask",
             "ours-per-document": "ours per doc.", "ours-padded": "ours padded"}
    by_case: dict = {}
    for r in records:
        by_case.setdefault(r["case"], {})[r["provider"]] = r
    notes = _Notes()
    body = []
    for rs in by_case.values():
        ours = rs.get("ours")
        if ours is None:
            continue
        head = f"{html.escape(ours['variant'])}<br><small>{ours['dtype']}, D={ours['shape']['D']}, " \
               f"B={ours['shape']['B']}, N={fmt.size(ours['shape']['N'])}</small>"
        if ours["status"] != "ok":
            body.append([head, notes.mark(ours), ""] + ["" for _ in peers])
            continue
        cells = [head, f"{ours['p50']:.3g}", f"{ours['tflops']:.0f}"]
        for p in peers:
            other = rs.get(p)
            if other is None:
                cells.append("")
            elif other["status"] != "ok" or not other.get("p50"):
                cells.append(notes.mark(other))
            else:
                cells.append(f"{other['p50'] / ours['p50']:.2f}×")
        body.append(cells)
    head = [_th("case") + _th("ours ms") + _th("ours TFLOP/s")
            + "".join(_th(f"÷ {html.escape(names.get(p, p))}") for p in peers)]
    word = "Forward" if direction == "fwd" else "Backward"
    return _table(f"{word}: our median time and ours ÷ each peer in speed (above 1: ours faster)", head, body,
                  notes=notes, docs=[doc],
                  foot="TFLOP/s count the (query, key) pairs the mask keeps. ")
