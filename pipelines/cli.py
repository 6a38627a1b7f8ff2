"""Entry point of the `mangacolor` command: the library's commands plus `demo` and `ui`, which need Dagster."""

from __future__ import annotations

import argparse
import os
import sys

from mangacolor.cli import build_parser


def _cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo(select=args.select, preset=args.preset, seed=args.seed)


def _cmd_ui(args: argparse.Namespace) -> int:
    from pipelines.demo import prepare_dagster_home

    home = prepare_dagster_home()
    os.environ["DAGSTER_HOME"] = str(home)
    # From a checkout its workspace.yaml; an installed wheel has none in the current directory: the module.
    where = ["-w", "workspace.yaml"] if os.path.exists("workspace.yaml") else ["-m", "pipelines.definitions"]
    cmd = ["dagster", "dev", *where, "-p", str(args.port)]
    print(f"DAGSTER_HOME={home}\n$ {' '.join(cmd)}", flush=True)
    os.execvp(cmd[0], cmd)


def _cmd_pools(args: argparse.Namespace) -> int:
    import dagster as dg

    from pipelines.deploy import apply_pool_limits, pool_limits

    limits = pool_limits(args.file)
    apply_pool_limits(dg.DagsterInstance.get(), limits)
    print(" ".join(f"{pool}={slots}" for pool, slots in limits.items()))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.add_parser("demo", help="run the whole asset graph in-process on the generated demo corpus")
    p.add_argument("--select", default=None, help="a Dagster asset selection, e.g. 'page_pairs+' or 'key:color_pages'")
    p.add_argument("--preset", default="demo")
    p.add_argument("--seed", type=int, default=0, help="demo corpus seed")
    p.set_defaults(func=_cmd_demo)
    p = sub.add_parser("ui", help="open the Dagster UI on the project's instance (DAGSTER_HOME=.dagster_home)")
    p.add_argument("--port", type=int, default=3000)
    p.set_defaults(func=_cmd_ui)
    p = sub.add_parser("pools", help="set the instance's per-pool slot limits (DAGSTER_HOME) from a pools file, e.g. deploy/pools.yaml")
    p.add_argument("file", nargs="?", default="deploy/pools.yaml")
    p.set_defaults(func=_cmd_pools)
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
