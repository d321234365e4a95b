"""Monitoring logic of raymlp: pure, testable without Ray actors.

The ``monitor`` actor (``actors/monitor.py``) is a thin shell around :class:`MonitorCore`:

==================  ===========================================================================
module              concept
==================  ===========================================================================
``records``         the prediction/feedback record contract, Delta row schemas
``reference``       the training reference profile (per-feature grids for live comparison)
``stats``           PSI, KS, chi-square, Jensen-Shannon, Wasserstein, z-test, AUC (vectorised)
``windows``         time-bucketed, mergeable cells (performance, accuracy, fairness)
``drift``           per-version feature cells: drift + data quality against the profile
``accuracy``        label outcomes (accuracy/AUC from feedback) and fairness slices
``traffic``         the in-memory windows of all models + the feedback join
``signals``         named, labelled signals over a window (what alert rules watch)
``alerts``          the rule engine: pending / firing / resolved, deduplicated
``canary``          canary analysis and the step-plan state machine
``metrics``         Prometheus series (stable names) and the Ray-dashboard mirror
``core``            :class:`MonitorCore`: all of the above behind one object
``report``/``html`` the report dict, its text form and its HTML page (inline SVG)
``notify``          alert delivery: log, registry event stream, webhooks
``logtable``        the Delta tables under ``<root>/monitoring/``
``batch``           dataset-vs-dataset drift at scale (benchmark, offline comparisons)
==================  ===========================================================================

Example (no cluster needed)::

    from raymlp.config import MonitorSettings
    from raymlp.monitoring import MonitorCore, normalize_predictions

    core = MonitorCore(MonitorSettings(), profile_for=lambda model, version: None)
    core.ingest_predictions(normalize_predictions([{"request_id": "r1", "model": "churn",
                                                    "version": 1, "latency_ms": 3.0}]))
    core.evaluate()
"""

from raymlp.monitoring.core import MonitorCore
from raymlp.monitoring.records import (
    ROUTES,
    normalize_feedback,
    normalize_feedbacks,
    normalize_prediction,
    normalize_predictions,
)
from raymlp.monitoring.reference import ReferenceProfile

__all__ = [
    "MonitorCore",
    "ReferenceProfile",
    "ROUTES",
    "normalize_prediction",
    "normalize_predictions",
    "normalize_feedback",
    "normalize_feedbacks",
]
