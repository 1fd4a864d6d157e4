"""The results reading (docs/results/reading.md) is its template rendered against the archive."""

import json
import re

import jinja2
import pytest

from benchmarks import reading

# Figures typed in the template outside placeholders, each with why it is not the archive's:
# the validation splits' sizes (the archive names the split, train[54000:], not the dataset's
# size), LOBSTER's plateau rule (a constant of the method's code, not a setting or a result) and
# a kernel's shape.
ALLOWED = {"6,000", "5,000", "1%", "3×"}
# A figure: a decimal or a thousands-separated count, a number before × or %, a knob like 1e-4.
FIGURE = re.compile(r"\d+(?:[.,]\d+)+|\d+(?:\.\d+)?\s*[×%]|\d+e-\d+")
PLACEHOLDER = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


def test_committed_reading_is_the_rendered_template():
  # Fails when the archive or the template changed without `python -m benchmarks.reading`.
  assert reading.OUTPUT.read_text() == reading.render()


def test_check_exits_1_when_stale(tmp_path, monkeypatch):
  stale = tmp_path / "reading.md"
  stale.write_text(reading.render().replace("Results and their reading", "Results"))
  monkeypatch.setattr(reading, "OUTPUT", stale)
  with pytest.raises(SystemExit) as exit_:
    reading.main(["--check"])
  assert "out of date" in str(exit_.value)


@pytest.mark.parametrize("placeholder, named", [
    ("{{ no_such_experiment.epochs }}", "no_such_experiment"),
    ("{{ lenet300100_mnist.methods.no_such_method.label }}", "no_such_method"),
    ("{{ lenet300100_mnist.methods.xrda.reference.no_such_key | d(2) }}", "no_such_key"),
    ("{{ front(lenet300100_mnist.methods.xrda, 0.123).test_error }}", "0.123"),
    ("{{ published(lenet5_mnist, 'no_such_paper').error }}", "no_such_paper"),
    # A value the archive holds as None (dense SGD counted on weights) is no figure either.
    ("{{ lenet300100_mnist.methods.sgd.reference.compression_weights_mean }}",
     "compression_weights_mean"),
    ("{{ exports.lenet5.no_such_key }}", "export_lenet5_report.json.no_such_key"),
])
def test_a_placeholder_the_archive_cannot_answer_names_itself(placeholder, named):
  with pytest.raises((reading.ReadingError, jinja2.UndefinedError), match=re.escape(named)):
    reading.render(placeholder)


def test_the_archived_lm_export_is_the_archived_head_neuron_run():
  """The reading cites the LM export as that of the archived head/neuron run (retrained by its
  command): the heads it removes and its test accuracy are that run's."""
  report = reading.exports()["lm_groups"]
  row = reading.summaries()["lm_shakespeare_equal"].methods.xrda_groups.front[0]
  assert sum(h.before - h.after for h in report.heads) == row.dead_groups.heads[0]
  assert 100 * (1 - report.test_accuracy) == pytest.approx(row.test_error, abs=1e-3)
  assert report.flipped_predictions == 0 and report.params < report.params_dense


def test_a_gap_whose_direction_the_archive_contradicts_raises():
  # xrda trails ERK gradual pruning on CIFAR-10: "better" there would be a wrong word.
  text = "{{ better(resnet20_cifar10.methods.xrda.front[0].test_error, " \
         "resnet20_cifar10.methods.gmp_erk.front[0].test_error) | d(2) }}"
  with pytest.raises(reading.ReadingError, match="better"):
    reading.render(text)


def _archive() -> dict[str, dict]:
  paths = (reading.RESULTS / "sweeps").glob("*.json")
  return {p.stem: json.loads(p.read_text()) for p in paths if not p.name.endswith(".trials.json")}


def test_a_new_figure_in_the_archive_changes_the_reading():
  archive = _archive()
  archive["resnet20_cifar10"]["methods"]["rigl_erk"]["front"][0]["test_error"] = 31.25
  assert "| 31.25 | 26.3× |" in reading.render(archive=archive)


def test_the_reading_fails_where_the_archive_turns_a_word_of_its_prose():
  # The prose says xrda trails ERK gradual pruning on CIFAR-10 ("points behind"); an archive
  # where it leads must stop the rendering, at the template's line, not print a wrong word.
  archive = _archive()
  archive["resnet20_cifar10"]["methods"]["xrda"]["front"][0]["test_error"] = 20.0
  with pytest.raises(reading.ReadingError, match=r"reading.template.md, line \d+: .*worse"):
    reading.render(archive=archive)


def test_formats():
  assert reading.signed(0.033) == "+0.03" and reading.signed(-0.13) == "-0.13"
  assert reading.signed(0.001) == "0.00"
  assert reading.seed_span([{"seeds": [1, 2]}, {"seeds": [3]}]) == "1-3"
  assert reading.seed_span([{"seeds": [1, 2]}]) == "1-2"
  assert reading.seed_span([{"seeds": [1, 3]}]) == "1, 3"
  assert reading.x(313.4) == "313" and reading.x(24.68) == "24.7"
  assert reading.pct(0.0798) == "8.0" and reading.pct(0.02) == "2.0"
  assert reading.pct(0.05, 2, False) == "5" and reading.target(0.998) == "99.8"
  assert reading.about(86.8) == "90" and reading.about(0.0089) == "0.009"
  assert reading.sci(1.5e-6) == "1.5e-6" and reading.sci(0.0001) == "1e-4"
  assert reading.count(431080) == "431,080"


def test_no_typed_figure_outside_placeholders():
  bare = PLACEHOLDER.sub(" ", reading.TEMPLATE.read_text())
  typed = {m.group() for m in FIGURE.finditer(bare)} - ALLOWED
  assert not typed, f"figures typed by hand in {reading.TEMPLATE.name}: {sorted(typed)}"


def test_unarchived_figures_are_counted():
  # Figures the archive does not keep (per-epoch histories, the removed short-budget runs) and a
  # paper's own table: typed on purpose. A new one is a decision, made here.
  text = reading.TEMPLATE.read_text()
  assert len(re.findall(r"\bunarchived\(", text)) == 41
  assert len(re.findall(r"\bpaper\(", text)) == 4


def test_the_equal_sparsity_verdicts_follow_the_archives_seeds():
  # A target where the pruning seeds spread apart from xrda's by more than the sum of the
  # stds turns "within the spread" into "trails"; one where a method has a single seed drops.
  archive = _archive()
  methods = archive["lenet300100_mnist"]["methods"]
  point = next(p for p in methods["gmp_erk"]["points"] if p["knob_value"] == 0.98)
  xrda = next(p for p in methods["xrda_target"]["points"] if p["knob_value"] == 0.98)
  point["test_error_mean"] = xrda["test_error_mean"] - 1.0
  rendered = reading.render(archive=archive)
  line = next(ln for ln in rendered.splitlines() if "98% of the weights zero" in ln)
  assert "xrda trails" in rendered.split(line)[1].split("\n- ")[0]
  point["test_error_std"] = None  # one seed: no verdict at 98%
  assert "98% of the weights zero" not in reading.render(archive=archive)


def test_versus_compares_a_language_model_on_its_test_perplexity():
  def point(mean, std):
    return dict(knob_value=0.9, seeds=[1, 2], compression_weights_mean=10.0,
                test_error_mean=60.0, test_error_std=0.1,
                test_perplexity_mean=mean, test_perplexity_std=std)

  summary = reading.Node({"methods": {"x": {"points": [point(5.0, 0.1)]},
                                      "g": {"points": [point(5.6, 0.2)]}}}, "lm")
  [v] = reading.versus(summary, "x", "g")
  assert v["metric"] == "test_perplexity" and (v["a"], v["b"]) == (5.0, 5.6)
  assert v["word"] == "leads" and abs(v["gap"] + 0.6) < 1e-9  # perplexity, not error, decides


def test_a_difference_that_rounds_to_nothing_has_no_sign():
  assert reading.d(-0.001) == "0.00" and reading.d(-0.006) == "-0.01" and reading.d(0.004) == "0.00"


def _finished_transformers(archive: dict[str, dict]) -> None:
  """The Transformer sweeps as they will stand once every run has finished (seed 0 fronts,
  seeds 1-2 at each target, the dense and head/neuron runs), from the LM's xrda front."""
  lm = archive["lm_shakespeare_equal"]["methods"]
  xrda_front = [dict(knob_value=v, compression_weights=c, compression=c * 0.7, test_error=60.0,
                     val_error=60.0, test_perplexity=p, val_perplexity=p,
                     dead_groups={"heads": [0, 16], "neurons": [n, 2048]})
                for v, c, p, n in ((0.5, 2.0, 10.34, 0), (0.8, 5.03, 10.54, 0),
                                   (0.9, 10.0, 10.92, 44), (0.95, 20.1, 10.83, 659))]
  lm["xrda_target"]["front"] = xrda_front
  tune = [r for r in lm["xrda_target"]["tune"] if "diverged" not in r]
  chosen = max(r["setting"] for r in tune)
  lm["xrda_target"]["tuned"]["chosen"] = chosen
  lm["xrda_target"]["tune"] = tune + [dict(tune[-1], setting=[2 * chosen[0], chosen[1]],
                                           diverged="Training diverged in epoch 1")]

  def row(base, ppl, **extra):
    return dict(base, test_perplexity=ppl, val_perplexity=ppl, **extra)

  def points(offset):
    return [dict(knob_value=r["knob_value"], seeds=[1, 2], test_perplexity_mean=r[
        "test_perplexity"] + offset, test_perplexity_std=0.05, test_error_mean=60.0,
        test_error_std=0.1, compression_weights_mean=r["compression_weights"])
        for r in xrda_front]

  lm["gmp_erk"].update(front=[row(r, 7.5 + i / 10) for i, r in enumerate(xrda_front)],
                       points=points(-3.0))
  lm["gmp_erk"]["tuned"]["chosen"] = 0.0005
  lm["xrda_target"]["points"] = points(0.0)
  lm["adamw"].update(front=[row(xrda_front[0], 7.2)])
  lm["sgd"] = dict(front=[row(xrda_front[0], 9.8)], tuned={"chosen": 0.1},
                   tune=[dict(setting=0.05, val_perplexity=11.0), dict(setting=0.1, val_perplexity=9.8),
                         dict(setting=0.2, val_perplexity=float("inf")),  # loss overflowed
                         dict(setting=0.4, diverged="Training diverged in epoch 1")])
  groups = row(xrda_front[2], 11.1, dead_groups={"heads": [3, 16], "neurons": [900, 2048]})
  lm["xrda_groups"].update(front=[groups])
  archive["lm_shakespeare_equal"]["missing"] = []
  vit = {"label": "ViT", "epochs": 10, "tune_epochs": 2, "methods": {}}
  for key, error in (("xrda_target", 40.0), ("gmp_erk", 35.0), ("xrda_2of4", 38.0),
                     ("gmp_2of4", 36.0)):
    vit["methods"][key] = {"front": [{"knob_value": 0.9, "test_error": error,
                                      "compression_weights": 10.0}],
                           "points": [dict(knob_value=0.9, seeds=[1, 2],
                                           test_error_mean=error, test_error_std=0.5,
                                           compression_weights_mean=10.0)]}
  for key, error in (("adamw", 30.0), ("sgd", 39.0)):
    vit["methods"][key] = {"front": [{"knob_value": None, "test_error": error,
                                      "compression_weights": 1.0}]}
  vit["methods"]["sgd"]["tuned"] = {"chosen": 0.1}
  archive["vit_cifar10_equal"] = vit


def _transformers(archive: dict[str, dict]) -> str:
  text = reading.render(archive=archive)
  return text.split("## Transformers")[1].split("## At the papers")[0]


def _in_short(archive: dict[str, dict]) -> str:
  return reading.render(archive=archive).split("## In short")[1].split("## At equal")[0]


def test_the_transformers_reading_renders_once_their_sweeps_have_finished():
  # The runs land over several sessions: the template must render at every stage, the last
  # included, and then say what the archive says.
  archive = _archive()
  _finished_transformers(archive)
  section = _transformers(archive)
  assert "xrda trails (3.00, spread 0.10)" in section  # each target's seeds, on perplexity
  assert "| dense (AdamW, at pruning's rate) | | 7.20 |" in section
  assert "| dense (SGD with momentum, tuned) | 9.80 | |" in section
  assert "dense\nSGD: 11.00 at 0.05, 9.80 at 0.1, diverged at 0.2, diverged at 0.4." in section
  flat = section.replace("\n", " ")
  assert "(it chose 0.1), reaches 9.80 (seed 0, as the two below), against xrda's 10.34 at 2× " \
         "and dense AdamW's 7.20." in flat
  assert "It lies nearer xrda than AdamW" in flat  # 9.80 - 7.20 > 10.34 - 9.80
  short = _in_short(archive)
  assert "reaches 9.80 there (seed 0; dense AdamW 7.20, xrda at 2× 10.34): most of xrda's " \
         "distance from dense AdamW is an SGD-type update's rather than" in short.replace("\n", " ")
  for sgd, word, in_short in (
      (10.5, "goes no further than xrda",
       "all of xrda's distance from dense AdamW is an SGD-type update's, not the sparsity's"),
      (8.0, "It lies nearer AdamW than xrda", None),
      (7.0, "An SGD-type update reaches AdamW here", None)):
    archive["lm_shakespeare_equal"]["methods"]["sgd"]["front"][0]["test_perplexity"] = sgd
    assert word in _transformers(archive).split("A ViT")[0].replace("\n", " ")
    flat = _in_short(archive).split("On a ViT")[0].replace("\n", " ")  # the LM's
    assert (in_short in flat) if in_short else "SGD-type" not in flat, (sgd, flat)
  # AdamW behind xrda: no sentence on where the distance comes from.
  archive["lm_shakespeare_equal"]["methods"]["adamw"]["front"][0]["test_perplexity"] = 12.0
  flat = _transformers(archive).split("A ViT")[0].replace("\n", " ")  # the LM's
  assert "dense AdamW's 12.00." in flat and "distance" not in flat and "It lies" not in flat
  assert "SGD-type" not in _in_short(archive).split("On a ViT")[0]
  archive["lm_shakespeare_equal"]["methods"]["adamw"]["front"][0]["test_perplexity"] = 7.2
  archive["lm_shakespeare_equal"]["methods"]["sgd"]["front"][0]["test_perplexity"] = 9.8
  assert "3 of 16 heads and\n900 of 2048 neurons whole" in section
  assert "what separates the two is how far each optimizer gets" in section.replace("\n", " ")
  assert "under way" not in section
  assert "is the largest that trains: 2.0 diverged" in section  # the step above it diverged
  above = archive["lm_shakespeare_equal"]["methods"]["xrda_target"]["tune"][-1]
  del above["diverged"]  # trained, and worse: the choice is inside what was tried
  assert "largest that trains" not in _transformers(archive)
  assert "xrda trails (5.00 points, spread 1.00)" in section  # the ViT, on test error
  assert "At 2:4 (seed 0): xrda 38.00% against gradual pruning's 36.00%." in section
  short = _in_short(archive)
  assert "xrda trails at 2×, 5.03×, 10× and 20.1× on test perplexity" in short
  assert "xrda trails against ERK\ngradual pruning with AdamW (40.00 ± 0.50% against" in short
  # The ViT's dense lines, on test error: SGD 39 lies nearer xrda's 40 than AdamW's 30.
  flat = section.replace("\n", " ")
  assert "Dense, seed 0: AdamW at pruning's rate reaches 30.00%, and SGD with momentum, its rate " \
         "tuned alike (it chose 0.1), 39.00%, against xrda's 40.00% at 10×. It lies nearer xrda" in flat
  assert "reaches 39.00% there (seed 0; dense AdamW 30.00%, xrda at 10× 40.00%): most of xrda's" \
         in short.replace("\n", " ")
  vit = archive["vit_cifar10_equal"]["methods"]
  vit["sgd"]["front"][0]["test_error"] = 31.0
  assert "It lies nearer AdamW than xrda" in _transformers(archive).split("A ViT")[1]
  assert "39.00%" not in _in_short(archive) and "31.00%" not in _in_short(archive)
  vit["sgd"]["front"][0]["test_error"] = 39.0

  # Pruning's own perplexity climbing with sparsity past the gap: no claim that only the
  # optimizer separates them.
  lm = archive["lm_shakespeare_equal"]["methods"]
  lm["gmp_erk"]["front"][-1]["test_perplexity"] = lm["xrda_target"]["front"][-1][
      "test_perplexity"] + 0.5
  section = _transformers(archive)
  assert "how far each optimizer gets" not in section.replace("\n", " ")
  assert "xrda's perplexity minus pruning's is -0.50" in section


def test_the_transformers_reading_renders_while_their_sweeps_are_under_way():
  archive = _archive()
  _finished_transformers(archive)
  lm = archive["lm_shakespeare_equal"]
  lm["methods"]["gmp_erk"]["front"] = [r for r in lm["methods"]["gmp_erk"]["front"]
                                       if r["knob_value"] == 0.9]
  del lm["methods"]["gmp_erk"]["points"], lm["methods"]["adamw"]["front"]
  lm["methods"]["sgd"] = {"tune": [], "front": []}
  lm["methods"]["xrda_groups"]["front"] = []
  lm["missing"] = ["gmp_erk/pruning_sparsity=0.5_learning_rate=0.0005_seed=0"]
  archive["vit_cifar10_equal"]["methods"] = {
      k: {"tune": []} for k in ("xrda_target", "gmp_erk", "xrda_2of4", "gmp_2of4")}
  section = _transformers(archive)
  assert "(the sweep is under way: gradual pruning still training)" in section
  assert "| 10× | 10.92 | 7.70 |" in section and "| 2× | 10.34 | – |" in section
  assert "dense (AdamW)" not in section and "heads and\n" not in section
  assert "SGD" not in section
  assert "xrda trails" not in section and "At 2:4" not in section
  del lm["methods"]["xrda_target"]["front"]  # its tuning reopened (a further edge trial)
  lm["missing"].append("xrda_target/l1_sparsity=0.9_learning_rate=2.0_seed=0")
  section = _transformers(archive)
  assert "| 10× | – | 7.70 |" in section and "moves by" not in section
  assert "xrda and gradual pruning still training" in section


def test_lenet5_at_equal_sparsity_reads_the_seeds_against_pruning_and_the_published_points():
  # LeNet-5's seeds land over several sessions: once both have them, its paragraph gives the
  # verdicts and each published point met at its own compression on weights.
  archive = _archive()
  methods = archive["lenet5_mnist"]["methods"]
  for key in ("xrda_target", "gmp_erk"):  # as before its seeds (the archive may hold them)
    methods[key]["points"] = [p for p in methods[key].get("points", []) if not p.get("seeds")]
  assert "under way" in reading.render(archive=archive).split("On LeNet-5 (")[1][:400]

  def point(value, compression, mean, std):
    return dict(knob_value=value, seeds=[1, 2, 3], test_error_mean=mean, test_error_std=std,
                compression_weights_mean=compression)

  targets = ((0.9, 10.0), (0.99099, 111.0), (0.99565, 230.0), (0.99643, 280.0))
  methods["xrda_target"]["points"] = [point(v, c, 0.8 + i / 10, 0.05)
                                      for i, (v, c) in enumerate(targets)]
  methods["gmp_erk"]["points"] = [point(v, c, 0.9, 0.05) for v, c in targets]
  text = reading.render(archive=archive)
  paragraph = text.split("On LeNet-5 (")[1].split("## Transformers")[0]
  assert "under way" not in paragraph
  assert "- 10× on weights: 0.80 ± 0.05% against\n  0.90 ± 0.05%, xrda within the spread" \
         in paragraph
  assert "- 111×, DNS's 0.91%, Fedorov & Rao (2018), table 1 (Guo et al. (2016) report " \
         "108×): xrda\n  0.90 ± 0.05%, level " \
         "with it (-0.01); ERK gradual pruning\n  0.90 ± 0.05%, level with it (-0.01)." in paragraph
  assert "- 280×, Sparse VD's 0.75%" in paragraph and "1.10 ± 0.05%, above it (+0.35)" in paragraph
  assert "78.1×" not in paragraph  # re-weighted l1's point is no target
  short = text.split("## In short")[1].split("## At equal")[0].replace("\n", " ")
  assert "xrda, against ERK gradual pruning, is within the spread at 10×, 111× and 230×; trails " \
         "at 280×. Its mean is level with DNS's 0.91% at 111×, above LOBSTER's 0.79% " \
         "at 230×, above Sparse VD's 0.75% at 280× (the published points its targets meet" in short
  assert "over seeds 1-3" in short
