"""Running suites with Great Expectations and keeping what they found.

For a local lake, Great Expectations' file context lives in
``{LAKE_ROOT}/_quality/gx``: suites, checkpoints, every validation result,
and the Data Docs HTML (``_quality/gx/uncommitted/data_docs/local_site/
index.html``). Besides, each gate run writes a one-file summary to
``{LAKE_ROOT}/_quality/results/{layer}/{key}/{time}.json``, which is also
how results are kept for an ``s3://`` or ``gs://`` lake (where Great
Expectations runs in memory and no Data Docs are built).

Gates of several jobs may run at once: on a local lake they take turns on a
file lock, since Great Expectations rewrites its JSON configuration files.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
from contextlib import contextmanager
from dataclasses import asdict
from typing import Optional

import pyarrow as pa

from lake_core.storage import filesystem, fs_path, is_local
from lake_schemas import LakePaths
from lake_schemas.rules import DERIVED_COLUMNS
from quality.results import Batch, GateResult, RuleResult
from quality.suites import build_suite, gx, rules_of

# Great Expectations fingerprints every dataframe under 1 GB it validates (an MD5 over pandas'
# hash of every cell, kept only as a "batch marker" in the result): measured, a third of the
# Silver gate's validation time at 1M rows, and linear in them. A gate's results are named by
# their layer and hour or day (``_write_summary``), so the fingerprint is switched off.
gx.execution_engine.pandas_execution_engine.HASH_THRESHOLD = 0

__all__ = ["RuleResult", "GateResult", "Batch", "run_suites", "docs_index", "build_pending_docs"]

_DATASOURCE = "lake"


def docs_index(lake_root: str) -> Optional[str]:
    """The Data Docs page of a local lake (None for remote lakes)."""
    if not is_local(lake_root):
        return None
    return os.path.join(_quality_dir(lake_root), "gx", "uncommitted", "data_docs", "local_site", "index.html")


def remote_docs_index(lake_root: str) -> str:
    """Where a remote lake's Data Docs are: ``{LAKE_ROOT}/_quality/data_docs/index.html``."""
    return f"{_quality_dir(lake_root)}/data_docs/index.html"


def _publish_remote_docs(context, lake_root: str, validated: list) -> str:
    """Build this gate's Data Docs pages locally, then copy them next to the lake (s3://, gs://).

    Great Expectations can write sites to S3 or GCS itself, but only through
    boto3 or google-cloud-storage; the lake's own pyarrow filesystem reaches
    both. The ephemeral context keeps no history, so the index lists this
    gate's validations; the pages of earlier gates stay beside it.
    """
    import tempfile

    fs, _ = filesystem(lake_root)
    target = fs_path(lake_root, f"{_quality_dir(lake_root)}/data_docs")
    with tempfile.TemporaryDirectory(prefix="lake-data-docs-") as site:
        if "lake_remote" not in (context.get_config().data_docs_sites or {}):
            context.add_data_docs_site(
                "lake_remote",
                {
                    "class_name": "SiteBuilder",
                    "show_how_to_buttons": False,
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": site},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        context.build_data_docs(site_names=["lake_remote"], resource_identifiers=validated)
        for directory, _, names in os.walk(site):
            for name in names:
                relative = os.path.relpath(os.path.join(directory, name), site)
                destination = f"{target}/{relative}"
                fs.create_dir(destination.rsplit("/", 1)[0], recursive=True)
                with open(os.path.join(directory, name), "rb") as source, fs.open_output_stream(destination) as out:
                    out.write(source.read())
    return remote_docs_index(lake_root)


def _quality_dir(lake_root: str) -> str:
    return LakePaths(lake_root).quality


@contextmanager
def _context(lake_root: str):
    """A Great Expectations context for ``lake_root``, holding the quality lock on local lakes."""
    from great_expectations.data_context.types.base import ProgressBarsConfig

    if not is_local(lake_root):
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        yield context
        return
    directory = _quality_dir(lake_root)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            context = gx.get_context(mode="file", project_root_dir=directory)
            # The lake keeps no secrets in config_variables.yml (they come from the environment), and
            # Great Expectations re-reads that YAML on every configuration lookup: half a gate's time.
            context.config.config_variables_file_path = None
            context.variables.progress_bars = ProgressBarsConfig(globally=False)
            yield context
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _checkpoint(context, name: str, suite):
    source = context.data_sources.add_or_update_pandas(_DATASOURCE)
    asset = next((a for a in source.assets if a.name == name), None) or source.add_dataframe_asset(name)
    batch = asset.batch_definitions[0] if asset.batch_definitions else asset.add_batch_definition_whole_dataframe(name)
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=batch, suite=suite)
    )
    # No UpdateDataDocsAction: the docs are built once per gate, after all its suites ran.
    return context.checkpoints.add_or_update(
        gx.Checkpoint(
            name=name,
            validation_definitions=[definition],
            actions=[],
            result_format={"result_format": "BASIC", "partial_unexpected_count": 5},
        )
    )


def _detail(result: dict) -> str:
    if "unexpected_count" in result and result.get("element_count") is not None:
        share = result.get("unexpected_percent")
        text = f"{result['unexpected_count']:,} of {result['element_count']:,} rows"
        text += f" ({share:.1f}%)" if share is not None and result["unexpected_count"] else ""
        examples = result.get("partial_unexpected_list") or []
        if examples and result["unexpected_count"]:
            text += f", e.g. {', '.join(repr(e) for e in examples[:3])}"
        return text
    if "observed_value" in result:
        observed = result["observed_value"]
        return f"observed {observed if not isinstance(observed, list) else ', '.join(map(str, observed[:8]))}"
    return "no detail"


def _outcomes(checkpoint_result) -> list:
    """Each expectation's outcome: (its configuration, success, GX's result dict, why it could not be evaluated)."""
    out = []
    for validation in checkpoint_result.run_results.values():
        for r in validation.results:
            error = None
            if r.exception_info and r.exception_info.get("raised_exception"):
                error = str(r.exception_info.get("exception_message"))
            out.append((r.expectation_config, bool(r.success), dict(r.result or {}), error))
    return out


def _rule_results(outcomes: list) -> list:
    out = []
    for config, success, result, error in outcomes:
        meta = config.meta or {}
        detail = f"could not be evaluated: {error}" if error else _detail(result)
        out.append(
            RuleResult(
                meta.get("rule", config.type),
                meta.get("action", "fail"),
                success,
                config.type,
                config.kwargs.get("column"),
                detail,
            )
        )
    return out


def _counted(result: dict) -> bool:
    return "unexpected_count" in result and result.get("element_count") is not None


def _combined(per_chunk: list) -> list:
    """One outcome per expectation from its outcomes on every chunk: counts summed, failed anywhere is failed.

    Exact for the rules a chunked batch may have (``Batch``): every row meets them or not, by itself
    or with the rows of its own key, which share its chunk.
    """
    by_expectation: dict = {}
    for outcomes in per_chunk:
        for config, success, result, error in outcomes:
            mostly = config.kwargs.get("mostly")
            if mostly not in (None, 1, 1.0):
                raise ValueError(f"{config.type} with mostly={mostly} cannot be checked chunk by chunk")
            key = (config.type, repr(sorted(config.kwargs.items())))
            by_expectation.setdefault(key, []).append((config, success, result, error))
    combined = []
    for same in by_expectation.values():
        config = same[0][0]
        success = all(o[1] for o in same)
        error = next((o[3] for o in same if o[3]), None)
        results = [o[2] for o in same]
        if all(_counted(r) for r in results):
            total = sum(int(r["element_count"]) for r in results)
            missing = sum(int(r.get("missing_count") or 0) for r in results)
            unexpected = sum(int(r["unexpected_count"]) for r in results)
            examples = [e for r in results for e in (r.get("partial_unexpected_list") or [])][:5]
            result = {
                "element_count": total,
                "missing_count": missing,
                "unexpected_count": unexpected,
                "unexpected_percent": 100.0 * unexpected / (total - missing) if total > missing else 0.0,
                "partial_unexpected_list": examples,
            }
        else:  # a table-level observation: the first chunk that failed says what it saw
            result = next((o[2] for o in same if not o[1]), results[0])
        combined.append((config, success, result, error))
    return combined


def _write_summary(lake_root: str, result: GateResult) -> str:
    fs, _ = filesystem(lake_root)
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
    directory = f"{fs_path(lake_root, _quality_dir(lake_root))}/results/{result.layer}/{result.key}"
    fs.create_dir(directory, recursive=True)
    path = f"{directory}/{now}.json"
    body = {
        "layer": result.layer,
        "key": result.key,
        "success": result.success,
        "validated_at": now,
        "failed": [r.rule for r in result.failed],
        "warnings": [r.rule for r in result.warnings],
        "rules": [asdict(r) for r in result.rules],
        "data_docs": result.docs,
    }
    with fs.open_output_stream(path) as out:
        out.write(json.dumps(body, indent=1, default=str).encode())
    return path


def _frame(batch: Batch, rules: list, schema_only: bool):
    """What Great Expectations gets: no rows for schema rules, else only the columns the rules read.

    (Great Expectations filters the whole dataframe for each expectation and
    fingerprints it by pickling when a column is a list: both cost seconds
    per million rows for columns no rule reads.)
    """
    if schema_only:
        schema = batch.full_schema
        stored = [c for c in schema.names if c not in DERIVED_COLUMNS]
        return pa.schema([schema.field(c) for c in stored]).empty_table().to_pandas()
    used = {c for r in rules for c in r.columns}
    return batch.data.select([c for c in batch.data.column_names if c in used]).to_pandas()


def _validate(checkpoint, frame, parameters: Optional[dict], run_name: str):
    from great_expectations.core.run_identifier import RunIdentifier

    return checkpoint.run(
        batch_parameters={"dataframe": frame},
        expectation_parameters=parameters or {},
        run_id=RunIdentifier(run_name=run_name),  # Data Docs list validations by it
    )


#: Per local lake, the validations whose Data Docs pages a gate left for ``build_pending_docs``.
_UNBUILT: dict[str, list] = {}


def build_pending_docs(lake_root: str) -> None:
    """Build the Data Docs pages the gates run with ``defer_docs`` left (a no-op when none). Tried once:
    pages that fail to build are not tried again by the next gate."""
    validated = _UNBUILT.pop(lake_root, [])
    if validated:
        with _context(lake_root) as context:
            context.build_data_docs(resource_identifiers=validated)


def run_suites(
    lake_root: str,
    layer: str,
    key: str,
    batches: list,
    parameters: Optional[dict] = None,
    overrides: Optional[dict] = None,
    defer_docs: bool = False,
) -> GateResult:
    """Validate each ``Batch`` against its rules; keep the results; return what was found.

    Each validation is named ``key`` in Data Docs. A batch in ``parts`` is validated chunk by chunk
    (each a validation of its own, named ``{key} part i of n``) and its rules' results summed over the
    chunks.

    ``defer_docs``: on a local lake, return once the results are stored and leave the Data Docs pages
    (half a second for Gold's six small validations) to ``build_pending_docs``, which the gate process
    runs while the job commits (``quality.worker``). A remote lake's results live only in this call's
    context: its pages are always built here.
    """
    local = is_local(lake_root)
    result = GateResult(layer, key)
    validated = []
    with _context(lake_root) as context:
        for batch in batches:
            name = f"{batch.table}_{batch.scope}" if batch.scope != "rows" else batch.table
            for schema_rules in (True, False):
                rules = rules_of(batch.table, batch.scope, schema_rules)
                if not rules:
                    continue
                suite_name = f"{name}_schema" if schema_rules else name
                checkpoint = _checkpoint(context, suite_name, build_suite(suite_name, rules, overrides))
                if schema_rules or batch.data is not None:
                    outcome = _validate(checkpoint, _frame(batch, rules, schema_rules), parameters, key)
                    result.rules.extend(_rule_results(_outcomes(outcome)))
                    validated.extend(outcome.run_results)
                    continue
                per_chunk = []
                for i, chunk in enumerate(batch.chunks(lake_root)):
                    run_name = f"{key} part {i + 1} of {len(batch.parts)}" if len(batch.parts) > 1 else key
                    frame = _frame(Batch(batch.table, batch.scope, chunk), rules, False)
                    del chunk  # one chunk's rows at a time: the frame holds them now
                    outcome = _validate(checkpoint, frame, parameters, run_name)
                    del frame
                    per_chunk.append(_outcomes(outcome))
                    validated.extend(outcome.run_results)
                result.rules.extend(_rule_results(_combined(per_chunk)))
        if local and defer_docs:
            _UNBUILT.setdefault(lake_root, []).extend(validated)
            result.docs = docs_index(lake_root)
        elif local:  # only this gate's pages, and the index
            context.build_data_docs(resource_identifiers=validated)
            result.docs = docs_index(lake_root)
        else:
            result.docs = _publish_remote_docs(context, lake_root, validated)
    result.summary_path = _write_summary(lake_root, result)
    return result
