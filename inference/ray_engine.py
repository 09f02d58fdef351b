"""python -m inference SOURCE... --engine ray: the batch job as a Ray Data pipeline, for archives of
10^5-10^6 scans on a cluster (or on this machine's cores).

    read files (ray.data.read_binary_files: local folders, shared storage, s3://, gs://, ...)
      -> decode (stateless tasks; ground-truth masks dropped)
      -> analyse (an autoscaling pool of actors, each loading both models once, a batch per forward pass)
      -> rows streamed back to this process and written as CSV or Parquet; masks/maps written by the actors

Each stage calls the functions the local engine calls (`decode_or_error`, `Analyzer.analyze_decoded`,
`inference.batch.record_scan`), so both engines give the same rows. A file that fails becomes a row
with its error; the job goes on. Ray is an optional extra (requirements-ray.txt): only
`python -m inference --engine ray` imports this module.
"""

from __future__ import annotations

import pickle
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.fs as pafs
import ray

from inference.batch import Tally, arrow_schema, open_results, output_stems, record_scan
from inference.files import is_hidden_path, is_scan_file
from inference.models import REPO_ROOT, load_configured, source_for
from inference.pipeline import Analyzer, decode_or_error

# Between the decode and analyse stages: decode_or_error's result (the scan's pixels and warnings,
# or its ScanError) pickled as one value, so a failure travels down the pipeline like a scan. Only
# this job's own workers write it.
DECODED_SCHEMA = pa.schema([("file", pa.string()), ("decoded", pa.binary())])
# Our packages travel to every worker (a cluster's nodes need only the requirements installed).
RUNTIME_ENV = {"py_modules": [str(REPO_ROOT / "inference"), str(REPO_ROOT / "explain")],
               "env_vars": {"TF_CPP_MIN_LOG_LEVEL": "2"}}


def connect(address: str | None = None, **local_options) -> None:
    """Join the Ray cluster at `address`, or start a local Ray (`local_options`, e.g. num_cpus, go to
    it) when None; nothing when this process is connected already."""
    if not ray.is_initialized():
        ray.init(address=address, runtime_env=RUNTIME_ENV, **local_options)


def for_workers(path: str | Path | None) -> str | None:
    """A path as every worker can use it: URIs as given, local paths made absolute (workers do not
    share this process's working directory)."""
    if path is None or "://" in str(path):
        return path
    return str(Path(path).resolve())


def as_given(path: str, given: dict[str, str]) -> str:
    """A file as the local engine names it in its row: below the source the user gave (`given`: the source
    as workers use it -> as given), not made absolute for the workers (review: the Ray rows said
    /home/.../scans/a.png where the local rows said scans/a.png)."""
    for resolved, source in given.items():
        if path == resolved or path.startswith(resolved.rstrip("/") + "/"):
            return source + path[len(resolved):]
    return path


def in_hidden_folder(path: str, sources: list[str]) -> bool:
    """Whether `path`, as Ray Data lists it (no URI scheme), is hidden or lies in a hidden folder below
    the source it was found under: the local engine does not look into those (.git, .cache), and Ray
    Data skips hidden entries only at a source's top level."""
    for source in sources:
        root = source.split("://", 1)[-1].rstrip("/")
        if path.startswith(root + "/"):
            return is_hidden_path(PurePosixPath(path[len(root) + 1:]))
    return False


def is_job_scan(path: str, sources: list[str]) -> bool:
    """Whether the job analyses `path` (as Ray Data lists it): a scan file by the batch command's rule
    (`inference.files.is_scan_file`: not a ground-truth mask, not hidden) outside the `sources`' hidden
    folders."""
    return is_scan_file(PurePosixPath(path)) and not in_hidden_folder(path, sources)


def list_scans(sources: list[str]) -> list[str]:
    """Every file the job will analyse, listed as Ray Data lists it (no URI scheme), without reading
    any: local folders, shared storage, s3://, gs://, ... through pyarrow's file systems, as Ray Data
    reads them."""
    files = []
    for source in sources:
        filesystem, root = pafs.FileSystem.from_uri(source)
        info = filesystem.get_file_info(root)
        infos = (filesystem.get_file_info(pafs.FileSelector(root, recursive=True))
                 if info.type == pafs.FileType.Directory else [info])
        files += [entry.path for entry in infos if entry.type == pafs.FileType.File and is_job_scan(entry.path, sources)]
    return files


def renamed_stems(sources: list[str]) -> dict[str, str]:
    """The scans whose images the local engine names by their path, since another scan of the run has
    the same stem (`inference.batch.output_stems`), with those names. Each actor sees only its own
    batches, so the run's whole listing is made first, once, by a task on the cluster (whose nodes
    see the sources, which this process may not); usually it is empty."""
    files = ray.get(ray.remote(list_scans).remote(sources))
    return {file: stem for file, stem in output_stems(files).items() if stem != PurePosixPath(file).stem}


def decode_files(batch: pa.Table, sources: list[str]) -> pa.Table:
    """Files' bytes -> their decoded scans (or errors); what is no scan file by the batch command's
    rule (`inference.files.is_scan_file`: e.g. ground-truth masks, hidden files) or lies in a hidden
    folder of one of the `sources` is dropped."""
    rows = [{"file": path, "decoded": pickle.dumps(decode_or_error(data))}
            for path, data in zip(batch["path"].to_pylist(), batch["bytes"].to_pylist()) if is_job_scan(path, sources)]
    return pa.Table.from_pylist(rows, schema=DECODED_SCHEMA)


class AnalyseScans:
    """The model stage: an actor that loads both models once (bundled folders or pinned hf://
    sources, as resolved on the driver) and turns each batch of decoded scans into result rows,
    writing masks and maps where asked (folders every node can write: shared storage), named as the
    local engine names them (`renamed`: the scans named by their path instead of their stem; `given`:
    each local source as workers use it -> as the user gave it, for the rows' file column)."""

    def __init__(self, classifier_source: str, segmenter_source: str, cpus: float,
                 masks_dir: str | None, explain_dir: str | None, renamed: dict[str, str], given: dict[str, str]):
        import tensorflow as tf

        # TensorFlow would size its thread pools to the whole node; an actor gets `cpus` of it.
        threads = max(1, int(cpus))
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
        self.analyzer = Analyzer(load_configured("classifier", classifier_source),
                                 load_configured("segmenter", segmenter_source))
        self.maps = explain_dir is not None
        self.masks_dir, self.explain_dir = masks_dir and Path(masks_dir), explain_dir and Path(explain_dir)
        self.renamed, self.given = renamed, given
        self.writers = ThreadPoolExecutor(threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        decoded = [pickle.loads(value) for value in batch["decoded"].to_pylist()]
        results = self.analyzer.analyze_decoded(decoded, maps=self.maps)
        rows = list(self.writers.map(self.record, batch["file"].to_pylist(), results))
        return pa.Table.from_pylist(rows, schema=arrow_schema())

    def record(self, file: str, result) -> dict:
        return record_scan(as_given(file, self.given), result, self.masks_dir, self.explain_dir, self.renamed.get(file))


def build_dataset(sources: list[str], masks_dir: Path | None, explain_dir: Path | None, batch_size: int,
                  actor_cpus: float) -> ray.data.Dataset:
    """The pipeline, not yet run."""
    given = {for_workers(source): str(Path(source)) for source in sources if "://" not in source}
    sources = [for_workers(source) for source in sources]
    renamed = renamed_stems(sources) if masks_dir or explain_dir else {}
    return (ray.data.read_binary_files(sources, include_paths=True)
            .map_batches(decode_files, batch_format="pyarrow", fn_kwargs=dict(sources=sources))
            .map_batches(AnalyseScans, batch_size=batch_size, batch_format="pyarrow", num_cpus=actor_cpus,
                         compute=ray.data.ActorPoolStrategy(min_size=1, max_size=None),
                         fn_constructor_kwargs=dict(classifier_source=for_workers(source_for("classifier")),
                                                    segmenter_source=for_workers(source_for("segmenter")), cpus=actor_cpus,
                                                    masks_dir=for_workers(masks_dir), explain_dir=for_workers(explain_dir),
                                                    renamed=renamed, given=given)))


def run(sources: list[str], out: Path, masks_dir: Path | None = None, explain_dir: Path | None = None,
        batch_size: int = 16, address: str | None = None, actor_cpus: float = 1) -> Tally:
    """Run the job and write its rows to `out` (.csv or .parquet) as they arrive, in completion
    order; returns what became of the scans."""
    connect(address)
    cpus = ray.cluster_resources().get("CPU", 0)
    if actor_cpus >= cpus:  # the read tasks would wait forever for a CPU the model actor holds
        raise SystemExit(f"--actor-cpus {actor_cpus:g} leaves none of the cluster's {cpus:g} CPUs for reading files")
    results, tally = open_results(out), Tally()
    try:
        for row in build_dataset(sources, masks_dir, explain_dir, batch_size, actor_cpus).iter_rows():
            results.write(row)
            tally.count(row)
    finally:
        results.close()
    return tally
