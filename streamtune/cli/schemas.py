"""``streamtune schemas export DIR``: the JSON Schema of every message, for other languages."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def cmd_schemas(args: argparse.Namespace) -> int:
    from schemas.export import export_json_schemas

    paths = export_json_schemas(Path(args.directory))
    print(f"wrote {len(paths)} files to {args.directory}")
    return 0


def register(sub: Any) -> None:
    schemas = sub.add_parser("schemas", help="export JSON Schema of every message")
    schemas.add_argument("action", choices=["export"])
    schemas.add_argument("directory")
    schemas.set_defaults(func=cmd_schemas)
