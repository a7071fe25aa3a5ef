"""The TensorBoard side of the metric writers: the run's config as text, logged once per run."""

import glob
import json
import struct

from tensorboardX.proto import event_pb2

from experiments.loop.metric_writers import MetricWriter


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
