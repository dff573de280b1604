"""The README's entry points, end to end: `mesa-nb demo`, `mesa-nb attack` with resumption, bad CLI input."""
import json

from conftest import run_cli

SPEC_KEYS = {"dataset", "model", "seed", "trigger", "clean", "attack", "timing", "environment"}


def test_demo_main_job(tmp_path):
    r = run_cli("demo", "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    runs = sorted((tmp_path/"outputs"/"demo").glob("*/metrics.json"))
    assert [p.parent.name for p in runs] == ["digits-smallcnn-0-t0-s0", "digits-smallcnn-170-t0-s0"]
    for p in runs:
        m = json.loads(p.read_text())
        assert SPEC_KEYS <= m.keys()
        # a serious attack: ASR >= 0.95 and at most 2 points of clean accuracy lost
        assert m["attack"]["asr"] >= 0.95, m["attack"]
        assert m["attack"]["accuracy"] >= m["clean"]["accuracy"] - 0.02
        assert m["clean"]["accuracy"] >= 0.93 and m["clean"]["asr"] <= 0.2
        assert m["environment"]["device"] == "cpu" and m["environment"]["torch"]
    assert "| canonical:170 | 0 |" in r.stdout


def test_attack_resumes_and_redoes_a_killed_run(tmp_path):
    args = ["attack", "--trigger", "170", "color:3", "--clean-epochs", "2", "--attack-epochs", "1",
            "--device", "cpu", "--out", tmp_path]
    assert run_cli(*args).returncode == 0
    done = tmp_path/"digits-smallcnn-color3-t0-s0"/"metrics.json"
    before = json.loads(done.read_text())
    assert before["trigger"]["kind"] == "color" and len(before["trigger"]["pattern"]) == 3
    # simulate a run killed before it finished: its folder exists but has no metrics.json
    (tmp_path/"digits-smallcnn-170-t0-s0"/"metrics.json").unlink()
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    assert "reusing clean-digits-smallcnn-s0-" in r.stdout
    assert "digits-smallcnn-color3-t0-s0: finished earlier, skipping" in r.stdout
    assert "digits-smallcnn-170-t0-s0: accuracy" in r.stdout          # redone
    assert json.loads(done.read_text()) == before                     # the finished run is untouched
    assert (tmp_path/"digits-smallcnn-170-t0-s0"/"metrics.json").is_file()
    # new clean-training settings train a new clean model; changed attack settings are refused, not reused
    r = run_cli(*args, "--attack-epochs", "2")
    assert r.returncode == 2 and "finished run with other settings (attack_epochs: 1 there, 2 now)" in r.stderr


def test_triggers_lists_51():
    r = run_cli("triggers")
    ids = list(map(int, r.stdout.split()))
    assert len(ids) == 51 and ids[:3] == [0, 1, 2] and ids[-1] == 186


def one_line_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mesa-nb: error:"), r.stderr
    for n in needles: assert n in lines[0], lines[0]


def test_bad_cli_input(tmp_path):
    out = ["--out", tmp_path/"never"]
    one_line_error(run_cli("attack", "--trigger", "4", *out), "variant of canonical trigger 1")
    one_line_error(run_cli("attack", "--trigger", "plus", *out), "unknown trigger 'plus'")
    one_line_error(run_cli("attack", "--preset", "fast", *out), "unknown preset 'fast'")
    one_line_error(run_cli("attack", "--target", "10", *out), "outside the label range [0, 10)")
    one_line_error(run_cli("attack", "--ratio", "1.5", *out), "poison ratio must be in [0, 1]")
    one_line_error(run_cli("attack", "--dataset", "mnist", *out), "unknown dataset 'mnist'")
    one_line_error(run_cli("attack", "--preset", "cpu", "--data-dir", tmp_path/"nothing-here", *out),
                   "cifar10 not found", "cifar-10-batches-py/", str(tmp_path/"nothing-here"))
    one_line_error(run_cli("attack", "--device", "tpu", *out), "unknown device 'tpu'")
    assert not (tmp_path/"never").exists()
    r = run_cli("attack", "--clean-epochs", "two")
    assert r.returncode == 2 and "invalid int value: 'two'" in r.stderr
