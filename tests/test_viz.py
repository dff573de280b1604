"""Plot functions take data and return Figures, read run records (as `metrics.json` holds them) checked, and refuse bad input."""
import matplotlib
matplotlib.use("Agg")
import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from mesa_nb.core import MesaError
from mesa_nb.viz import (after_defense_frame, embed, plot_after_defense, plot_detection, plot_detection_matrix, plot_embedding,
                         plot_trigger_grid, plot_training_curves)


def record(tid, base=(), mesa=None, ideal=None, target=0):
    "A backdoored run's record, as `metrics.json` holds it, with only the parts given."
    d = dict(mesa={k: dict(accuracy=0.95, **v) for k, v in (mesa or {}).items()})
    if base: d["baseline"] = dict(runs=[dict(accuracy=0.9, asr=a) for a in base])
    if ideal is not None: d["ideal"] = dict(accuracy=0.97, asr=ideal)
    trigger = None if tid is None else dict(kind="canonical", id=tid, name=f"canonical:{tid}", target=target, location="random", pattern=[])
    return dict(dataset="cifar10", model="smallcnn", seed=0, trigger=trigger, clean=dict(accuracy=0.9), attack=dict(accuracy=0.9),
                detection=dict(per_class_asr=[0.1] * 10, threshold=0.5, flagged=[]), defense=d if tid is not None else {})


def test_fig4_sorted_by_baseline_and_tolerates_missing_parts():
    recs = [record(170, [0.4], {"0.9": {"asr": 0.03}, "ensemble": {"asr": 0.02}}, 0.01),
            record(0, [0.1], {"0.9": {"asr": 0.02}}),                    # no ensemble, no ideal
            record(7, [0.2], {"0.5": {"valid": False}}, 0.02)]             # an invalid sub-model measured without an ASR
    fig = plot_after_defense(recs)
    assert isinstance(fig, Figure)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["0", "7", "170"]
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert ["baseline", "MESA β=0.9", "MESA ensemble", "ideal"] == labels         # β=0.5: no ASR, no entry; the baseline first


def test_fig4_draws_every_baseline_run_so_the_worst_is_seen():
    r = record(170, [0.01, 0.02, 0.6], {"ensemble": {"asr": 0.02}})
    frame = after_defense_frame([r])
    assert sorted(frame[frame.method == "baseline"].asr) == [0.01, 0.02, 0.6]
    ys = [y for c in plot_after_defense([r]).axes[0].collections for _, y in c.get_offsets()]
    assert 0.6 in [round(float(y), 6) for y in ys]


def test_fig4_takes_a_method_it_has_never_seen(monkeypatch):
    "A new defense method gets its column from `Defenses.methods` alone."
    from mesa_nb.record import Defenses, RunRecord
    real = Defenses.methods
    monkeypatch.setattr(Defenses, "methods", lambda self: {**real(self), "pruning": [self.ideal]})
    r = RunRecord.from_json(record(170, [0.3], {"ensemble": {"asr": 0.02}}, 0.05))
    assert after_defense_frame([r]).query("method == 'pruning'").asr.tolist() == [0.05]
    assert "pruning" in plot_after_defense([r]).axes[0].get_legend_handles_labels()[1]


def test_detection_matrix_boxes_each_target_and_takes_clean_controls():
    fig = plot_detection_matrix([record(170, target=3), record(0), record(None)])
    assert [(p.get_x(), p.get_y()) for p in fig.axes[0].patches] == [(3, 0), (0, 1)]
    with pytest.raises(MesaError, match="run record 0 is not a RunRecord: detection is missing"):
        plot_detection_matrix([{k: v for k, v in record(None).items() if k != "detection"}])


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
