"""The terminal: progress lines when output is not a terminal, config typos, durations."""

import io

from semrec_jax import console, defaults


def test_progress_prints_quarters_with_eta_when_not_a_terminal():
  out = io.StringIO()
  bar = console.Progress("lm all", 100, stream=out)
  for step in range(1, 101):
    bar.update(step, f"loss {1 / step:.3f}")
  lines = out.getvalue().splitlines()
  assert [line.split(",")[0] for line in lines] == [
      "lm all 25/100 (25%)", "lm all 50/100 (50%)", "lm all 75/100 (75%)",
      "lm all 100/100 (100%)"]
  assert lines[0].startswith("lm all 25/100 (25%), loss 0.040, ") and lines[0].endswith(" left")
  resumed = io.StringIO()
  bar = console.Progress("embed", 8, start=6, stream=resumed)
  bar.update(7)
  bar.update(8)
  assert resumed.getvalue().splitlines() == ["embed 8/8 (100%), 0 s left"]


def test_config_typos_name_the_nearest_field_and_help_lists_defaults():
  config = defaults.base_config()
  message = console.flag_error(AttributeError("'stepz'"), ["--config.lm.stage_stepz=3"], config)
  assert message == ("unknown config field --config.lm.stage_stepz; did you mean "
                     "--config.lm.stage_steps?")
  assert "  --config.baselines.max_len=50" in console.config_help(config).splitlines()
  assert [console.duration(s) for s in (4.4, 61, 3725)] == ["4 s", "1 min 01 s", "1 h 02 min"]
