"""Figure 5 (post 4): the ablation, one switch at a time.

The steps, their predictions and their measurements come from docs/data (the ablation
suite, written by scripts/benchmark.py from ``kernels.ablation.RUNGS``). The source change
of each step is generated from the forward kernel itself: every ``if`` whose condition the
step's constexpr switches decide is resolved to the branch the compiler keeps, and the
kernel text of one rung is diffed against the rung before. Steps that change only the
launch (tile, warps, stages) show that change as a diff of the launch configuration.
"""

from __future__ import annotations

import ast
import difflib
import html
import inspect
import textwrap

import plotly.graph_objects as go

from .. import theme
from . import GREEN, GREY, MONO, PINK, buttons, finish, restyle, slider

NBSP = "\u00a0"
REFERENCE = theme.color("reference")
UNKNOWN = object()  # a condition the switches do not decide (MASKED, IS_CAUSAL, ...)


def _evaluate(node: ast.expr, env: dict):
    """The value of a constexpr condition under ``env``, or UNKNOWN if it depends on anything else."""
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.Name):
        return env.get(node.id, UNKNOWN)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
        v = _evaluate(node.operand, env)
        return UNKNOWN if v is UNKNOWN else not v
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, env) for v in node.values]
        short = False if isinstance(node.op, ast.And) else True
        if any(v is not UNKNOWN and bool(v) == short for v in values):
            return short
        return UNKNOWN if any(v is UNKNOWN for v in values) else not short
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and isinstance(node.ops[0], (ast.Eq, ast.NotEq)):
        a, b = _evaluate(node.left, env), _evaluate(node.comparators[0], env)
        if a is UNKNOWN or b is UNKNOWN:
            return UNKNOWN
        return (a == b) if isinstance(node.ops[0], ast.Eq) else (a != b)
    return UNKNOWN


def resolve(source: str, switches: dict) -> str:
    """``source`` with every ``if`` that ``switches`` decide replaced by the branch taken.

    Works on lines (the source's own text and comments are kept); undecided ``if``s stay,
    with their branches resolved inside.
    """
    if not isinstance(switches, dict):
        raise TypeError(f"ablation_steps.resolve: switches must be a dict, got {type(switches).__name__}")
    source = textwrap.dedent(source)
    lines = source.splitlines()
    keep = [True] * len(lines)
    dedent = [0] * len(lines)
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.If):
            continue
        taken = _evaluate(node.test, switches)
        if taken is UNKNOWN:
            continue
        first_body = node.body[0].lineno - 1
        header = range(node.lineno - 1, first_body)
        body = range(first_body, node.body[-1].end_lineno)
        orelse = range(node.body[-1].end_lineno, node.end_lineno) if node.orelse else range(0)
        # The kept branch moves out one level; the header, the other branch and its "else:" go.
        for i in header:
            keep[i] = False
        gone, kept = (orelse, body) if taken else (body, orelse)
        for i in gone:
            keep[i] = False
        if not taken and node.orelse:
            if isinstance(node.orelse[0], ast.If) and lines[node.orelse[0].lineno - 1].lstrip().startswith("elif"):
                # "elif c:" becomes "if c:" one level out, at the if's own indentation.
                i = node.orelse[0].lineno - 1
                keep[i] = True
                lines[i] = lines[i].replace("elif", "if", 1)
                kept = range(0)  # already at the right depth
            else:
                keep[node.body[-1].end_lineno] = False  # the "else:" line
                kept = range(node.body[-1].end_lineno + 1, node.end_lineno)
        for i in kept:
            dedent[i] += 4
    out = []
    for i, line in enumerate(lines):
        if keep[i]:
            out.append(line[dedent[i]:] if line[:dedent[i]].strip() == "" else line)
    return "\n".join(out)


def rung_source(rung) -> list[str]:
    """The forward kernel as one rung compiles it: launch configuration, then the tile loop
    and the kernel body with the rung's switches resolved."""
    from kernels import flash, tiles as tile_loops

    params = inspect.signature(flash.flash_fwd_kernel.fn).parameters
    switches = {k: params[k].default for k in ("SOFTMAX", "SPLIT_LOOPS", "SKIP_FUTURE")}  # the production kernel
    switches.update(rung.switches)
    if rung.tile is None:
        launch = ["[launch] tile, warps and stages autotuned over flash.FWD_TILES"]
    else:
        bm, bn, w, s = rung.tile
        launch = [f"[launch] BLOCK_M={bm}, BLOCK_N={bn}, num_warps={w}, num_stages={s}"]
    tiles = inspect.getsource(tile_loops.fwd_tiles.fn)
    body = inspect.getsource(flash.flash_fwd_kernel.fn)
    body = body[body.index("    pid_m"):]
    tiles = tiles[tiles.index("    for start_n"):tiles.index("    return acc")]
    return launch + resolve(tiles, switches).splitlines() + resolve(body, switches).splitlines()


def _code(line: str) -> str:
    """A line's code without its comment ("" for a comment or blank line). The kernels write
    a comment after code as two spaces and a hash."""
    return "" if line.lstrip().startswith("#") else line.split("  # ")[0].rstrip()


def step_diffs() -> list[list[tuple[str, str]]]:
    """Per rung after the first: (mark, code) lines where its kernel differs from the rung
    before, mark "-" removed, "+" added, " " one line of context. Comments, blank lines and
    re-indentation are not changes to the compiled kernel and are left out."""
    from kernels import ablation

    sources = [[c for c in map(_code, rung_source(r)) if c.strip()] for r in ablation.RUNGS]
    out = []
    for before, after in zip(sources, sources[1:]):
        a, b = [ln.strip() for ln in before], [ln.strip() for ln in after]
        diff = []
        for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_opcodes():
            if op == "equal":
                continue
            if j1 > 0 and (not diff or diff[-1][1] != after[j1 - 1]):
                diff.append((" ", after[j1 - 1]))
            diff += [("-", ln) for ln in before[i1:i2]] + [("+", ln) for ln in after[j1:j2]]
        out.append(diff)
    return out


def _diff_html(diff: list[tuple[str, str]], width: int = 50) -> str:
    """A diff as Plotly annotation text: removed lines pink, added green, context plain; wrapped
    at ``width`` characters (indent included): 50 of 10 px monospace, about 300 px, fit the
    plot of a 390 px phone."""
    rows = []
    for mark, code in diff:
        style = {"-": f' style="color:{PINK}"', "+": f' style="color:{GREEN}"', " ": ""}[mark]
        indent = len(code) - len(code.lstrip())
        for part in textwrap.wrap(code.strip(), width=width, break_on_hyphens=False,
                                  initial_indent=f"{mark} " + " " * indent, subsequent_indent="  " + " " * (indent + 4)):
            # quote=False: Plotly decodes &lt; &gt; &amp; but would print &quot; as it stands.
            text = html.escape(part, quote=False).replace(" ", NBSP)  # NBSP keeps the indentation in SVG text
            rows.append(f"<span{style}>{text}</span>")
    return "<br>".join(rows) if rows else "(no change to the kernel text)"


def _noise(prev: dict, cur: dict) -> tuple[float, float]:
    """Speed-up range over the timing rounds: slowest and fastest round of each rung set against each other."""
    a, b = prev.get("round_p50") or [prev["p50"]], cur.get("round_p50") or [cur["p50"]]
    return min(a) / max(b), max(a) / min(b)


def figure(doc: dict, provenance: str) -> go.Figure:
    """Slider over the steps; buttons over the four cases. Bars: TFLOP/s per rung, the current
    step highlighted; text: its prediction against its measurement (with the spread over
    timing rounds); below: the change the step makes to the kernel."""
    from kernels import ablation

    from blog import query

    diffs = step_diffs()
    cases = query.ablation_cases(doc)  # the (head dim, causal) cases the data holds
    rows = {case: query.ablation_rows(doc, *case) for case in cases}
    names = [r.name for r in ablation.RUNGS]
    for case, rs in rows.items():
        if [r["provider"] for r in rs] != names:
            raise ValueError(f"ablation_steps: the data's rungs for D={case[0]} causal={case[1]} are "
                             f"{[r['provider'] for r in rs]}, the kernel's are {names}: re-run the ablation suite")
    fig = go.Figure()
    for ci, case in enumerate(cases):
        rs = rows[case]
        fig.add_bar(x=names, y=[round(r["tflops"], 1) if r["status"] == "ok" else None for r in rs],
                    marker_color=[GREY] * len(rs), visible=ci == 0, customdata=[r["label"] for r in rs],
                    hovertemplate="%{customdata}: %{y:.0f} TFLOP/s<extra>measured</extra>")
        # The prediction in the reference colour: in pink it vanished into the highlighted pink bar.
        fig.add_scatter(x=names, y=[None] * len(rs), mode="markers", visible=ci == 0,
                        marker=dict(symbol="diamond", size=12, color=REFERENCE, line=dict(width=1, color="#fff")),
                        hovertemplate="predicted %{y:.0f} TFLOP/s<extra></extra>")
        fig.add_scatter(x=[0], y=[0], mode="text", text=[""], textposition="bottom right", textfont=dict(size=11),
                        visible=ci == 0, hoverinfo="skip", xaxis="x2", yaxis="y2")
    # Bars on top, the step's verdict below the slider, the source change below that.
    # Top to bottom, in a plot area of about 640 px (one phone screen in all): bars (their slanted
    # labels reach about 0.46), the slider (about 0.1 of the height tall, labels included), the
    # verdict from 0.315 down, the diff (at most 10 lines of 13 px) from 0.215 down.
    fig.update_layout(yaxis=dict(domain=[0.55, 1]), xaxis2=dict(domain=[0, 1], anchor="y2", visible=False, range=[0, 1]),
                      yaxis2=dict(domain=[0.235, 0.315], anchor="x2", visible=False, range=[-1, 0]))

    def updates(k: int) -> dict[int, dict]:
        out = {}
        for ci, case in enumerate(cases):
            rs = rows[case]
            r, prev = rs[k], rs[k - 1]
            colours = [PINK if i == k else GREY for i in range(len(rs))]
            pred = [None] * len(rs)
            if r["predicted_tflops"] is not None:
                pred[k] = round(r["predicted_tflops"], 1)
            if r["measured_speedup"] is None:
                text = f"<b>{r['label']}</b>: not measured ({r['status']})"
            else:
                lo, hi = _noise(prev, r)
                verdict = "inside the round-to-round spread" if lo <= 1 <= hi else "outside the round-to-round spread"
                text = (f"<b>{html.escape(r['label'], quote=False)}</b><br>predicted {r['predicted_speedup']:.2f}×, "
                        f"measured {r['measured_speedup']:.2f}×<br>(rounds {lo:.2f}–{hi:.2f}×: {verdict})")
            out[ci * 3] = {"marker.color": colours}
            out[ci * 3 + 1] = dict(y=pred)
            out[ci * 3 + 2] = dict(text=[text])
        return out

    steps = []
    for k in range(1, len(names)):
        data_args, indices = restyle(fig, updates(k))
        steps.append(dict(method="update", label=f"{k}", args=[data_args, {"annotations[0].text": _diff_html(diffs[k - 1])},
                                                                 indices]))
    for i, attrs in updates(1).items():
        fig.data[i].update(attrs)
    fig.add_annotation(text=_diff_html(diffs[0]), xref="paper", yref="paper", x=0, y=0.215, xanchor="left",
                       yanchor="top", align="left", showarrow=False, font=dict(family=MONO, size=10))
    fig.add_annotation(text=provenance, xref="paper", yref="paper", x=0, y=0, yshift=-20, showarrow=False,
                       xanchor="left", yanchor="top", align="left", font=dict(size=9, color=GREY))
    menu = [dict(label=f"D={d} {'causal' if c else 'full'}", method="restyle",
                 args=[{"visible": [i // 3 == ci for i in range(len(fig.data))]}]) for ci, (d, c) in enumerate(cases)]
    fig.update_layout(sliders=[slider(steps, prefix="step ", y=0.45, pad_t=0)],
                      updatemenus=[buttons(menu, x=0, y=1.03, dropdown=True)])
    fig.update_layout(yaxis=dict(title=dict(text="TFLOP/s", font=dict(size=10)), rangemode="tozero"),
                      xaxis=dict(tickangle=-35, tickfont=dict(size=9)))
    shape = doc["records"][0]["shape"]
    return finish(fig, f"The ablation, one switch at a time ({doc['records'][0]['dtype']}, B={shape['B']}, "
                       f"N={shape['Nq']})", 784, short_title="The ablation, one switch at a time", top=84, bottom=60)
