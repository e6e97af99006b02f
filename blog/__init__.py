"""The blog's presentation code: figures, tables and explorable figures built from the kernels and docs/data."""
