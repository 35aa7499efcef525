"""The teacher cache: every expert's logits and the confidence p_i, written once.

LFME distils several experts into one student (docs/METHOD.md section 4). The
experts are frozen, so their signal on the un-augmented image never changes:
it is computed once by the cache stage and stored here, and the student's
distillation reads it instead of running the teachers live.

One row per sample (but see `cache.allot` below), one table per part ("train", "val", ...):

    sample_id   int64
    label       int64
    subset      int32                      index of the subset holding `label`
    logits      fixed_size_list<float16>[C] global class order; expert l fills
                                           the columns of its subset's classes
    confidence  float32                    p_i: softmax prob of y_i from the
                                           expert of y_i's subset

With `cache.top_k = k` (`TopK`: each expert keeps its k largest logits and one
rest logit for the mass of its other classes), `logits` gives way to

    topk_logits   fixed_size_list<float16>[K]  K = sum over experts of min(k, |S_l|),
                                               expert by expert, each its largest first
    topk_classes  fixed_size_list<int32>[K]    the global class of each kept logit
    rest_logits   fixed_size_list<float16>[L]  one per expert (L experts)

and the manifest records `"top_k": k`.

With `cache.views = K > 1` (FKD-style views, `lfme.data.views`) the training
part stores, per sample, the experts' signal on K augmented views of the
image, view by view in one row: `logits` is K x C wide (view 0's C logits,
then view 1's, ...), a top-k cache's three arrays are K times as wide, and

    view_params   fixed_size_list<float32>[K x 9]  each view's crop box, flip and
                                                   colour jitter (`VIEW_FIELDS`)

is added; `confidence` stays one p_i per sample, from the un-augmented view.
The manifest's part entry records `"views": K`. The validation part keeps
one un-augmented row per sample.

With `cache.allot = draws` (views shared by the student's draws,
`lfme.data.views.allot_views`) image i has V_i views, one per row: the
same columns as K = 1 plus `view_params` (9 wide), an image's rows
consecutive and in view order, so sample ids repeat (still sorted; an
image's rows may continue into the next shard). The manifest's part entry
records `"allot": "draws"`. A fixed-width row of K views cannot carry this:
with a block of K views the least an image could own, the head's images
alone would take the K x N budget. `TeacherRows` reads view v of a sample
from its first row r as row r + v div W, slot v mod W (W views a row), so
both layouts are one lookup.

Layout of a cache directory ``D``::

    D/manifest.json                 the only entry point for readers
    D/<data_dir>/<part>-NNNNN.parquet   shards of <= shard_rows rows, sorted by sample_id

A write never touches the files the current manifest points to: shards go
into a new, uniquely named data directory (``new_data_dir``; ``write_shard``
from any process, so the cache stage writes them where the logits are
computed), then ``commit_cache`` checks the writers' records of them (each
part's shard indices complete, sample ids increasing across shards) and
replaces ``manifest.json`` atomically, then deletes the data directories no
manifest references. A reader therefore sees either the old complete cache or
the new complete one; a write that fails after its manifest is in place
keeps its data (``discard_data_dir``).
One writer at a time per directory is assumed (the pipeline's cache stage).

Two readers: ``read_cache`` loads a part into the caller's memory;
``map_cache`` copies it once per node into uncompressed ``.npy`` files that
every reader on the node memory-maps, so N workers hold the logits once.

Framework-free on purpose (numpy + pyarrow + json): no Ray, no torch.

The package, a module per job: `schema` (the columns and the rows in
memory), `manifest` (the entry point, checked), `write` (validate, shard,
commit), `read` (a part into memory) and `local` (the node-local mapped
copy). Everything a caller needs is imported here.
"""

from lfme.teacher_cache.local import LOCAL_SOURCE, default_local_dir, map_cache
from lfme.teacher_cache.manifest import read_manifest, verify_cache
from lfme.teacher_cache.read import read_cache, signal_bytes_per_row
from lfme.teacher_cache.schema import (
    DATA_DIR_PREFIX,
    FORMAT,
    MANIFEST_NAME,
    VIEW_WIDTH,
    CacheDamagedError,
    CacheMismatchError,
    TeacherRows,
    TopK,
    arrow_schema,
    top_k_shape,
)
from lfme.teacher_cache.write import commit_cache, discard_data_dir, new_data_dir, write_cache, write_shard

__all__ = [
    "DATA_DIR_PREFIX",
    "FORMAT",
    "LOCAL_SOURCE",
    "MANIFEST_NAME",
    "VIEW_WIDTH",
    "CacheDamagedError",
    "CacheMismatchError",
    "TeacherRows",
    "TopK",
    "arrow_schema",
    "commit_cache",
    "default_local_dir",
    "discard_data_dir",
    "map_cache",
    "new_data_dir",
    "read_cache",
    "read_manifest",
    "signal_bytes_per_row",
    "top_k_shape",
    "verify_cache",
    "write_cache",
    "write_shard",
]
