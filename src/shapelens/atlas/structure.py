"""Atlas sections for models built from a :class:`~shapelens.structure.diagram.Diagram`: the
drawing of the diagram and the commutativity error of each declared equation on data.

A model was built from a diagram when it carries the diagram as ``model.diagram`` (what
:meth:`Diagram.model` and :meth:`Path.as_morphism` return) or can produce it with
``model.diagram()`` (e.g. :class:`~shapelens.structure.bundle.BundleNetwork`). Everything shown
comes from :meth:`Diagram.check` and :func:`~shapelens.structure.draw.draw_diagram`; the section
computes nothing of its own.
"""

from __future__ import annotations

from typing import Any

from .report import Section, Table

__all__ = ["diagram_of", "structure_sections"]


def diagram_of(model: Any):
    """The :class:`~shapelens.structure.diagram.Diagram` a model was built from, or None: a
    Diagram itself, ``model.diagram`` when it is one, or ``model.diagram()`` when that method
    returns one."""
    from ..structure.diagram import Diagram

    if isinstance(model, Diagram):
        return model
    d = getattr(model, "diagram", None)
    if isinstance(d, Diagram):
        return d
    if callable(d):
        out = d()
        if isinstance(out, Diagram):
            return out
    return None


def structure_sections(model: Any, data: Any, *, seed: int = 0, section_id: str = "structure",
                       title: str | None = None, text: str | None = None, diagram: Any = None) -> list[Section]:
    """The atlas section of a model built from a diagram: its drawing, coloured by whether each
    equation commutes on ``data``, and a table of the relative errors.

    ``data`` is what :meth:`Diagram.check` takes: a tensor at the domain shared by every
    equation, or a dict object name -> tensor (a tuple of tensors for a product object).
    ``diagram`` overrides :func:`diagram_of` (e.g. when ``model.diagram()`` needs arguments).
    Returns ``[]`` when the model was not built from a diagram; a diagram without equations gets
    its drawing and a note instead of a table. The diagrams follow Fong & Spivak (2019); the
    bundle networks Courts & Kvinge (ICLR 2022).
    """
    d = diagram if diagram is not None else diagram_of(model)
    if d is None:
        return []
    what = (f"{len(d.objects)} objects, {len(d.morphisms)} morphisms and {len(d.equations)} declared "
            f"equation{'s' if len(d.equations) != 1 else ''}")
    intro = text or (
        f"The model was built from the diagram {d.name!r} ({what}): objects are typed spaces, arrows are the "
        "network's pieces, and each numbered marker is an equation between two paths that the architecture "
        "should satisfy (a commuting square or triangle; an equivariance constraint is the square act(g) >> f "
        "== f >> act(g)). The relative error ||lhs(x) - rhs(x)|| / ||rhs(x)|| is measured per example on the "
        "data; green: the equation holds within its tolerance, red: it does not."
    )
    if not d.equations:
        return [Section(id=section_id, title=title or f"Structure: the diagram {d.name!r}",
                        text=intro + " This diagram declares no equations, so there is nothing to check.",
                        result=None, summary=f"{what}; no equations to check",
                        plot=lambda ax: d.draw(ax=ax),
                        figure_alt=f"The diagram {d.name}")]
    check = d.check(data, seed=seed)
    rows = tuple((e.name, f"{e.lhs} == {e.rhs}", e.mean, e.max, e.tol, "yes" if e.commutes else "no")
                 for e in check.equations)
    n_ok = sum(e.commutes for e in check.equations)
    worst = max(check.equations, key=lambda e: e.max)
    summary = (f"{n_ok} of {len(check.equations)} equations commute on {check.equations[0].n_examples} examples; "
               + "; ".join(f"{e.name}: max relative error {e.max:.2g}" for e in check.equations))
    if n_ok < len(check.equations):
        summary += f" (worst: {worst.name})"
    return [Section(
        id=section_id,
        title=title or f"Structure: the diagram {d.name!r} and its commutativity errors",
        text=intro,
        result=check,
        summary=summary,
        table=Table(columns=("equation", "statement", "mean rel. error", "max rel. error", "tolerance", "commutes"),
                    rows=rows, digits=3),
        plot=lambda ax: d.draw(ax=ax, check=check),
        figure_alt=f"The diagram {d.name} with each equation coloured by whether it commutes on the data",
    )]
