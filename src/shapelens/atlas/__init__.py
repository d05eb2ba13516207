"""The atlas: a self-contained HTML report (``index.html``) and ``atlas.json`` assembled from results.

:func:`write_atlas` renders :class:`Section` objects (title, a sentence or two on what the
section means, a result with ``to_dict()`` and optionally ``plot(ax)``, a table of numbers);
:func:`run_demo` trains a small MLP on scikit-learn's digits and writes the demo atlas that
``shapelens atlas --demo`` produces. The atlas computes nothing of its own (DESIGN.md).
"""

from .report import AtlasPaths, Section, Table, environment_meta, write_atlas


def run_demo(out_dir="atlas", seed=0, **kwargs):
    """Train a small MLP on scikit-learn's digits and write the demo atlas (see :func:`shapelens.atlas.demo.run_demo`)."""
    from .demo import run_demo as _run_demo

    return _run_demo(out_dir, seed, **kwargs)


__all__ = ["write_atlas", "Section", "Table", "AtlasPaths", "environment_meta", "run_demo"]
