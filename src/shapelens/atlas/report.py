"""Assemble result objects into the atlas: a self-contained ``index.html`` and ``atlas.json``.

The atlas computes nothing of its own (DESIGN.md): a caller runs the analyses, wraps each
result in a :class:`Section` (title, one or two sentences on what it means, the result, an
optional table of numbers) and :func:`write_atlas` renders it. Figures come from the
results' own ``plot(ax)`` methods, are drawn on a plain :class:`matplotlib.figure.Figure`
(Agg, no pyplot global state), written as PNG files and embedded base64 in the page, so the
page needs no network, CSS, JavaScript or font from anywhere else.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as _dt
import io
import json
import math
import platform
import re
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._results import jsonable

__all__ = ["Section", "Table", "AtlasPaths", "write_atlas", "environment_meta"]

_ID_RE = re.compile(r"^[a-z][a-z0-9-]*$")


@dataclasses.dataclass(frozen=True)
class Table:
    """A table of numbers shown under a section's figure.

    ``rows`` hold strings, ints or floats; floats are printed with ``digits`` decimals and
    NaN/None as an em dash.
    """

    columns: tuple[str, ...]
    rows: tuple[tuple[Any, ...], ...]
    digits: int = 2

    def __post_init__(self) -> None:
        object.__setattr__(self, "columns", tuple(str(c) for c in self.columns))
        object.__setattr__(self, "rows", tuple(tuple(r) for r in self.rows))
        for i, row in enumerate(self.rows):
            if len(row) != len(self.columns):
                raise ValueError(
                    f"table row {i} has {len(row)} cells but there are {len(self.columns)} columns; "
                    "give every row one cell per column."
                )

    def formatted(self) -> list[list[str]]:
        return [[_fmt(v, self.digits) for v in row] for row in self.rows]

    def to_dict(self) -> dict:
        return {"columns": list(self.columns), "rows": jsonable([list(r) for r in self.rows])}


@dataclasses.dataclass(frozen=True)
class Section:
    """One section of the atlas.

    Parameters
    ----------
    id : stable identifier, lower-case letters, digits and dashes (``"layer-id-profile"``);
        it becomes the HTML anchor, the ``id`` of the figure's ``<img>`` and the figure's
        file name.
    title : heading.
    text : what the section shows and how to read it, in one or two sentences.
    result : the result object (anything with ``to_dict()``), or a mapping label -> result
        when a section shows several (e.g. the same profile by two estimators).
    summary : one line with the headline numbers (printed by the CLI, shown on the page).
    table : numbers shown under the figure.
    plot : ``plot(ax)`` drawing the figure; by default ``result.plot(ax=ax)`` (for a
        mapping, every result that has ``plot`` draws on the same axes). ``None`` and no
        ``plot`` on the result: no figure.
    figure_alt : alternative text of the figure (defaults to the title).
    """

    id: str
    title: str
    text: str
    result: Any = None
    summary: str = ""
    table: Table | None = None
    plot: Callable[[Any], Any] | None = None
    figure_alt: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID_RE.match(self.id):
            raise ValueError(
                f"section id {self.id!r} must be lower-case letters, digits and dashes starting with a "
                "letter (it is used as an HTML id and a file name), e.g. 'layer-id-profile'."
            )

    def draw(self, ax: Any) -> bool:
        """Draw the section's figure on ``ax``; return False when it has none."""
        if self.plot is not None:
            self.plot(ax)
            return True
        results = self.result.values() if isinstance(self.result, Mapping) else [self.result]
        drew = False
        for r in results:
            if r is not None and callable(getattr(r, "plot", None)):
                r.plot(ax=ax)
                drew = True
        return drew

    def result_dict(self) -> Any:
        if isinstance(self.result, Mapping):
            return {str(k): _to_dict(v) for k, v in self.result.items()}
        return _to_dict(self.result)


@dataclasses.dataclass(frozen=True)
class AtlasPaths:
    """Where :func:`write_atlas` put things, and each section's one-line summary."""

    out_dir: Path
    html: Path
    json: Path
    figures: tuple[Path, ...]
    summaries: tuple[tuple[str, str, str], ...]  # (section id, title, summary)
    meta: dict = dataclasses.field(default_factory=dict)


def environment_meta() -> dict:
    """Versions and date recorded in every atlas."""
    import matplotlib
    import torch

    from .. import __version__

    return {
        "shapelens_version": __version__,
        "torch_version": torch.__version__,
        "numpy_version": np.__version__,
        "matplotlib_version": matplotlib.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(terse=True),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def write_atlas(
    sections: Sequence[Section],
    out_dir: str | Path = "atlas",
    *,
    title: str = "shapelens atlas",
    meta: Mapping[str, Any] | None = None,
    intro: str = "",
) -> AtlasPaths:
    """Render sections into ``out_dir/index.html``, ``out_dir/atlas.json`` and ``out_dir/figures/``.

    ``index.html`` is self-contained: figures are embedded as ``data:image/png;base64``
    images and the styles are inline, so the file can be mailed or opened offline.
    ``atlas.json`` holds ``title``, ``meta`` (the caller's entries, e.g. seed, timings and
    accuracies, plus versions and date from :func:`environment_meta`) and, per section, its
    id, title, text, summary, table and the result's ``to_dict()``.

    The atlas computes nothing itself; every number comes from the results passed in.
    """
    t0 = time.perf_counter()
    sections = list(sections)
    if not sections:
        raise ValueError("write_atlas needs at least one Section; build the sections from results first.")
    seen: set[str] = set()
    for s in sections:
        if not isinstance(s, Section):
            raise TypeError(f"sections must be shapelens.atlas.Section objects, got {type(s).__name__}.")
        if s.id in seen:
            raise ValueError(f"two sections share the id {s.id!r}; give every section its own id.")
        seen.add(s.id)

    out = Path(out_dir)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)

    rendered = []
    figures: list[Path] = []
    for s in sections:
        png = _render_png(s)
        fig_path = None
        if png is not None:
            fig_path = fig_dir / f"{s.id}.png"
            fig_path.write_bytes(png)
            figures.append(fig_path)
        rendered.append(
            {
                "id": s.id,
                "title": s.title,
                "text": s.text,
                "summary": s.summary,
                "alt": s.figure_alt or s.title,
                "image": None if png is None else "data:image/png;base64," + base64.b64encode(png).decode("ascii"),
                "figure_file": None if fig_path is None else f"figures/{fig_path.name}",
                "table": None if s.table is None else {"columns": s.table.columns, "rows": s.table.formatted()},
            }
        )

    full_meta = environment_meta()
    full_meta.update(dict(meta or {}))
    timings = dict(full_meta.get("timings") or {})
    timings["render_s"] = time.perf_counter() - t0
    full_meta["timings"] = timings

    doc = {
        "title": title,
        "meta": full_meta,
        "sections": [
            {
                "id": s.id,
                "title": s.title,
                "text": s.text,
                "summary": s.summary,
                "figure": r["figure_file"],
                "table": None if s.table is None else s.table.to_dict(),
                "result": s.result_dict(),
            }
            for s, r in zip(sections, rendered)
        ],
    }
    json_path = out / "atlas.json"
    json_path.write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False) + "\n", encoding="utf-8")

    html = _template().render(
        title=title,
        intro=intro,
        sections=rendered,
        meta_rows=_meta_rows(full_meta),
        generated=full_meta.get("date", ""),
        version=full_meta.get("shapelens_version", ""),
    )
    html_path = out / "index.html"
    html_path.write_text(html, encoding="utf-8")

    return AtlasPaths(
        out_dir=out,
        html=html_path,
        json=json_path,
        figures=tuple(figures),
        summaries=tuple((s.id, s.title, s.summary) for s in sections),
        meta=jsonable(full_meta),
    )


# --------------------------------------------------------------------------- helpers

def _to_dict(result: Any) -> Any:
    if result is None:
        return None
    if callable(getattr(result, "to_dict", None)):
        return result.to_dict()
    return jsonable(result)


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "\u2014"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}".replace(",", "\u2009") if abs(int(value)) >= 10000 else str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return "\u2014"
        if math.isinf(f):
            return "\u221e" if f > 0 else "\u2212\u221e"
        if f != 0 and (abs(f) < 10 ** (-digits) or abs(f) >= 1e6):
            return f"{f:.{max(digits, 1)}e}"
        return f"{f:.{digits}f}"
    return str(value)


def _meta_rows(meta: Mapping[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, value in meta.items():
        label = key.replace("_", " ")
        if isinstance(value, Mapping):
            parts = []
            for k, v in value.items():
                if str(k).endswith("_s"):  # durations in seconds
                    parts.append(f"{str(k)[:-2].replace('_', ' ')} {_fmt(v, 2)} s")
                else:
                    parts.append(f"{str(k).replace('_', ' ')} {_fmt(v, 4)}")
            rows.append((label, ", ".join(parts)))
        elif isinstance(value, (list, tuple)):
            rows.append((label, ", ".join(_fmt(v, 4) for v in value)))
        else:
            rows.append((label, _fmt(value, 4)))
    return rows


def _render_png(section: Section) -> bytes | None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if not section.draw(ax):
        return None
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    return buf.getvalue()


def _template():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("shapelens.atlas", "templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
    )
    return env.get_template("index.html.j2")
