"""Plot functions take data and return Figures, read SPEC §7 records as written, and refuse bad input."""
import matplotlib
matplotlib.use("Agg")
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from mesa_nb.core import MesaError
from mesa_nb.viz import (after_defense_frame, embed, plot_after_defense, plot_detection, plot_detection_matrix, plot_embedding,
                         plot_trigger_grid, plot_training_curves)


def record(tid, base=None, mesa=None, ideal=None):
    d = {}
    if base is not None: d["baseline"] = dict(runs=[], asr_mean=base, asr_std=0.1, asr_max=base + 0.1)
    if mesa is not None: d["mesa"] = mesa
    if ideal is not None: d["ideal"] = dict(accuracy=0.97, asr=ideal)
    return dict(trigger=dict(kind="canonical", id=tid, target=0), defense=d)


def test_fig4_sorted_by_baseline_and_tolerates_missing_parts():
    recs = [record(170, 0.4, {"0.9": {"asr": 0.03}, "ensemble": {"asr": 0.02}}, 0.01),
            record(0, 0.1, {"0.9": {"asr": 0.02}}),                   # no ensemble, no ideal
            record(7, 0.2, {"0.5": {"valid": False}}, 0.02)]            # an invalid sub-model has no ASR
    fig = plot_after_defense(recs)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "7", "170"]
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert {"baseline", "ideal", "MESA β=0.9", "MESA ensemble"} == set(labels)   # β=0.5: never valid, no entry


def test_fig4_draws_every_baseline_run_so_the_worst_is_seen():
    r = record(170, None, {"ensemble": {"asr": 0.02}})
    r["defense"]["baseline"] = dict(runs=[dict(asr=a) for a in (0.01, 0.02, 0.6)])
    frame = after_defense_frame([r])
    assert sorted(frame[frame.method == "baseline"].asr) == [0.01, 0.02, 0.6]
    ys = [y for c in plot_after_defense([r]).axes[0].collections for _, y in c.get_offsets()]
    assert 0.6 in [round(float(y), 6) for y in ys]


def test_detection_matrix_boxes_each_target_and_takes_clean_controls():
    rec = lambda t, target: dict(trigger=dict(kind="canonical", id=t, target=target) if target is not None else None,
                                 detection=dict(per_class_asr=[0.1] * 10))
    fig = plot_detection_matrix([rec(170, 3), rec(0, 0), rec(None, None)])
    assert [(p.get_x(), p.get_y()) for p in fig.axes[0].patches] == [(3, 0), (0, 1)]
    with pytest.raises(MesaError, match="needs `detection`"): plot_detection_matrix([dict(trigger=None)])


def test_other_plots_return_figures():
    assert isinstance(plot_detection([0.9, 0.1, 0.0]), Figure)
    assert isinstance(plot_trigger_grid({"a": torch.rand(3, 3, 3, 3)}), Figure)
    xy = embed(torch.rand(20, 27))
    assert xy.shape == (20, 2) and isinstance(plot_embedding(xy, None, torch.rand(20, 3, 3, 3), thumbnails=5), Figure)
    h = {"step": torch.arange(3), "hinge": torch.rand(3, 2)}
    assert len(plot_training_curves(h).axes) == 1


def test_bad_input():
    with pytest.raises(MesaError, match="no run records"): plot_after_defense([])
    with pytest.raises(MesaError, match=r"coords must be \(n, 2\)"): plot_embedding(np.zeros((5, 3)))
    with pytest.raises(MesaError, match="3 group labels for 5 points"): plot_embedding(np.zeros((5, 2)), ["a"] * 3)
    with pytest.raises(MesaError, match="at least 3 triggers"): embed(torch.rand(2, 27))
    with pytest.raises(MesaError, match="'step'"): plot_training_curves({"hinge": torch.rand(3, 1)})
