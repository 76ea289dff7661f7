"""Reported figures of each reproduced paper, kept as data beside the code.

Each paper has one YAML file in ``bench/report/papers/<paper>.yaml``. A file holds the
paper's id, title and citation, the matrix its figures belong to, and a list of
``figures``. A figure is one number the paper reports (a table cell or a number
quoted in the text), with where it comes from, what it measures, and which
cell(s) of a collected results table reproduce it::

    paper: menghani2019
    title: Learning from a Teacher using Unlabeled Data
    citation: G. Menghani, S. Ravi. ... 2019.
    matrix: menghani2019            # default matrix of every figure
    notes: [...]                    # paper-level ambiguities
    figures:
      - id: menghani2019/table1/cnn->mlp/finetune   # unique, starts with "<paper>/"
        source: "Table 1, row 3, column S'"
        table: "Table 1"            # figures with the same table form one report table
        label: "CNN -> MLP, S'"     # row/column label in the report
        metric: test_acc            # a metric column of the results table
        metric_definition: "..."    # what the paper measured ("not stated" if unknown)
        value: 0.9816               # always a fraction (98.16% -> 0.9816)
        kind: value                 # value | relative_gain | absolute_gain
        matrix: menghani2019        # optional; defaults to the paper's matrix
        alt_metrics: []             # optional: other metrics the paper's number may be (an
                                    # ambiguous "accuracy"); reports show each beside ``metric``
        cells:
          select: {stage: finetune, arch: menghani_mlp, teacher.arch: menghani_cnn}
          baseline: {...}           # gains only: the reference cell group
        notes: "..."                # optional: ambiguity of this figure
        transfers: {form: gain, why: "..."}  # optional, gains only: judge it on stand-ins too
                                    # ({form: none, why: ...}: reviewed, does not carry over)

On a stand-in matrix (other data or models than the paper's) a figure's reading is shown but
its verdict is ``other data`` (not judged, not counted as reproduced or not) unless the figure
declares ``transfers:``: a gain over the paper's own baseline can carry over where an absolute
accuracy cannot; the reason is reviewed per figure and kept in the file.

Kinds and units (every value is a fraction, never a percentage):

* ``value``: the metric of the rows matching ``select`` (mean over seeds).
* ``relative_gain``: ``(a - b) / b`` with ``a`` from ``select`` and ``b`` from
  ``baseline``; a "9.37 % relative increase" is stored as ``0.0937``.
* ``absolute_gain``: ``a - b``; "+8.30 percentage points" is stored as ``0.083``.

A results-table row matches a selection when its ``matrix`` column equals the
figure's matrix and, for every ``select`` key, the column exists and its value
equals the wanted one: numbers compare as floats (``math.isclose``), strings as
strings (an empty cell, NaN or None, reads as ``""``), bools as bools, and a
list (``augment: [crop, flip]``) matches a list/tuple cell, or its comma-joined
text ("crop,flip", as ``bench.results.collect`` writes it), with the same items in any
order (``[]`` matches an empty cell). Select keys are results-table columns: cell fields (``stage``,
``arch``, ``label_fraction``, ...) and parent fields as ``role.field``
(``teacher.arch``); ``matrix`` and ``seed`` may not be selected on. Rows whose
metric is empty (a failed or unfinished run) are ignored.

Stand-ins. A matrix that runs a paper's design on other data or models says which of its cells
stand in for which figure in its top-level ``stand_in:`` section (figure id glob -> selector of
its own cells, e.g. ``"nguyen2021/table1/crop": {stage: augmentation, augment: [crop]}``);
``bench.report.stand_in`` validates it and finds a figure's entry (an exact id before globs,
then the first glob in file order). Without that section a stand-in matrix is matched by the
figure's own selector without its data keys.
"""
from __future__ import annotations

import math
import re
from importlib import resources
from typing import Annotated, Any, Literal, Union

import numpy as np
import pandas as pd
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from bench.errors import BenchError, ConfigError
from bench.matrix.selectors import as_text as _as_text, rule_matches, value_problem
from bench.yaml_input import parse_yaml, validate

PAPERS_PACKAGE = "bench.report.papers"

# test_agreement: a kd student's agreement with its teacher on test (nguyen2021's Table 2 may be one).
Metric = Literal["test_acc", "val_acc", "train_acc", "test_agreement"]
Kind = Literal["value", "relative_gain", "absolute_gain"]
# A select value (bench.matrix.selectors): a scalar, a list of accepted scalars, or [[crop, flip]] for a list field.
Scalar = Union[str, int, float, bool, list[Union[str, int, float]]]

# The verdict's band around a reported value when neither the figure nor its paper says otherwise:
# 2 points for accuracies and absolute gains (what one seed differs across machines), 2% of the
# baseline for relative gains (the gains papers report are a few %: a wider band would call a
# loss a reproduced gain). A paper file may set its own (`tolerances:`), a figure its own.
DEFAULT_TOLERANCES: dict[str, float] = {"value": 0.02, "absolute_gain": 0.02, "relative_gain": 0.02}

# Columns a selection may not name: the matrix is the figure's own field, and seeds
# are what a figure averages over.
RESERVED_SELECT_KEYS = frozenset({"matrix", "seed"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked_selection(value: dict[str, Any]) -> dict[str, Scalar]:
    """A selector of results-table rows (``bench.matrix.selectors``' language), or ValueError."""
    for key, wanted in value.items():
        problem = value_problem(wanted)
        if problem:
            raise ValueError(f"column {key!r}: {problem}")
    bad = sorted(RESERVED_SELECT_KEYS & set(value))
    if bad:
        raise ValueError(f"may not select on {', '.join(bad)} (the matrix is the figure's field; seeds are averaged)")
    if any(not key.strip() for key in value):
        raise ValueError("column names must not be empty")
    return value


Selection = Annotated[dict[str, Any], Field(min_length=1), AfterValidator(_checked_selection)]


class Cells(_Strict):
    """Which rows of a results table a figure corresponds to."""

    select: Selection
    baseline: Selection | None = None


class Transfers(_Strict):
    """Why a figure's reading can be judged on a stand-in (other data or models): it is stated in a
    form that carries over, such as a gain over the paper's own baseline, not an absolute number."""

    form: Literal["gain", "none"]  # "none": reviewed, and the figure's number does not carry over (the why says why)
    why: str = Field(min_length=1)


class Figure(_Strict):
    """One number a paper reports, and the cells that reproduce it."""

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    table: str = Field(min_length=1)
    label: str = Field(min_length=1)
    metric: Metric
    metric_definition: str = Field(min_length=1)
    value: float
    kind: Kind
    matrix: str = Field(min_length=1)
    cells: Cells
    alt_metrics: tuple[Metric, ...] = ()
    notes: str = ""
    tolerance: float | None = Field(None, gt=0.0, description="half-width of the band around `value` within which a "
                                    "reproduction counts as reproduced (a fraction; default: the paper's `tolerances`)")
    transfers: Transfers | None = Field(None, description="judge this figure on stand-in matrices too (reviewed per "
                                        "figure, with the reason); without it a stand-in's reading is `other data`")

    @property
    def band(self) -> float:
        """The tolerance this figure's verdict uses: its own, else the default of its kind."""
        return self.tolerance if self.tolerance is not None else DEFAULT_TOLERANCES[self.kind]

    @property
    def metrics(self) -> tuple[str, ...]:
        """``metric`` and then ``alt_metrics``: every reading of the figure a report shows."""
        return (self.metric, *self.alt_metrics)

    @model_validator(mode="after")
    def _check(self) -> "Figure":
        if len(set(self.metrics)) != len(self.metrics):
            raise ValueError(f"{self.id}: alt_metrics repeats a metric (or names `metric` itself)")
        if not math.isfinite(self.value):
            raise ValueError(f"{self.id}: value must be finite")
        if self.kind == "value":
            if self.transfers is not None and self.transfers.form != "none":
                raise ValueError(f"{self.id}: an absolute value does not transfer to other data (`transfers` is for gains)")
            if self.cells.baseline is not None:
                raise ValueError(f"{self.id}: kind 'value' takes no cells.baseline")
            if not 0.0 <= self.value <= 1.0:
                raise ValueError(f"{self.id}: value {self.value} is not a fraction in [0, 1] (convert percentages)")
        else:
            if self.cells.baseline is None:
                raise ValueError(f"{self.id}: kind {self.kind!r} needs cells.baseline")
            if self.cells.baseline == self.cells.select:
                raise ValueError(f"{self.id}: cells.select and cells.baseline are the same cells")
            if self.kind == "absolute_gain" and not -1.0 <= self.value <= 1.0:
                raise ValueError(f"{self.id}: absolute gain {self.value} is not in [-1, 1] (convert percentage points)")
            if self.kind == "relative_gain" and not self.value > -1.0:
                raise ValueError(f"{self.id}: relative gain {self.value} must be > -1 (a fraction, not a percentage)")
        return self


class Claim(_Strict):
    """An ordering a paper states rather than a number it reports ("data distillation beats the
    supervised model on the labeled subset"): the ``higher`` cells' ``metric`` exceeds the
    ``lower`` cells'. It is judged within each value of the ``per`` columns (say, per label
    fraction); a side whose selector fixes a ``per`` column (the fully supervised bound's
    ``label_fraction: 1.0``) is the same on every such comparison. With ``gain_over: teacher`` the
    sides are gains (each cell over its own teacher, found by lineage), so "distillation gains more
    at fewer labels" is a claim too. ``bench.report.claims`` evaluates it
    on any matrix of the paper whose cells the selectors fit (the data distillation matrices
    share stage names for that)."""

    id: str = Field(min_length=1)
    source: str = Field(min_length=1)
    statement: str = Field(min_length=1)
    metric: Metric = "test_acc"
    higher: Selection
    lower: Selection
    per: tuple[str, ...] = ()
    gain_over: str | None = Field(None, pattern=r"^[A-Za-z0-9_]+$", description="compare gains instead of values: "
                                  "each cell's metric minus that of the cell it needs in this role (its `teacher`)")
    gain: Literal["relative", "absolute"] = "relative"
    notes: str = ""


class Paper(_Strict):
    """One paper's reported figures and stated claims."""

    paper: str = Field(min_length=1, pattern=r"^[a-z0-9_]+$")  # = the file name
    title: str = Field(min_length=1)
    citation: str = Field(min_length=1)
    matrix: str = Field(min_length=1)
    notes: list[str] = Field(default_factory=list)
    tolerances: dict[Kind, Annotated[float, Field(gt=0.0)]] = Field(default_factory=dict)
    figures: list[Figure] = Field(default_factory=list)
    claims: list[Claim] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _figure_defaults(cls, data: Any) -> Any:
        """A figure without its own ``matrix`` or ``tolerance`` takes the paper's."""
        if not (isinstance(data, dict) and isinstance(data.get("figures"), list)):
            return data
        tolerances = data.get("tolerances") if isinstance(data.get("tolerances"), dict) else {}
        figures = []
        for fig in data["figures"]:
            if isinstance(fig, dict):
                if "matrix" in data and "matrix" not in fig:
                    fig = {**fig, "matrix": data["matrix"]}
                if fig.get("tolerance") is None and fig.get("kind") in tolerances:
                    fig = {**fig, "tolerance": tolerances[fig["kind"]]}
            figures.append(fig)
        return {**data, "figures": figures}

    @model_validator(mode="after")
    def _check(self) -> "Paper":
        if not self.figures and not self.claims:
            raise ValueError("a paper file needs figures or claims")
        seen: set[str] = set()
        for kind, item in [("figure", fig) for fig in self.figures] + [("claim", claim) for claim in self.claims]:
            if not item.id.startswith(f"{self.paper}/"):
                raise ValueError(f"{kind} id {item.id!r} must start with '{self.paper}/'")
            if item.id in seen:
                raise ValueError(f"{kind} id {item.id!r} appears twice")
            seen.add(item.id)
        return self

    def figure(self, figure_id: str) -> Figure:
        for fig in self.figures:
            if fig.id == figure_id:
                return fig
        raise BenchError(f"{self.paper}: no figure {figure_id!r}")


# --------------------------------------------------------------------------- loading


def parse_paper(text: str, source: str = "<string>") -> Paper:
    """Validate one paper file's YAML text; errors name the file and the field."""
    return validate(Paper, parse_yaml(text, source), source, "paper figures file")


def paper_names() -> list[str]:
    """The ids of the papers with a figures file, sorted."""
    root = resources.files(PAPERS_PACKAGE)
    return sorted(entry.name[: -len(".yaml")] for entry in root.iterdir() if entry.name.endswith(".yaml"))


def load_paper(paper: str) -> Paper:
    """Load and validate ``bench/report/papers/<paper>.yaml`` from the installed package."""
    resource = resources.files(PAPERS_PACKAGE).joinpath(f"{paper}.yaml")
    if not re.fullmatch(r"[a-z0-9_]+", paper) or not resource.is_file():
        raise BenchError(f"no figures file for paper {paper!r}; known: {', '.join(paper_names())}")
    source = f"bench/report/papers/{paper}.yaml"
    loaded = parse_paper(resource.read_text(encoding="utf-8"), source)
    if loaded.paper != paper:
        raise ConfigError(source, "paper", f"is {loaded.paper!r} but the file is named {paper}.yaml")
    return loaded


def all_papers() -> list[Paper]:
    """Every paper's figures, sorted by paper id; figure ids are unique across papers."""
    papers = [load_paper(name) for name in paper_names()]
    seen: dict[str, str] = {}
    for paper in papers:
        for fig in paper.figures:
            if fig.id in seen:
                raise BenchError(f"figure id {fig.id!r} appears in both {seen[fig.id]} and {paper.paper}")
            seen[fig.id] = paper.paper
    return papers


def figures_for_matrix(matrix: str) -> list[Figure]:
    """The figures (of any paper) that a given matrix reproduces, in file order."""
    return [fig for paper in all_papers() for fig in paper.figures if fig.matrix == matrix]


# --------------------------------------------------------------------------- reproducing


def select_rows(table: pd.DataFrame, matrix: str, select: dict[str, Scalar]) -> pd.DataFrame:
    """The rows of ``table`` in ``matrix`` matching every ``select`` key (a missing column matches nothing)."""
    wanted: dict[str, Scalar] = {"matrix": matrix, **select}
    if any(key not in table.columns for key in wanted):
        return table.iloc[0:0]
    mask = pd.Series(True, index=table.index)
    for key, value in wanted.items():
        mask &= table[key].map(lambda cell, want=value: rule_matches(cell, want)).astype(bool)
    return table[mask]


def _metric_values(table: pd.DataFrame, matrix: str, select: dict[str, Scalar], metric: str) -> pd.DataFrame:
    """Matching rows as a frame with columns ``seed`` (or NaN) and ``value``; rows without the metric are dropped."""
    rows = select_rows(table, matrix, select)
    if metric not in rows.columns:
        return pd.DataFrame({"seed": pd.Series(dtype=object), "value": pd.Series(dtype=float)})
    values = pd.to_numeric(rows[metric], errors="coerce").astype(float)
    seeds = rows["seed"] if "seed" in rows.columns else pd.Series(np.nan, index=rows.index)
    out = pd.DataFrame({"seed": seeds, "value": values})
    return out[out["value"].notna()]


def _summary(values: list[float] | np.ndarray) -> tuple[float, float, int]:
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    if n == 0:
        return math.nan, math.nan, 0
    std = float(np.std(arr, ddof=1)) if n > 1 else math.nan  # undefined for one seed; shown as "(n=1)"
    return float(np.mean(arr)), std, n


def _gain(kind: str, a: float, b: float) -> float:
    if kind == "absolute_gain":
        return a - b
    if b == 0:
        return math.nan
    return (a - b) / b


def seed_key(value: Any) -> str:
    """A seed as text, so that 0, 0.0 and "0" pair up; "" when empty."""
    text = _as_text(value)
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _per_seed(values: pd.DataFrame) -> pd.Series:
    """Mean metric per seed (rows with an empty seed are left out)."""
    keys = values["seed"].map(seed_key)
    keyed = values[keys != ""]
    return keyed.groupby(keys[keys != ""])["value"].mean()


def reproduce(figure: Figure, table: pd.DataFrame) -> dict[str, Any]:
    """The reproduced counterpart of ``figure`` from a collected results table.

    Returns ``id``, ``kind``, ``metric``, the ``reported`` value, ``mean``, ``std``
    and ``n`` (``n == 0``, mean/std NaN, when no row matches), ``paired`` (gains:
    whether computed per seed; None for values and when nothing matches) and
    ``n_select`` / ``n_baseline`` (rows matched on each side; ``n_baseline`` is
    None for values).

    * ``value``: mean, std (ddof=1 when n > 1, else 0) and n over matching rows.
    * gains: when both sides have rows with a common seed, the gain is computed
      per common seed (each side averaged within a seed first) and summarised
      over those seeds; otherwise one gain is computed from the two means
      (``n == 1``, ``std == 0``, ``paired == False``).
    """
    result: dict[str, Any] = {"id": figure.id, "kind": figure.kind, "metric": figure.metric, "reported": figure.value}
    after = _metric_values(table, figure.matrix, figure.cells.select, figure.metric)
    if figure.kind == "value":  # one value per seed (cells of one seed averaged first), as for gains
        by_seed = _per_seed(after) if after["seed"].map(seed_key).ne("").all() else after["value"]
        result.update(paired=None, n_select=len(after), n_baseline=None)
        return _judged(figure, by_seed.to_numpy(), result)

    assert figure.cells.baseline is not None  # guaranteed by Figure validation
    before = _metric_values(table, figure.matrix, figure.cells.baseline, figure.metric)
    result.update(n_select=len(after), n_baseline=len(before))
    if after.empty or before.empty:
        return _judged(figure, np.array([]), {**result, "paired": None})

    a_seed, b_seed = _per_seed(after), _per_seed(before)
    common = sorted(set(a_seed.index) & set(b_seed.index))
    if common:
        gains = [_gain(figure.kind, a_seed[s], b_seed[s]) for s in common]
        return _judged(figure, np.array(gains), {**result, "paired": True})

    gain = _gain(figure.kind, float(after["value"].mean()), float(before["value"].mean()))
    return {**_judged(figure, np.array([gain]), {**result, "paired": False}), "std": 0.0}


def _judged(figure: Figure, values: np.ndarray, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` with the summary of ``values`` (one per seed), its interval and the verdict
    (``bench.report.verdicts``): ``low``/``high``/``interval``, ``tolerance``, ``verdict`` and, when
    inconclusive, ``seeds_needed`` (about how many seeds in all would decide, or None)."""
    from bench.report.verdicts import interval, seeds_to_decide, verdict

    mean, std, n = _summary(values)
    found = interval(values)
    judged = verdict(figure.value, figure.band, found, n) if n else "no cells"
    needed = seeds_to_decide(mean, std, n, figure.value, figure.band) if judged == "inconclusive" else None
    return {**result, "mean": mean, "std": std, "n": n, "low": found.low, "high": found.high,
            "interval": found.method, "tolerance": figure.band, "verdict": judged, "seeds_needed": needed}
