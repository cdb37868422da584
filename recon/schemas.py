"""JSON files recon reads as configuration (training configuration, model cards) are data: each is checked
against its JSON Schema in ``recon/data`` before use, and nothing in them is ever evaluated."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import jsonschema
from referencing import Registry, Resource

from recon.errors import InputError

SCHEMAS = {"training configuration": "training_config.schema.json", "model card": "model_card.schema.json"}


def read_json(path: Path, kind: str) -> dict:
    """``path`` parsed as JSON and validated as a ``kind`` (a key of ``SCHEMAS``)."""
    try:
        document = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(f"{path}: not a readable JSON {kind} ({type(err).__name__}); fix or replace the file") \
            from err
    return validated(document, kind, str(path))


def validated(document, kind: str, source: str) -> dict:
    errors = sorted(_validator(kind).iter_errors(document), key=lambda error: list(error.path))
    if errors:
        where = "/".join(map(str, errors[0].path)) or "(top level)"
        raise InputError(f"{source}: not a valid {kind}: at {where}: {errors[0].message[:200]} "
                         f"({len(errors)} problem(s); the schema is recon/data/{SCHEMAS[kind]})")
    return document


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    files = resources.files("recon.data")
    loaded = {name: json.loads(files.joinpath(name).read_text()) for name in SCHEMAS.values()}
    registry = Registry().with_resources((name, Resource.from_contents(schema)) for name, schema in loaded.items())
    schema = loaded[SCHEMAS[kind]]
    return jsonschema.Draft202012Validator(schema, registry=registry)
