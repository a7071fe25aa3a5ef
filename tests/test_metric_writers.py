"""The metric writers: the run's config as TensorBoard text, logged once per run; a damaged metrics.jsonl on resume
and in a finished run."""

import glob
import json
import logging
import pathlib
import struct

from tensorboardX.proto import event_pb2

from experiments.loop.metric_writers import MetricWriter, check_finished_log


def _events(workdir) -> list:
  events = []
  for path in sorted(glob.glob(str(workdir / 'events.out.tfevents.*'))):
    with open(path, 'rb') as f:
      data = f.read()
    i = 0
    while i < len(data):  # TFRecord: uint64 length, uint32 crc, payload, uint32 crc.
      (length,) = struct.unpack('<Q', data[i : i + 8])
      events.append(event_pb2.Event.FromString(data[i + 12 : i + 12 + length]))
      i += 12 + length + 4
  return events


def _texts(workdir) -> list[str]:
  return [
    v.tensor.string_val[0].decode()
    for e in _events(workdir)
    for v in e.summary.value
    if v.tag.startswith('config') and v.tensor.string_val
  ]


def test_new_run_logs_its_config_as_text_once(tmp_path):
  (tmp_path / 'config.json').write_text(json.dumps({'batch_size': 4, 'model': {'norm': 'ln'}}, indent=2) + '\n')
  writer = MetricWriter(str(tmp_path), 0)
  writer.write(1, {'train/loss': 1.0})
  writer.close()
  texts = _texts(tmp_path)
  assert len(texts) == 1
  assert '    "batch_size": 4,' in texts[0] and '"norm": "ln"' in texts[0]  # A Markdown code block of the JSON.


def test_resumed_run_does_not_log_its_config_again(tmp_path):
  (tmp_path / 'config.json').write_text('{"batch_size": 4}\n')
  (tmp_path / 'metrics.jsonl').write_text('{"step": 1, "train/loss": 1.0}\n')  # An earlier process logged step 1.
  MetricWriter(str(tmp_path), 1).close()
  assert _events(tmp_path) and not _texts(tmp_path)


# ---------------------------------------------------------------------------------------------------------------------
# A damaged metrics.jsonl is said, kept beside the file, and what can be logged again is.


def _write_log(workdir, lines: list[str]) -> None:
  (workdir / 'metrics.jsonl').write_text(''.join(line + '\n' for line in lines))


def _rows(workdir) -> list[dict]:
  return [json.loads(line) for line in (workdir / 'metrics.jsonl').read_text().splitlines()]


def test_a_resume_keeps_a_corrupt_log_beside_it_and_names_the_lost_rows(tmp_path, caplog):
  lines = [json.dumps({'step': s, 'train/loss': 1.0 / s}) for s in (10, 20, 30, 40)]
  damaged = [lines[0], '{"step": 20, "train/lo', *lines[2:], '{"step": 50, "tr']
  _write_log(tmp_path, damaged)
  original = (tmp_path / 'metrics.jsonl').read_bytes()
  with caplog.at_level(logging.WARNING):
    writer = MetricWriter(str(tmp_path), 30)
  writer.write(40, {'train/loss': 0.25})
  writer.close()
  assert [r['step'] for r in _rows(tmp_path)] == [10, 30, 40]  # Rows after the checkpoint (30) logged again.
  (kept,) = glob.glob(str(tmp_path / 'metrics.jsonl.corrupt-*'))
  assert pathlib.Path(kept).read_bytes() == original
  message = caplog.text
  assert 'lines 2, 5 are not a complete JSON row' in message and 'after step 10 and before step 30' in message
  assert kept in message and 'The steps after 30 are logged again' in message


def test_a_clean_log_is_resumed_without_a_copy_or_a_warning(tmp_path, caplog):
  _write_log(tmp_path, [json.dumps({'step': s}) for s in (10, 20)])
  with caplog.at_level(logging.WARNING):
    MetricWriter(str(tmp_path), 10).close()
  assert _rows(tmp_path) == [{'step': 10}] and not glob.glob(str(tmp_path / '*.corrupt-*')) and not caplog.text


def test_a_finished_run_with_a_truncated_log_gets_its_final_row_back_and_says_so(tmp_path, caplog):
  full = [json.dumps({'step': s, 'train/loss': 1.0 / s}) for s in (10, 20)]
  _write_log(tmp_path, [full[0], full[1][:12]])  # Cut in the middle of the final row.
  status = {'status': 'done', 'step': 20, 'metrics': {'train/loss': 0.05, 'eval/test/error': 0.1}}
  with caplog.at_level(logging.WARNING):
    check_finished_log(str(tmp_path), status)
  assert _rows(tmp_path) == [json.loads(full[0]), {'step': 20, 'train/loss': 0.05, 'eval/test/error': 0.1}]
  assert len(glob.glob(str(tmp_path / 'metrics.jsonl.corrupt-*'))) == 1
  assert 'is done, but its metrics.jsonl was damaged: line 2 is not a complete JSON row' in caplog.text
  assert 'it ends at step 10 although the run finished at step 20' in caplog.text
  caplog.clear()
  with caplog.at_level(logging.WARNING):
    check_finished_log(str(tmp_path), status)  # Repaired: nothing more to say or keep.
  assert not caplog.text and len(glob.glob(str(tmp_path / 'metrics.jsonl.corrupt-*'))) == 1
