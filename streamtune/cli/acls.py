"""``streamtune acls``: print and apply the broker ACLs that the topic access table implies."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from streamtune.cli.options import add_connection_options, settings_from_args


def cmd_acls(args: argparse.Namespace) -> int:
    from streamtune.core.acls import acl_bindings, acl_matrix, apply_acls

    settings = settings_from_args(args)
    bindings = acl_bindings(settings)
    print(acl_matrix(settings))
    print()
    for binding in bindings:
        print(binding.describe())
    if args.action == "show" or args.dry_run:
        print(f"(dry run: {len(bindings)} ACLs not applied)")
        return 0
    count = asyncio.run(apply_acls(settings, bindings))
    print(f"applied {count} ACLs on {settings.bootstrap_servers}")
    return 0


def register(sub: Any) -> None:
    acls = sub.add_parser(
        "acls",
        help="print or apply the ACLs the topic table implies (principals from settings)",
        description=(
            "Each role (producer, worker, serve, trainer, monitor) maps to a principal through "
            "STREAMTUNE_ACL_<ROLE>_PRINCIPAL. `apply` needs a super user's credentials."
        ),
    )
    acls.add_argument("action", choices=["apply", "show"])
    acls.add_argument("--dry-run", action="store_true", help="print the ACLs, apply nothing")
    add_connection_options(acls)
    acls.set_defaults(func=cmd_acls)
