"""The site's presentation code: charts, tables and display helpers over ``docs/data``.

Imports neither torch nor triton, so the site renders its charts on any machine.

- ``theme``: the one Plotly template, colours and labels per provider, light and dark.
- ``query``: questions asked of the benchmark records (which cases, which pairs).
- ``fmt``: numbers as the posts print them.
- ``figures``: Plotly figures; ``render``: a figure as a non-blocking HTML fragment.
- ``tables``: HTML tables with captions and notes.
- ``notebook``: ``show``, ``md``, ``show_source`` for the executed posts.
- ``home``: the home page's headline chart and sentence.
- ``explore``: the explorable figures (sliders and buttons over the kernels' own logic).
- ``hooks``: the MkDocs hooks (loaded by MkDocs, not imported by the rest).
"""
